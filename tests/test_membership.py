"""simclr_s2.membership: exact counts against Python sets, a stable file format, fast at archive scale."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from simclr_s2 import membership
from simclr_s2.errors import UserError


def names(start: int, stop: int) -> list[str]:
    return [f"S2A_MSIL2A_20170613T101031_{i // 1000}_{i % 1000}" for i in range(start, stop)]


def test_overlap_counts_distinct_members() -> None:
    pretrained = names(0, 5000)
    test = names(4990, 5010) + names(4995, 4996)  # 10 members, one listed twice
    m = membership.Membership.of(pretrained + pretrained[:7])
    assert len(m) == 5000
    assert m.overlap(test) == len(set(test) & set(pretrained)) == 10
    assert m.overlap(names(6000, 7000)) == 0 and m.overlap([]) == 0
    assert m.contains(["nope", pretrained[0]]).tolist() == [False, True]


def test_save_load_round_trip_and_same_bytes(tmp_path: Path) -> None:
    pretrained = names(0, 300)
    first = membership.save(membership.Membership.of(pretrained), tmp_path / "a.npy")
    again = membership.save(membership.Membership.of(reversed(pretrained)), tmp_path / "b.npy")
    assert first.read_bytes() == again.read_bytes()
    loaded = membership.load(first)
    assert np.array_equal(loaded.hashes, np.unique(loaded.hashes)) and len(loaded) == 300
    assert loaded.overlap(names(290, 310)) == 10


def test_digest_is_sha256_of_sorted_distinct_names() -> None:
    listed = ["b", "a", "b"]
    assert membership.digest(listed) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert membership.digest(reversed(listed)) == membership.digest(listed)


def test_bad_file_rejected(tmp_path: Path) -> None:
    np.save(tmp_path / "floats.npy", np.array([1.0, 2.0]))
    with pytest.raises(UserError, match="floats.npy: expected sorted distinct uint64"):
        membership.load(tmp_path / "floats.npy")
    np.save(tmp_path / "unsorted.npy", np.array([3, 1], dtype="<u8"))
    with pytest.raises(UserError, match="unsorted.npy"):
        membership.load(tmp_path / "unsorted.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(UserError, match="text.npy: not a readable"):
        membership.load(tmp_path / "text.npy")


def test_fast_at_archive_scale() -> None:
    archive = names(0, 500_000)
    start = time.perf_counter()
    m = membership.Membership.of(archive)
    assert m.overlap(names(499_000, 505_000)) == 1000
    assert time.perf_counter() - start < 5  # about 0.5 s on one core
