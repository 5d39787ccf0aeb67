"""tune asks the classifier stages for its target by name and the target's spec whether it loads an
encoder: a baseline's study neither builds nor passes one on, a fine-tune's carries the resolved one."""

from __future__ import annotations

from types import SimpleNamespace

from simclr_s2.settings import specs
from simclr_s2.settings.spec import build
from simclr_s2.stages.classifier import BASELINE, ENCODER_DIGEST, FINETUNE, SPLIT_DIGEST
from simclr_s2.stages.tune import TUNE, _plan

RESOLVED = {"split": "runs:/s/splits", "pretrained": "models:/simclr-s2-encoder/3", "epochs": "2"}


def test_the_plan_tunes_the_stage_its_target_names(tmp_path) -> None:
    ctx = SimpleNamespace(state_dir=lambda: tmp_path)
    baseline = _plan(build(specs.Tune, {"target": "baseline"}), RESOLVED, ctx)
    finetune = _plan(build(specs.Tune, {"target": "finetune"}), RESOLVED, ctx)
    assert baseline.stage is BASELINE and type(baseline.base) is specs.Baseline
    assert baseline.base.pretrained is None and baseline.settings.pretrained == ""
    assert finetune.stage is FINETUNE and finetune.base.pretrained == "models:/simclr-s2-encoder/3"
    assert finetune.settings.pretrained == "models:/simclr-s2-encoder/3"
    assert (finetune.base.split, finetune.base.epochs) == (baseline.base.split, baseline.base.epochs) == (
        "runs:/s/splits", 2)


def test_the_study_is_named_once_for_the_plan_and_the_run(tmp_path) -> None:
    ctx = SimpleNamespace(state_dir=lambda: tmp_path)
    auto = build(specs.Tune, {"target": "baseline"})
    named = build(specs.Tune, {"study_name": "mine", "seed": 3})
    assert _plan(auto, {}, ctx).study_name == "baseline-basic-10pct"
    assert TUNE.run_name(auto, {}) == "tune-baseline-basic-10pct-s0"
    assert (_plan(named, {}, ctx).study_name, TUNE.run_name(named, {})) == ("mine", "tune-mine-s3")


def test_a_split_folder_s_content_is_part_of_the_study_s_settings(tmp_path) -> None:
    """A folder create_splits drew again in place holds other patches: a worker on it must not join the study
    of the folder's former content (its trials were trained on other data)."""
    ctx = SimpleNamespace(state_dir=lambda: tmp_path)
    spec = build(specs.Tune, {"split": "data/splits"})
    before, after = (_plan(spec, {SPLIT_DIGEST: d}, ctx).settings.split for d in ("aa11", "bb22"))
    assert before == "data/splits (manifest aa11)" and after != before


def test_an_encoder_file_s_content_is_part_of_the_study_s_settings(tmp_path) -> None:
    """A state-dict file written over holds other weights: a worker on it must not join the study of the
    file's former weights."""
    ctx = SimpleNamespace(state_dir=lambda: tmp_path)
    spec = build(specs.Tune, {"pretrained": "enc.pt"})
    before, after = (_plan(spec, {ENCODER_DIGEST: d}, ctx).settings.pretrained for d in ("aa11", "bb22"))
    assert before == "enc.pt (sha256 aa11)" and after != before
