"""Fixtures of the bigearthnet tests: 6 real BigEarthNet-S2 patches, shipped in fixtures/ (see its README)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

EXAMPLE_TARBALL = Path(__file__).parent / "fixtures" / "BigEarthNet-S2-Example.tar.bz2"


@pytest.fixture(scope="session")
def real_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of 6 genuine v1.0 patch folders."""
    root = tmp_path_factory.mktemp("real")
    with tarfile.open(EXAMPLE_TARBALL) as tar:
        tar.extractall(root, filter="data")
    return root / "BigEarthNet-S2-Example"
