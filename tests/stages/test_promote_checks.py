"""promote without a store: what the spec refuses before any run opens (a test metric, an alias MLflow
refuses), and which versions it leaves unranked (near-constant on validation, whatever test says)."""

from __future__ import annotations

import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.spec import build
from simclr_s2.stages.promote import candidates
from simclr_s2.study.promotion import choose
from simclr_s2.tracking.versions import VersionRecord


@pytest.mark.parametrize(("values", "refusal"), [({"metric": "test_f1"}, "test_f1 is a test-set metric"),
                                                  ({"alias": "latest"}, "alias: expected letters")])
def test_the_spec_refuses_what_needs_no_store(values: dict[str, str], refusal: str) -> None:
    with pytest.raises(UserError, match=refusal):
        build(specs.Promote, values)
    assert build(specs.Promote, {"metric": "val_auc", "alias": "best"}).metric == "val_auc"


def record(version: str, val_f1: float, **flags: str) -> VersionRecord:
    return VersionRecord(version, {"fraction": "10", "test_digest": "ab" * 32, "pretrained": "ben", **flags},
                         {"best_val_f1": val_f1, "best_val_loss": 0.3})


def test_validation_decides_which_versions_are_near_constant() -> None:
    """v1 is flagged on test only (compare shows it), v2 on validation: v1 wins; the test set never decides."""
    ranked = candidates([record("1", 0.8, near_constant="true", val_near_constant="false"),
                         record("2", 0.9, near_constant="false", val_near_constant="true")], "best_val_f1")
    choice = choose(ranked, "val_f1", "fraction=10")
    assert choice.winner.version == "1" and [c.version for c in choice.flagged] == ["2"]
