"""A grid cell asks the classifier stages for the stage its entry point name gives, and that stage's spec
class builds its parameters: no branch on the name in the grid."""

from __future__ import annotations

import pytest

from simclr_s2.settings import specs
from simclr_s2.stages.classifier import BASELINE, FINETUNE
from simclr_s2.stages.grid import Cell

COMMON = {"scheme": "basic", "fraction": 10, "seed": 3, "epochs": 2}


@pytest.mark.parametrize(("stage", "params", "classifier", "spec_cls"), [
    ("finetune", {**COMMON, "trainable": "head"}, FINETUNE, specs.Finetune),
    ("baseline", {**COMMON, "arch": "resnet50"}, BASELINE, specs.Baseline),
])
def test_a_cell_runs_the_stage_its_name_gives_on_that_stages_spec(stage, params, classifier, spec_cls) -> None:
    cell = Cell(stage, "x", params)
    assert cell.classifier is classifier
    assert type(cell.spec) is spec_cls and {k: getattr(cell.spec, k) for k in params} == params
