"""Which patches an encoder was pretrained on, kept small enough to log with every encoder version, so a
fine-tune, evaluation or comparison can check that none of its test patches were seen in pretraining.

A patch is identified by its BigEarthNet v1 name (v2 patches by their `s2v1_name`), so the check holds
across archive versions. The artifact is a .npy file of the sorted, distinct 64-bit BLAKE2b hashes of
the UTF-8 names: 8 bytes a patch (4 MB for the whole v1 archive) and written the same for the same names.
Two different names share a hash with probability about m * t / 2**64 for m members and t test
patches (below 1e-10 for the full archive against a 4,000-patch test set), so a count is exact in practice.
`digest` is the sha256 of the sorted names, to record beside it as the pretraining set's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simclr_s2.errors import UserError

DTYPE = np.dtype("<u8")


def name_hashes(names: Iterable[str]) -> np.ndarray:
    """The 64-bit BLAKE2b hash of each name's UTF-8 bytes, in input order (about 0.4 us a name)."""
    return np.frombuffer(b"".join(hashlib.blake2b(n.encode(), digest_size=8).digest() for n in names), DTYPE)


def digest(names: Iterable[str]) -> str:
    """sha256 of the distinct names, sorted, one per line with a final newline: the set's identity."""
    text = "".join(f"{n}\n" for n in sorted(set(names)))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Membership:
    """The set of patches one encoder was pretrained on, as sorted distinct name hashes."""

    hashes: np.ndarray

    @classmethod
    def of(cls, names: Iterable[str]) -> Membership:
        return cls(np.unique(name_hashes(names)))

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, names: Iterable[str]) -> np.ndarray:
        """Whether each name is a member, in input order."""
        wanted = name_hashes(names)
        at = np.searchsorted(self.hashes, wanted)
        found = np.zeros(len(wanted), dtype=bool)
        inside = at < len(self.hashes)
        found[inside] = self.hashes[at[inside]] == wanted[inside]
        return found

    def overlap(self, names: Iterable[str]) -> int:
        """How many distinct `names` are members: the count a leakage check reports."""
        distinct = sorted(set(names))
        return int(self.contains(distinct).sum())


def save(membership: Membership, path: Path) -> Path:
    """Write the hashes as a .npy file (no pickle); the same set gives the same bytes."""
    path = Path(path)
    with open(path, "wb") as f:
        np.save(f, membership.hashes.astype(DTYPE), allow_pickle=False)
    return path


def load(path: Path) -> Membership:
    """Read a file written by `save`, checking it holds sorted distinct 64-bit hashes."""
    try:
        hashes = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"membership {path}: not a readable .npy file ({exc})") from None
    if hashes.dtype != DTYPE or hashes.ndim != 1 or not (hashes[1:] > hashes[:-1]).all():
        raise UserError(f"membership {path}: expected sorted distinct uint64 hashes, got {hashes.dtype} "
                        f"of shape {hashes.shape}")
    return Membership(hashes)
