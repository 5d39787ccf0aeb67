"""Which ground an encoder was pretrained on, kept small enough to log with every encoder version, so a
fine-tune, evaluation or comparison can check that none of its test patches were seen in pretraining.

A patch counts as seen when its footprint (footprint.py) is near a pretraining patch's: the same patch,
the same ground on any other date, or a neighbour, whichever archive version either came from. The
artifact is a .npy file of the sorted, distinct footprints (EPSG code, ulx, uly as int64 rows): 24 bytes
a footprint, about 6 MB for the whole v1 archive, and written the same for the same footprints. `digest`
is the sha256 of the sorted names, to record beside it as the pretraining set's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simclr_s2.errors import UserError
from simclr_s2.study import footprint

DTYPE = np.dtype("<i8")
WIDTH = len(footprint.COLUMNS)
# What a run accepts of the leakage guard (allow_pretraining_overlap): nothing, an unreadable membership,
# anything.
OVERLAP_POLICIES = ("false", "unknown", "true")


def digest(names: Iterable[str]) -> str:
    """sha256 of the distinct names, sorted, one per line with a final newline: the set's identity."""
    text = "".join(f"{n}\n" for n in sorted(set(names)))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Membership:
    """The ground one encoder was pretrained on, as sorted distinct footprints."""

    footprints: np.ndarray  # (m, 3) int64

    @classmethod
    def of(cls, footprints: np.ndarray) -> Membership:
        return cls(np.unique(np.asarray(footprints, dtype=DTYPE).reshape(-1, WIDTH), axis=0))

    def __len__(self) -> int:
        return len(self.footprints)

    def seen(self, footprints: np.ndarray) -> np.ndarray:
        """Whether each footprint is near a member (footprint.near), in input order."""
        return footprint.near(footprints, self.footprints)

    def overlap(self, footprints: np.ndarray) -> int:
        """How many of the patches whose footprints are given were seen: the count a leakage check reports."""
        return int(self.seen(footprints).sum())


def save(membership: Membership, path: Path) -> Path:
    """Write the footprints as a .npy file (no pickle); the same set gives the same bytes."""
    path = Path(path)
    with open(path, "wb") as f:
        np.save(f, membership.footprints.astype(DTYPE), allow_pickle=False)
    return path


def load(path: Path) -> Membership:
    """Read a file written by `save`, checking it holds sorted distinct footprints."""
    try:
        rows = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"membership {path}: not a readable .npy file ({exc})") from None
    if rows.dtype != DTYPE or rows.ndim != 2 or rows.shape[1] != WIDTH or not _strictly_sorted(rows):
        raise UserError(f"membership {path}: expected sorted distinct int64 footprints"
                        f" ({', '.join(footprint.COLUMNS)}), got {rows.dtype} of shape {rows.shape}")
    return Membership(rows)


def _strictly_sorted(rows: np.ndarray) -> bool:
    """Rows in strictly increasing lexicographic order, as np.unique(axis=0) leaves them."""
    step = rows[1:] - rows[:-1]
    first = np.argmax(step != 0, axis=1)  # the first column where two consecutive rows differ
    return bool((step[np.arange(len(step)), first] > 0).all())
