"""compare: the table equals the runs' metrics (mean and std across seeds), holes stay visible, the figures
and tables are written and logged; summarise on its own."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from registry_helpers import Store, entry_point, open_store

from simclr_s2.compare import METRICS, RUN_COLUMNS, summarise
from simclr_s2.errors import UserError

FRACTIONS = [1, 10, 100]
# (pretrained, fraction, seed) of the basic versions; ca-sgd has no 10 %, nobody has 100 %
CELLS = [("ben", 1, 0), ("ben", 1, 1), ("ben", 10, 0), ("ben", 10, 1), ("ca-sgd", 1, 0),
         ("scratch", 1, 0), ("scratch", 1, 1), ("scratch", 10, 0)]
RERUN = ("ben", 10, 1)  # registered twice: the newest version replaces the older one of that seed
FILES = ["table.csv", "table.md", "runs.csv", "bars_accuracy.png", "bars_f1.png", "lines.png"]


def metrics_of(pretrained: str, fraction: int, seed: int) -> dict[str, float]:
    """Distinct, irregular numbers per run, so a mean or std from the wrong runs cannot match."""
    base = {"ben": 0.61, "ca-sgd": 0.66, "scratch": 0.58}[pretrained] + fraction / 97 + seed * 0.0317
    return {"test_accuracy": base, "test_f1": base - 0.0213, "test_auc": base + 0.0711,
            "best_val_f1": base - 0.05, "val_f1": 0.1}


RERUN_METRICS = {**metrics_of(*RERUN), "test_accuracy": 0.9031, "test_f1": 0.8822}


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path, str]:
    """A registry holding CELLS (plus distractors), and one compare run over it."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("compare")
        store = open_store(root, tmp_path_factory, mp)
        for pretrained, fraction, seed in CELLS:
            store.register(pretrained=pretrained, fraction=fraction, seed=seed,
                           metrics=metrics_of(pretrained, fraction, seed))
        store.register(pretrained="ben", fraction=1, seed=0, scheme="expanded", metrics=metrics_of("ben", 1, 5))
        store.register(pretrained="ben", fraction=50, seed=0, metrics=metrics_of("ben", 50, 0))
        newest = store.register(pretrained=RERUN[0], fraction=RERUN[1], seed=RERUN[2], metrics=RERUN_METRICS)
        out = root / "out"
        entry_point("compare")(["--scheme", "basic", "--fractions", "1,10,100", "--out", str(out)])
        yield store, out, newest


def test_table_equals_run_metrics(compared: tuple[Store, Path, str]) -> None:
    _, out, newest = compared
    table = pd.read_csv(out / "table.csv")
    assert list(zip(table["pretrained"], table["fraction"], strict=True)) == [
        (m, f) for m in ("ben", "ca-sgd", "scratch") for f in FRACTIONS]
    for row in table.to_dict("records"):
        seeds = {s for p, f, s in CELLS if (p, f) == (row["pretrained"], row["fraction"])}
        runs = [RERUN_METRICS if (row["pretrained"], row["fraction"], s) == RERUN else metrics_of(row["pretrained"], row["fraction"], s) for s in sorted(seeds)]
        assert row["n_runs"] == len(runs)
        for metric in METRICS:
            values = [r[metric] for r in runs]
            if not values:
                assert math.isnan(row[f"{metric}_mean"]) and math.isnan(row[f"{metric}_std"])
                continue
            assert row[f"{metric}_mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            if len(values) > 1:
                assert row[f"{metric}_std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
            else:
                assert math.isnan(row[f"{metric}_std"])
    ben10 = table[(table["pretrained"] == "ben") & (table["fraction"] == 10)].iloc[0]
    assert newest in ben10["versions"].split(",") and ben10["n_runs"] == 2


def test_missing_cells_are_shown(compared: tuple[Store, Path, str]) -> None:
    _, out, _ = compared
    table = pd.read_csv(out / "table.csv")
    missing = table[table["n_runs"] == 0]
    assert set(zip(missing["pretrained"], missing["fraction"], strict=True)) == {
        ("ben", 100), ("ca-sgd", 10), ("ca-sgd", 100), ("scratch", 100)}
    markdown = (out / "table.md").read_text()
    assert "| ca-sgd | 10 | 0 | n/a | n/a | n/a |" in markdown
    assert "| scratch (baseline) | 1 | 2 |" in markdown and " ± " in markdown
    assert 50 not in set(table["fraction"])  # not asked for


def test_figures_and_tables_written_and_logged(compared: tuple[Store, Path, str]) -> None:
    store, out, _ = compared
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    for name in FILES[3:]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient()
    [run] = client.search_runs([store.experiment_id], "tags.stage = 'compare'")
    assert run.info.status == "FINISHED" and run.data.tags["scheme"] == "basic"
    assert run.data.params["fractions"] == "1,10,100"
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == sorted(FILES)


def test_bad_scheme_or_fractions_are_user_errors(compared: tuple[Store, Path, str], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no registered .* scheme 'nope'"):
        entry_point("compare")(["--scheme", "nope", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="fractions"):
        entry_point("compare")(["--fractions", "0,10", "--out", str(tmp_path)])


def test_summarise_keeps_models_without_runs() -> None:
    runs = pd.DataFrame([[1, "ben", 10, 0, 0.8, 0.7, 0.9]], columns=RUN_COLUMNS)
    table = summarise(runs, [10, 25], models=["ben", "ca-adam", "scratch"])
    assert len(table) == 6 and table["n_runs"].tolist() == [1, 0, 0, 0, 0, 0]
    assert table.loc[0, "test_f1_mean"] == 0.7 and table["test_f1_mean"].isna().sum() == 5
    empty = summarise(pd.DataFrame(columns=RUN_COLUMNS), [10])
    assert empty[["pretrained", "n_runs"]].values.tolist() == [["scratch", 0]]
