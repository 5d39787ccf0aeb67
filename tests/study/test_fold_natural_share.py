"""A cross-validation split's natural-prevalence test set is drawn inside the held-out fold: a natural_share
that takes the whole fold is refused in one line naming the share, the fold and its share of the pool (it
used to fail later, blaming the groups' positives and suggesting kind random)."""

from __future__ import annotations

import numpy as np
import pytest

from simclr_s2.errors import UserError
from simclr_s2.study.split_kinds import assign_fold

GROUPS = np.repeat([f"g{i}" for i in range(10)], 10)  # 10 groups of 10 patches
FOLDS = np.repeat(["0", "0", "1", "1", "1", "2", "2", "2", "3", "3"], 10)  # fold 0: 20 % of the pool
POS = np.tile(np.arange(10) < 5, 10)


def test_a_share_that_takes_the_whole_fold_is_refused() -> None:
    with pytest.raises(UserError, match=r"natural_share: 0.2 of the pool takes all of fold 0, which holds 20.0%"):
        assign_fold(GROUPS, POS, FOLDS, "0", (0.7, 0.15, 0.15), 0.2, np.random.default_rng(0))


def test_a_smaller_share_leaves_the_fold_a_test_set() -> None:
    target = assign_fold(GROUPS, POS, FOLDS, "0", (0.7, 0.15, 0.15), 0.1, np.random.default_rng(0))
    assert set(target[FOLDS == "0"]) == {"test", "test_natural"} and (target == "test_natural").sum() == 10
