"""promote's choice, without MLflow: the best validation value wins within one fraction and one test set,
crossing them needs asking, non-finite values are never ranked, ties are broken by a stated rule, test
metrics are refused, and the reason and the printed line say what happened."""

from __future__ import annotations

import math

import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.study.promotion import (
    Candidate,
    alias_problem,
    choose,
    decision,
    previous_alias,
    reason_tags,
    run_metric,
)

TEST_SET = "a1" * 32


def candidate(version: str, value: float, fraction: int = 10, test_digest: str = TEST_SET,
              loss: float = math.nan) -> Candidate:
    return Candidate(version, f"v{version} (ben {fraction}pct s0)", value, fraction, test_digest, loss)


def test_best_value_wins_and_lower_loss_is_better() -> None:
    field = [candidate("1", 0.71), candidate("2", 0.83), candidate("3", 0.77)]
    assert [c.version for c in choose(field, "val_f1", "scheme=basic").ranked] == ["2", "3", "1"]
    assert choose(field, "val_loss", "scheme=basic").winner.version == "1"


def test_several_fractions_are_refused_unless_crossed() -> None:
    field = [candidate("1", 0.9, fraction=1), candidate("2", 0.8, fraction=10), candidate("3", 0.7, fraction=10),
             candidate("4", 0.6, fraction=100)]
    with pytest.raises(UserError, match=r"span 3 values of fraction \(1 %: 1, 10 %: 2, 100 %: 1\).*"
                                        r"cross_fractions=true.*nothing changed"):
        choose(field, "val_f1", "scheme=basic fraction=any")
    assert choose(field, "val_f1", "any", cross_fractions=True).winner.version == "1"


def test_several_test_sets_are_refused_unless_crossed() -> None:
    other = "b2" * 32
    field = [candidate("1", 0.9), candidate("2", 0.8, test_digest=other), candidate("3", 0.7, test_digest=other)]
    with pytest.raises(UserError, match=rf"span 2 values of test set \({TEST_SET[:12]}: 1, {other[:12]}: 2\)"):
        choose(field, "val_f1", "scheme=basic fraction=10")
    with pytest.raises(UserError, match="test set"):
        choose(field, "val_f1", "scheme=basic", cross_fractions=True)
    assert choose(field, "val_f1", "any", cross_test_sets=True).winner.version == "1"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_never_ranked(bad: float) -> None:
    picked = choose([candidate("1", bad), candidate("2", 0.4), candidate("3", 0.3)], "val_f1", "test")
    assert picked.winner.version == "2" and [c.version for c in picked.unscored] == ["1"]
    assert [c.version for c in choose([candidate("1", bad), candidate("2", 0.4)], "val_loss", "t").ranked] == ["2"]
    with pytest.raises(UserError, match="none of the 1 candidates .* finite val_f1"):
        choose([candidate("1", bad)], "val_f1", "test")


def test_a_tie_is_broken_by_validation_loss_then_the_earlier_version() -> None:
    field = [candidate("12", 1.0, loss=0.30), candidate("3", 0.5, loss=0.01), candidate("9", 1.0, loss=0.20),
             candidate("10", 1.0, loss=0.20), candidate("2", 1.0)]
    choice = choose(field, "val_f1", "scheme=basic")
    assert [c.version for c in choice.ranked] == ["9", "10", "12", "2", "3"] and choice.tied == 4
    assert "a tie of 4 broken by val_loss, then the earlier version" in decision(choice, "champion", None, False)
    assert reason_tags(choice, "champion", "x")["promoted_tied"] == "4"
    by_loss = choose([candidate("5", 0.2), candidate("4", 0.2)], "val_loss", "t")
    assert by_loss.winner.version == "4" and by_loss.tied == 2


def test_empty_and_test_metric_are_refused() -> None:
    with pytest.raises(UserError, match="no registered classifier matches scheme=basic fraction=3"):
        choose([], "val_f1", "scheme=basic fraction=3")
    with pytest.raises(UserError, match="test_f1 is a test-set metric"):
        run_metric("test_f1")
    with pytest.raises(UserError, match="metric: expected one of val_loss"):
        run_metric("f1")
    assert run_metric("val_auc") == "best_val_auc"


@pytest.mark.parametrize("alias", ["v3", "latest", "a b", ""])
def test_bad_alias_refused(alias: str) -> None:
    assert "expected letters, digits" in alias_problem(alias)


def test_reason_and_decision_lines() -> None:
    choice = choose([candidate("7", 0.83), candidate("4", 0.71), candidate("5", math.nan)], "val_f1", "fraction=10")
    tags = reason_tags(choice, "champion", "fraction=10")
    assert tags["promoted_candidate_list"] == "v7=0.8300, v4=0.7100" and tags["promoted_candidates"] == "2"
    assert float(tags["promoted_value"]) == 0.83 and tags["promoted_filter"] == "fraction=10"
    assert previous_alias("champion") == "previous" and previous_alias("best") == "best-previous"
    assert decision(choice, "champion", "4", dry_run=False) == (
        "promoted v7 (ben 10pct s0) to @champion (val_f1 0.8300, best of 2 candidates; 1 without the metric "
        "skipped); v4 -> @previous")
    assert decision(choice, "champion", "7", dry_run=False).endswith("already holds @champion (val_f1 0.8300, "
                                                                     "best of 2 candidates; 1 without the "
                                                                     "metric skipped); nothing changed")
    assert decision(choice, "champion", None, dry_run=True).startswith("dry run: would promote v7")


def test_a_near_constant_predictor_is_never_ranked() -> None:
    constant = Candidate("9", "v9 (ben 10pct s0)", 0.667, 10, TEST_SET, near_constant=True)  # all positive
    field = [candidate("1", 0.61), constant, candidate("2", 0.64)]
    choice = choose(field, "val_f1", "scheme=basic")
    assert [c.version for c in choice.ranked] == ["2", "1"] and choice.flagged == (constant,)
    assert "1 near-constant predictors left out" in decision(choice, "champion", None, dry_run=True)
    with pytest.raises(UserError, match=r"varied predictions \(1 near-constant\)"):
        choose([constant], "val_f1", "scheme=basic")


@pytest.mark.parametrize("alias", ["previous", "best-auc-previous"])
def test_an_alias_promote_keeps_a_former_holder_in_is_not_promoted_to(alias: str) -> None:
    """promote keeps champion's former holder in @previous (and <alias>'s in @<alias>-previous): promoting to
    one of those would have the next champion's promote write over it, and its own former go to
    @previous-previous."""
    with pytest.raises(UserError, match=rf"^alias: {alias} is where promote keeps a former holder"):
        specs.Promote(alias=alias).validate()
    specs.Promote(alias="best-auc").validate()
