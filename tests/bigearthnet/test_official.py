"""The official lists are shipped recompressed (zstd, not the package's bz2): what they hold must still be
the upstream bytes data/README.md records, list by list."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import zstandard

from simclr_s2.bigearthnet import official

DATA = resources.files("simclr_s2.bigearthnet").joinpath("data")


def _recorded_sums() -> dict[str, str]:
    """data/README.md's sums of the decompressed lists: name.csv -> sha256."""
    sums = re.findall(r"^([0-9a-f]{64})  (\S+\.csv)$", DATA.joinpath("README.md").read_text(), re.MULTILINE)
    return {name: digest for digest, name in sums}


def test_each_shipped_list_decompresses_to_the_upstream_bytes():
    shipped = sorted(f.name for f in DATA.iterdir() if f.name.endswith(".csv.zst"))
    recorded = _recorded_sums()
    assert sorted(f"{name}.zst" for name in recorded) == shipped and len(shipped) == 6
    for name, digest in recorded.items():
        raw = zstandard.ZstdDecompressor().decompress(DATA.joinpath(f"{name}.zst").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == digest, name


def test_the_lists_hold_the_counts_the_readme_states():
    assert len(official.snow_patches()) == 61_707 and len(official.cloud_shadow_patches()) == 9_280
    splits = list(official.official_split().values())
    assert [splits.count(s) for s in official.SPLITS] == [269_695, 123_723, 125_866]
    assert len(official.countries()) == 590_326
