"""Where a patch lies on the ground, and which patches are near one another: the unit of leakage.

A patch's footprint is its CRS and upper-left corner in whole metres (index columns `epsg`, `ulx`, `uly`,
recorded by v1 and v2 indexes alike). A Sentinel-2 tile's patch grid is fixed, so the same tile, row and
column on another date has the same footprint (a temporal twin: 82 % of v1 patches have one), and a v1
patch and its v2 counterpart have the same footprint too.

Two patches are *near* when they share the CRS and their corners differ by at most one patch side
(1,200 m) on both axes: the same footprint, one of its 8 neighbours, or an overlapping patch of another
tile of the same UTM zone. Patches of two UTM zones are never near (their corners are not comparable):
a gap at zone boundaries only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError

COLUMNS = ("epsg", "ulx", "uly")
SIDE_M = 1200  # 120 pixels of 10 m
_CELL = ["epsg", "cx", "cy"]


def of(index: pd.DataFrame, names: Sequence[str] | None = None) -> np.ndarray:
    """The (n, 3) int64 footprints (EPSG code, ulx, uly) of the index's rows, or of `names` in their order."""
    missing = [c for c in (*COLUMNS, "name") if c not in index.columns]
    if missing:
        raise UserError(f"index has no column {missing[0]!r}: a patch's footprint needs {', '.join(COLUMNS)}")
    rows = index.set_index("name")
    if names is not None:
        rows = rows.reindex(list(names))
    absent = rows.index[rows[list(COLUMNS)].isna().any(axis=1).to_numpy()]
    if len(absent):
        raise UserError(f"{len(absent)} patches have no footprint ({', '.join(COLUMNS)}) in the index: "
                        f"{absent[:5].tolist()}")
    return np.rint(rows[list(COLUMNS)].to_numpy(dtype=np.float64)).astype(np.int64)


def near(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Whether each query footprint is near some reference footprint (module doc), in query order.

    Exact: candidates come from the 3 x 3 cells of side SIDE_M around each query corner (a corner within
    SIDE_M on both axes can lie in no other cell), then the distance itself is compared."""
    found = np.zeros(len(query), dtype=bool)
    if not len(query) or not len(reference):
        return found
    ref = _cells(np.unique(reference, axis=0))
    asked = _cells(query).assign(row=np.arange(len(query)))
    for dx, dy in itertools.product((-1, 0, 1), repeat=2):
        pairs = asked.assign(cx=asked.cx + dx, cy=asked.cy + dy).merge(ref, on=_CELL, suffixes=("", "_ref"))
        close = ((pairs.x - pairs.x_ref).abs() <= SIDE_M) & ((pairs.y - pairs.y_ref).abs() <= SIDE_M)
        found[pairs.row[close].to_numpy()] = True
    return found


def _cells(footprints: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(footprints, columns=["epsg", "x", "y"])
    return frame.assign(cx=frame.x // SIDE_M, cy=frame.y // SIDE_M)
