"""promote: the best validation F1 of the kept epoch wins, the former champion stays reachable as
`previous`, the reason is written down; dry runs, ties, empty sets and test metrics change nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from registry_helpers import Store, entry_point, open_store

from simclr_s2.errors import UserError
from simclr_s2.promote import Candidate, choose
from simclr_s2.tracking.registry import CLASSIFIER_MODEL

promote = entry_point("promote")


@pytest.fixture
def store(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Store:
    return open_store(tmp_path, tmp_path_factory, monkeypatch)


def scores(best_val_f1: float, **others: float) -> dict[str, float]:
    """A run whose last-epoch val_f1 and test_f1 rank the opposite way, so only best_val_f1 can decide."""
    return {"best_val_f1": best_val_f1, "val_f1": 1 - best_val_f1, "test_f1": 1 - best_val_f1,
            "best_val_loss": 1 - best_val_f1, **others}


def version_tags(version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(CLASSIFIER_MODEL, version).tags)


def promote_runs(store: Store) -> list:
    return MlflowClient().search_runs([store.experiment_id], "tags.stage = 'promote'",
                                      order_by=["attributes.start_time ASC"])


def test_best_validation_f1_becomes_champion(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.register(pretrained="ben", fraction=10, metrics=scores(0.71))
    best = store.register(pretrained="ca-sgd", fraction=10, metrics=scores(0.83))
    store.register(pretrained="scratch", fraction=1, metrics=scores(0.77))
    store.register(pretrained="ben", fraction=10, scheme="expanded", metrics=scores(0.99))
    promote([])
    assert store.aliases() == {"champion": best}
    assert f"promoted v{best} (ca-sgd 10pct s0) to @champion (val_f1 0.8300, best of 3 candidates)" \
        in capsys.readouterr().out
    tags = version_tags(best)
    assert tags["promoted_metric"] == "val_f1" and float(tags["promoted_value"]) == 0.83
    assert tags["promoted_candidates"] == "3" and tags["promoted_candidate_list"].startswith(f"v{best}=0.8300, ")
    assert tags["promoted_at"] and "scheme=basic" in tags["promoted_filter"]
    [run] = promote_runs(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["chosen_version"] == best and run.data.tags["promoted_value"] == tags["promoted_value"]


def test_new_champion_moves_the_former_to_previous(store: Store) -> None:
    first = store.register(pretrained="ben", fraction=10, metrics=scores(0.71))
    promote([])
    better = store.register(pretrained="ben", fraction=10, seed=1, metrics=scores(0.80))
    promote([])
    assert store.aliases() == {"champion": better, "previous": first}
    assert promote_runs(store)[-1].data.tags["former_version"] == first


def test_filters_and_metric_choose_among_matching_versions(store: Store) -> None:
    store.register(pretrained="ben", fraction=10, metrics=scores(0.90))
    small = store.register(pretrained="ben", fraction=1, metrics=scores(0.60, best_val_auc=0.7))
    baseline = store.register(pretrained="scratch", fraction=1, metrics=scores(0.50, best_val_auc=0.9))
    promote(["--fraction", "1", "--pretrained", "ben", "--alias", "ben-small"])
    promote(["--fraction", "1.0", "--metric", "val_auc", "--alias", "small"])
    promote(["--fraction", "1", "--metric", "val_loss", "--alias", "low-loss"])  # lower is better
    assert store.aliases() == {"ben-small": small, "small": baseline, "low-loss": small}


def test_dry_run_changes_nothing(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    old = store.register(pretrained="ben", metrics=scores(0.70))
    promote([])
    new = store.register(pretrained="ca-sgd", metrics=scores(0.75))
    promote(["--dry-run", "true"])
    assert store.aliases() == {"champion": old}
    assert "promoted_metric" not in version_tags(new)
    assert f"dry run: would promote v{new} (ca-sgd 10pct s0) to @champion" in capsys.readouterr().out
    assert promote_runs(store)[-1].data.tags["alias_moved"] == "false"


def test_current_champion_winning_again_changes_nothing(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    best = store.register(metrics=scores(0.70))
    store.register(metrics=scores(0.60), seed=1)
    promote([])
    promote([])
    assert store.aliases() == {"champion": best}
    assert "already holds @champion" in capsys.readouterr().out


def test_tie_empty_and_test_metric_are_user_errors(store: Store) -> None:
    first = store.register(pretrained="ben", metrics=scores(0.8))
    second = store.register(pretrained="ca-sgd", metrics=scores(0.8))
    with pytest.raises(UserError, match=rf"tie on val_f1 = 0\.8000 between v{first} \(ben.*v{second} \(ca-sgd"):
        promote([])
    with pytest.raises(UserError, match="no registered classifier matches scheme=basic fraction=3"):
        promote(["--fraction", "3"])
    with pytest.raises(UserError, match="test_f1 is a test-set metric"):
        promote(["--metric", "test_f1"])
    with pytest.raises(UserError, match="metric: expected one of val_loss"):
        promote(["--metric", "f1"])
    with pytest.raises(UserError, match="alias"):
        promote(["--alias", "v3"])
    with pytest.raises(UserError, match="fraction"):
        promote(["--fraction", "some"])
    assert store.aliases() == {}
    assert [r.info.status for r in promote_runs(store)] == ["FAILED", "FAILED"]  # the others stop before a run


def test_choose_skips_runs_without_the_metric() -> None:
    picked = choose([Candidate("1", "a", math.nan), Candidate("2", "b", 0.4), Candidate("3", "c", 0.3)],
                    "val_f1", "test")
    assert picked.winner.version == "2" and [c.version for c in picked.unscored] == ["1"]
    with pytest.raises(UserError, match="none of the 1 candidates"):
        choose([Candidate("1", "a", math.nan)], "val_f1", "test")
