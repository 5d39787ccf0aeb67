"""compare's reader of the runs' test predictions, against a stand-in store: a run's predictions, or None
where it logged none (listed first: the download of a missing file had failed with a 49-line traceback).
What None means for the runs a comparison counts: tests/study/test_comparison.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from simclr_s2.stages.compare import PREDICTIONS, predictions_reader


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


def test_a_run_s_predictions_are_read_and_a_run_without_them_gives_none(tmp_path: Path) -> None:
    read = predictions_reader(Store({"r1"}), str(tmp_path))
    assert read("r1")["probability"].tolist() == [0.7]
    assert read("r2") is None
