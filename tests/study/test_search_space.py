"""The tuned target's spec decides what a trial searches: a fine-tune, which takes its trainable part as a
parameter, searches it; a baseline, which answers it as a class value, does not. The ranges are the same."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from simclr_s2.settings import specs
from simclr_s2.settings.spec import build
from simclr_s2.study.search_space import SearchSpace

SHARED = {"lr": FloatDistribution(1e-5, 1e-2, log=True), "weight_decay": FloatDistribution(0.0, 1e-3),
          "dropout": FloatDistribution(0.0, 0.6), "batch_size": CategoricalDistribution((16, 32, 64))}


@pytest.mark.parametrize(("target", "searched"), [
    (specs.Finetune, {**SHARED, "trainable": CategoricalDistribution(("head2", "head"))}),
    (specs.Baseline, SHARED),
])
def test_a_trial_searches_what_its_target_takes(target, searched) -> None:
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    suggested = SearchSpace().suggest(trial, vars(build(target, {})))
    assert trial.distributions == searched
    assert suggested == trial.params
