"""The natural-prevalence validation sets (splits.py, issue 20.4): per fraction as many patches as the
balanced val, the pool's prevalence in every prefix, nested, on val's ground only (no train, test or
natural-test patch, nor for a spatial split a patch near them), checked when loaded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simclr_s2.errors import UserError
from simclr_s2.study import footprint
from simclr_s2.study.splits import NATURAL, VAL_NATURAL, SplitError, create_splits, file_name, load_sets

N, SIDE = 3000, 60  # patches on a 60 x 50 grid of footprints


def grid_index() -> tuple[pd.DataFrame, pd.Series]:
    """An index of N patches on one UTM grid, 10 % positive, with its labels as a caller's scheme."""
    rng = np.random.default_rng(0)
    at = np.arange(N)
    index = pd.DataFrame({"name": [f"P_{i:05d}" for i in at], "epsg": 32629, "ulx": (at % SIDE) * 1200,
                          "uly": (at // SIDE) * 1200, "tile": "29SNC", "snow": False, "cloud_shadow": False})
    return index, pd.Series(rng.random(N) < 0.1, index=index.index)


@pytest.mark.parametrize("kind", ["random", "spatial", "block-12km"])
def test_natural_validation_respects_the_label_budget_and_the_ground(tmp_path: Path, kind: str) -> None:
    index, positives = grid_index()
    manifest = create_splits(index, "basic", tmp_path, fractions=(1, 10, 100), kind=kind, positives=positives,
                             natural_test=True, natural_share=0.1)
    splits = load_sets(tmp_path, "basic", index, positives)
    assert manifest.natural_validation
    prevalence = manifest.pool["positives"] / manifest.pool["eligible"]
    full = splits.get(100, VAL_NATURAL)
    assert len(full.names) == len(splits.get(100, "val").names)
    assert full.labels.sum() == math.floor(len(full.names) * prevalence + 0.5)
    for fraction in (1, 10):
        part = splits.get(fraction, VAL_NATURAL)
        assert len(part.names) == len(splits.get(fraction, "val").names)  # no more labels than the fraction's val
        assert part.names == full.names[: len(part.names)]  # nested
        assert abs(part.labels.sum() - prevalence * len(part.names)) <= 1
    others = {s: set(splits.get(100, s).names) for s in ("train", "test", NATURAL)}
    assert not set(full.names) & set().union(*others.values())
    if kind == "spatial":
        prints = footprint.of(index, full.names)
        taken = footprint.of(index, sorted(others["train"] | others["test"]))
        assert not footprint.near(prints, taken).any()


def test_tampered_or_absent_natural_validation_is_refused(tmp_path: Path) -> None:
    index, positives = grid_index()
    create_splits(index, "basic", tmp_path / "a", fractions=(10, 100), positives=positives, natural_test=True)
    path = tmp_path / "a" / "basic" / file_name(VAL_NATURAL, 10)
    path.write_text(path.read_text().replace(",0\n", ",1\n", 1))
    with pytest.raises(SplitError, match="sha256"):
        load_sets(tmp_path / "a", "basic")
    create_splits(index, "basic", tmp_path / "b", fractions=(10, 100), positives=positives)
    with pytest.raises(UserError, match="no natural-prevalence validation sets; make them again with natural_test"):
        load_sets(tmp_path / "b", "basic").get(10, VAL_NATURAL)
