"""The leakage guard (simclr_s2.stages.leakage): overlap by footprint, failing closed, and pretraining kept
off the ground of every evaluation set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.errors import UserError
from simclr_s2.stages import leakage
from simclr_s2.stages.inputs import SOURCE
from simclr_s2.study import footprint, membership
from simclr_s2.study.splits import NATURAL, create_splits, load_split
from simclr_s2.tracking.artifacts import Fetcher

INDEX = pd.DataFrame({"name": ["a", "a_twin", "b", "c"], "epsg": [32629] * 4,
                      "ulx": [300_000.0, 300_000.0, 301_200.0, 306_000.0], "uly": [4_500_000.0] * 4})
SEEN = membership.Membership.of(footprint.of(INDEX, ["a"]))
TEST = ["a_twin", "b", "c"]  # the same ground on another date, a neighbour, and a patch 5 km away


class Client:
    """download_artifacts as MlflowClient's: the file at `artifact`, or the error `fails`."""

    def __init__(self, artifact: Path | None = None, fails: Exception | None = None) -> None:
        self.artifact, self.fails = artifact, fails

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        if self.fails:
            raise self.fails
        return str(self.artifact)


def test_a_twin_and_a_neighbour_count_as_overlap() -> None:
    for policy in ("false", "unknown"):
        with pytest.raises(UserError, match=r"pretrained on 2 of the 3 patches of the test set \(their footprint on "
                                            r"any date, or a neighbour\); .* allow_pretraining_overlap=true"):
            leakage.status(SEEN, TEST, INDEX, "test", policy)
    assert leakage.status(SEEN, TEST, INDEX, "test", "true") == "override:2"
    assert leakage.status(SEEN, ["c"], INDEX, "test", "false") == "0"


@pytest.mark.parametrize("fails", [MlflowException("artifact not found\nmore"), OSError("disk"), None])
def test_an_unreadable_membership_fails_closed_unless_unknown_is_accepted(tmp_path: Path, fails) -> None:
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    seen = leakage.encoder_membership(Client(tmp_path / "broken.npy", fails), {leakage.DIGEST_TAG: "d"}, "r1")
    assert isinstance(seen, leakage.Unreadable) and "pretraining/footprints.npy of run r1" in seen.reason
    with pytest.raises(UserError, match=r"^pretrained: the encoder's pretraining membership cannot be read .* its "
                                        r"overlap with the test set is unknown; "
                                        r"allow_pretraining_overlap=unknown") as e:
        leakage.status(seen, TEST, INDEX, "test", "false")
    assert "\n" not in str(e.value)
    assert leakage.status(seen, TEST, INDEX, "test", "unknown") == leakage.status(seen, TEST, INDEX, "test", "true") \
        == "unknown"


def test_a_readable_or_never_recorded_membership(tmp_path: Path) -> None:
    path = membership.save(SEEN, tmp_path / "footprints.npy")
    read = leakage.encoder_membership(Client(path), {leakage.DIGEST_TAG: "d"}, "r1")
    assert np.array_equal(read.footprints, SEEN.footprints)
    assert leakage.encoder_membership(Client(path), {}, "r1") is None  # imported: never recorded
    assert leakage.status(None, TEST, INDEX, "test", "false") == "unknown"


def test_pretraining_leaves_out_the_ground_of_every_evaluation_set(demo_index: Path, tmp_path: Path) -> None:
    index = load_index(demo_index)
    folder = tmp_path / "splits"
    create_splits(index, "basic", folder, kind="random", natural_test=True, natural_share=0.1,
                  index_digest=index_digest(demo_index))
    (folder / "basic" / SOURCE).write_text(json.dumps({"index": str(demo_index),
                                                       "archive_root": str(index_archive_root(demo_index))}))
    fetch = Fetcher(tmp_path / "cache", f"file:{tmp_path / 'mlruns'}")
    kept = leakage.outside_evaluation(index, fetch, str(folder))
    evaluation = [n for s in ("test", NATURAL) for n in load_split(folder, "basic", 100, s).names]
    held = footprint.of(index, evaluation)
    expected = sorted(n for n, (e, x, y) in zip(index.name, footprint.of(index), strict=True)
                      if not ((held[:, 0] == e) & (abs(held[:, 1] - x) <= 1200) & (abs(held[:, 2] - y) <= 1200)).any())
    assert kept == expected and len(kept) < len(index) - len(evaluation)  # twins and neighbours go too
    assert leakage.outside_evaluation(index, fetch, "none") == sorted(index.name)
