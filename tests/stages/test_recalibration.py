"""A frozen encoder's BatchNorm statistics come from the largest fraction's training patches (images only),
at most RECALIBRATION_PATCHES of them: a fine-tune on a tenth of the labels does not set them from its own
few patches."""

from __future__ import annotations

import pandas as pd

from simclr_s2.stages import classifier
from simclr_s2.stages.classifier import FINETUNE


def _patches(project, split: str, fraction: int) -> int:
    """The number of patches in the training set at `fraction` of `split` (runs:/<id>/splits)."""
    run_id = split.removeprefix("runs:/").split("/")[0]
    return len(pd.read_csv(project.artifact(run_id, f"splits/basic/train_{fraction:03d}pct.csv")))


def test_a_fine_tune_on_a_fraction_recalibrates_on_the_largest_fractions_patches(project, demo, monkeypatch):
    params = {"split": demo.data.params["resolved_split"], "pretrained": demo.data.params["resolved_pretrained"],
              "epochs": 1, "register": "false"}
    run = project.client.get_run(project.run_stage(FINETUNE, fraction=10, **params))
    whole = _patches(project, params["split"], 100)
    assert run.data.tags["bn_recalibrated"] == "true" and _patches(project, params["split"], 10) < whole
    assert run.data.params["bn_recalibrated_on"] == str(whole)

    monkeypatch.setattr(classifier, "RECALIBRATION_PATCHES", 5)
    capped = project.client.get_run(project.run_stage(FINETUNE, fraction=10, seed=1, **params))
    assert capped.data.params["bn_recalibrated_on"] == "5"
