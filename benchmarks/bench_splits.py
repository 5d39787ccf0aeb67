"""Seconds for create_splits and load_split on a synthetic index the size of BigEarthNet-S2 (590,326 rows).

Class and exclusion counts follow STUDY.md (13,589 basic and 36,686 expanded positives, 61,707 snow
and 9,280 cloud/shadow patches). Run: python benchmarks/bench_splits.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simclr_s2.study.splits import create_splits, load_split

N_PATCHES = 590_326


def synthetic_index(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def flags(count: int) -> np.ndarray:
        out = np.zeros(N_PATCHES, dtype=bool)
        out[rng.choice(N_PATCHES, size=count, replace=False)] = True
        return out

    basic = flags(13_589)
    expanded = basic.copy()
    expanded[rng.choice(np.flatnonzero(~basic), size=36_686 - 13_589, replace=False)] = True
    tiles = rng.integers(0, 125, size=N_PATCHES)
    return pd.DataFrame(
        {
            "name": [f"S2A_MSIL2A_20170613T101031_{t}_{i % 1000}_{i}" for i, t in enumerate(tiles)],
            "present_basic": basic,
            "present_expanded": expanded,
            "snow": flags(61_707),
            "cloud_shadow": flags(9_280),
            "official_split": rng.choice(np.array(["train", "validation", "test"], dtype=object), N_PATCHES),
        }
    )


def main() -> None:
    index = synthetic_index()
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in ("basic", "expanded"):
            for exclude in (True, False):
                start = time.perf_counter()
                manifest = create_splits(index, scheme, Path(tmp) / str(exclude), exclude_snow_cloud=exclude)
                created = time.perf_counter() - start
                start = time.perf_counter()
                load_split(Path(tmp) / str(exclude), scheme, 10, "train", index)
                loaded = time.perf_counter() - start
                sizes = "/".join(f"{v:,}" for v in manifest.sizes.values())
                print(
                    f"{scheme:9s} exclude_snow_cloud={exclude!s:5s} train/val/test {sizes:>22s}: "
                    f"create_splits {created:.2f} s, load_split (all checks, with index) {loaded:.2f} s"
                )


if __name__ == "__main__":
    main()
