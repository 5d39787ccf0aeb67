"""simclr_s2.study.footprint: footprints from the index, and `near` against a brute-force count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simclr_s2.errors import UserError
from simclr_s2.study import footprint


def brute_near(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.array([((reference[:, 0] == e) & (abs(reference[:, 1] - x) <= 1200) & (abs(reference[:, 2] - y) <= 1200))
                     .any() for e, x, y in query], dtype=bool)


def random_footprints(rng: np.random.Generator, n: int) -> np.ndarray:
    """Corners on two tile grids 60 m apart in two zones, with some off-grid jitter: twins, neighbours,
    overlaps and near misses (1,201 m) all occur."""
    grid = rng.integers(0, 12, size=(n, 2)) * 1200 + rng.choice([0, 60, 1201, -1], size=(n, 1))
    return np.column_stack([rng.choice([32629, 32630], size=n), 300_000 + grid[:, 0], 4_500_000 + grid[:, 1]])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_query=st.integers(0, 60), n_reference=st.integers(0, 60))
def test_near_is_the_brute_force_answer(seed: int, n_query: int, n_reference: int) -> None:
    rng = np.random.default_rng(seed)
    query, reference = random_footprints(rng, n_query), random_footprints(rng, n_reference)
    assert footprint.near(query, reference).tolist() == brute_near(query, reference).tolist()


def test_near_covers_twins_neighbours_and_overlaps_only_in_one_crs() -> None:
    reference = np.array([[32629, 300_000, 4_500_000]])
    query = np.array([[32629, 300_000, 4_500_000],  # twin: the same footprint on another date
                      [32629, 301_200, 4_498_800],  # diagonal neighbour
                      [32629, 298_860, 4_500_040],  # another tile's patch overlapping a neighbour
                      [32629, 302_400, 4_500_000],  # two footprints away
                      [32630, 300_000, 4_500_000]])  # the same numbers in another UTM zone
    assert footprint.near(query, reference).tolist() == [True, True, True, False, False]


def test_of_reads_the_index_and_refuses_what_has_no_footprint() -> None:
    index = pd.DataFrame({"name": ["a", "b"], "epsg": [32629, 32630], "ulx": [300_000.0, 1.4], "uly": [5.0, 6.6]})
    assert footprint.of(index).tolist() == [[32629, 300_000, 5], [32630, 1, 7]]
    assert footprint.of(index, ["b", "a"]).tolist() == [[32630, 1, 7], [32629, 300_000, 5]]
    with pytest.raises(UserError, match=r"^1 patches have no footprint \(epsg, ulx, uly\) in the index: \['c'\]$"):
        footprint.of(index, ["a", "c"])
    with pytest.raises(UserError, match="1 patches have no footprint"):
        footprint.of(index.assign(epsg=[32629, None]))
    with pytest.raises(UserError, match="index has no column 'uly'"):
        footprint.of(index.drop(columns="uly"))
