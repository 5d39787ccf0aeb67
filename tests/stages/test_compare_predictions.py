"""compare's reading of the runs' test predictions, against a stand-in store: every run has them (read),
none has (t across seeds), or one used run lacks them beside others that have them (refused in one line
naming the version, the run and the file, where the download used to fail with a 49-line traceback)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from simclr_s2.errors import UserError
from simclr_s2.stages.compare import PREDICTIONS, predictions_reader
from simclr_s2.tracking.versions import VersionRecord


class Store:
    """list_artifacts and download_artifacts of runs of which `with_predictions` logged PREDICTIONS."""

    def __init__(self, with_predictions: set[str]) -> None:
        self.with_predictions = with_predictions

    def list_artifacts(self, run_id: str, path: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(path=PREDICTIONS)] if run_id in self.with_predictions else []

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        assert run_id in self.with_predictions, "downloaded what the run does not have"
        out = Path(dst) / f"{run_id}.csv"
        pd.DataFrame({"name": ["P_0"], "label": [1], "probability": [0.7]}).to_csv(out, index=False)
        return str(out)


RECORDS = [VersionRecord(str(v), {"fraction": "10", "pretrained": who, "seed": "0"}, {}, run_id=f"r{v}")
           for v, who in ((1, "ben"), (2, "scratch"))]
RUNS = pd.DataFrame({"run_id": ["r1", "r2"], "fraction": [10, 10]})


def test_every_run_with_predictions_is_read(tmp_path: Path) -> None:
    read = predictions_reader(Store({"r1", "r2"}), RECORDS, RUNS, [10], str(tmp_path))
    assert read is not None and read("r2")["probability"].tolist() == [0.7]


def test_no_run_with_predictions_gives_t_across_seeds(tmp_path: Path) -> None:
    assert predictions_reader(Store(set()), RECORDS, RUNS, [10], str(tmp_path)) is None


def test_a_run_without_them_beside_others_is_refused_in_one_line(tmp_path: Path) -> None:
    read = predictions_reader(Store({"r1"}), RECORDS, RUNS, [10], str(tmp_path))
    with pytest.raises(UserError, match=rf"v2 \(scratch 10pct s0\): its run r2 has no {PREDICTIONS}, which other"):
        read("r2")
