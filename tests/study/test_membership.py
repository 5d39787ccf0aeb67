"""simclr_s2.study.membership: counts by footprint (twins and neighbours included), a stable file format, fast at
archive scale."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from simclr_s2.errors import UserError
from simclr_s2.study import membership


def grid(rows: range, cols: range, epsg: int = 32629) -> np.ndarray:
    """Footprints of a tile's patch grid: row r, column c at 1,200 m steps."""
    return np.array([[epsg, 300_000 + 1200 * c, 4_500_000 - 1200 * r] for r in rows for c in cols])


def test_overlap_counts_twins_and_neighbours() -> None:
    pretrained = grid(range(10), range(10))
    m = membership.Membership.of(np.concatenate([pretrained, pretrained[:7]]))  # twins: one footprint each
    assert len(m) == 100
    assert m.overlap(grid(range(5, 6), range(3))) == 3  # the same ground on another date
    assert m.overlap(grid(range(10, 12), range(1))) == 1  # row 10 touches row 9; row 11 does not
    assert m.overlap(grid(range(10), range(10), epsg=32630)) == 0  # another zone
    assert m.overlap(np.empty((0, 3), dtype=np.int64)) == 0
    assert m.seen(grid(range(20, 21), range(9, 11)) + [0, 0, 1200 * 10]).tolist() == [True, True]


def test_save_load_round_trip_and_same_bytes(tmp_path: Path) -> None:
    pretrained = grid(range(15), range(20))
    first = membership.save(membership.Membership.of(pretrained), tmp_path / "a.npy")
    again = membership.save(membership.Membership.of(pretrained[::-1]), tmp_path / "b.npy")
    assert first.read_bytes() == again.read_bytes()
    loaded = membership.load(first)
    assert np.array_equal(loaded.footprints, np.unique(pretrained, axis=0)) and len(loaded) == 300
    assert loaded.overlap(grid(range(14, 17), range(1))) == 2


def test_digest_is_sha256_of_sorted_distinct_names() -> None:
    listed = ["b", "a", "b"]
    assert membership.digest(listed) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert membership.digest(reversed(listed)) == membership.digest(listed)


@pytest.mark.parametrize("rows", [np.array([1.0, 2.0]), np.array([[1, 2, 3], [1, 2, 3]]),
                                  np.array([[1, 2, 4], [1, 2, 3]]), np.array([1, 2, 3], dtype="<u8"),
                                  np.zeros((2, 2), dtype=np.int64)])
def test_bad_file_rejected(tmp_path: Path, rows: np.ndarray) -> None:
    np.save(tmp_path / "bad.npy", rows)
    with pytest.raises(UserError, match="bad.npy: expected sorted distinct int64 footprints"):
        membership.load(tmp_path / "bad.npy")


def test_unreadable_file_rejected(tmp_path: Path) -> None:
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(UserError, match="text.npy: not a readable"):
        membership.load(tmp_path / "text.npy")


def test_fast_at_archive_scale() -> None:
    archive = grid(range(600), range(500))  # 300,000 footprints
    start = time.process_time()  # this process's CPU: on busy shared cores the wall clock passed 10 s
    m = membership.Membership.of(archive)
    assert m.overlap(grid(range(599, 605), range(1000))) == 2 * 501  # rows 599 and 600, columns 0-500
    assert time.process_time() - start < 10  # about 1 s on one core
