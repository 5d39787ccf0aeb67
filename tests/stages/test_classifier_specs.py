"""finetune and baseline are told apart by what their specs say, never by their class: a baseline's spec
answers a fine-tune's questions (no encoder to load, all of it trains, nothing cached or recalibrated),
and the run is named by its encoder source."""

from __future__ import annotations

from simclr_s2.bigearthnet.bands import Bands
from simclr_s2.learning.encoder_source import Scratch
from simclr_s2.settings import specs
from simclr_s2.settings.spec import build, fields_of
from simclr_s2.stages.classifier import BASELINE, FINETUNE


def test_a_baseline_answers_what_training_asks_of_a_fine_tune() -> None:
    baseline, finetune = build(specs.Baseline, {"arch": "resnet50"}), build(specs.Finetune, {})
    assert (baseline.pretrained, baseline.trainable, baseline.feature_cache, baseline.bn_recalibrate) == (
        None, "all", "false", "false")
    assert (finetune.pretrained, finetune.trainable, finetune.feature_cache, finetune.bn_recalibrate) == (
        "auto", "head2", "auto", "auto")
    assert not {"pretrained", "trainable"} & {f.name for f in fields_of(specs.Baseline)}  # no new parameters


def test_runs_are_named_by_the_encoder_source() -> None:
    baseline = build(specs.Baseline, {"arch": "resnet50", "fraction": 10, "seed": 2})
    scratch = Scratch("resnet50", Bands.parse("study"))
    assert scratch.label == "resnet50" and BASELINE.run_name(baseline, {}) == "baseline-resnet50-basic-10pct-s2"
    finetune = build(specs.Finetune, {"pretrained": "models:/simclr-s2-encoder@ca-adam"})
    assert FINETUNE.run_name(finetune, {}) == "finetune-ca-adam-basic-100pct-s0"
