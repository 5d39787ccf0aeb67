"""The fingerprint of the code behind every step: a hash of the simclr_s2 package's sources.

It goes into every run's key, so a finished run is reused only when the same code made it: a fixed bug in
splits.py or augment.py means new runs, not a silent reuse. A hash of the sources (rather than the git
commit MLflow records) works the same in a git checkout, an installed package, a Ray worker or a copy
without .git, and does not change for edits outside the package (README, tests).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import simclr_s2

PACKAGE = Path(simclr_s2.__file__).resolve().parent
CODE_TAG = "simclr_s2.code"


def code_fingerprint(root: Path = PACKAGE) -> str:
    """sha256 (first 16 hex digits) over the relative path and bytes of every source and data file."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@cache
def package_fingerprint() -> str:
    """`code_fingerprint` of the installed package, computed once per process."""
    return code_fingerprint()
