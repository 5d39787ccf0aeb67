"""finetune and baseline are told apart by what their specs say, never by their class: a baseline's spec
answers a fine-tune's questions (no encoder to load, all of it trains, nothing cached or recalibrated),
and the run is named by its encoder source."""

from __future__ import annotations

from simclr_s2.bigearthnet.bands import Bands
from simclr_s2.hashing import sha256_file
from simclr_s2.learning.encoder_source import Scratch
from simclr_s2.settings import specs
from simclr_s2.settings.spec import build, fields_of
from simclr_s2.stages.classifier import BASELINE, ENCODER_DIGEST, FINETUNE, SPLIT_DIGEST, constant_note
from simclr_s2.study.promotion import VAL_NEAR_CONSTANT
from simclr_s2.study.splits import MANIFEST
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.registry import ModelRef
from simclr_s2.tracking.tracker import Step


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


def _key(spec: specs.Finetune, ctx) -> Step:
    return FINETUNE.step(spec, FINETUNE.resolve(spec, ctx, make=False))


def test_a_given_split_folder_and_an_alias_are_keyed_by_what_they_hold_now(ctx, tmp_path, monkeypatch) -> None:
    """create_splits writes over its out folder and an alias moves: a run keyed by the folder's path or the
    alias would be reused after either, trained on other patches or weights."""
    manifest = tmp_path / "basic" / MANIFEST
    manifest.parent.mkdir()
    manifest.write_text('{"seed": 0}')
    version = {"now": "7"}
    monkeypatch.setattr(Tracking, "encoder_ref", lambda self, uri, what="pretrained": ModelRef(
        f"models:/simclr-s2-encoder/{version['now']}", f"simclr-s2-encoder/{version['now']}", {}, None))
    spec = build(specs.Finetune, {"split": str(tmp_path), "pretrained": "models:/simclr-s2-encoder@ben"})
    first = _key(spec, ctx)
    assert first.resolved == {SPLIT_DIGEST: sha256_file(manifest), "pretrained": "models:/simclr-s2-encoder/7"}
    assert _key(spec, ctx).key == first.key
    manifest.write_text('{"seed": 1}')  # drawn again into the same folder
    redrawn = _key(spec, ctx)
    version["now"] = "8"  # the alias moved
    assert len({first.key, redrawn.key, _key(spec, ctx).key}) == 3
    pinned = build(specs.Finetune, {"split": "runs:/0123/splits", "pretrained": "models:/simclr-s2-encoder/8"})
    assert _key(pinned, ctx).resolved == {}  # a run's artifacts and a version never change


def test_an_encoder_file_is_keyed_by_what_it_holds_now(ctx, tmp_path) -> None:
    """A state-dict file written over with other weights: a run keyed by the file's path would be reused,
    trained on the old weights."""
    encoder = tmp_path / "enc.pt"
    encoder.write_bytes(b"weights 1")
    spec = build(specs.Finetune, {"split": "runs:/0123/splits", "pretrained": str(encoder)})
    first = _key(spec, ctx)
    assert first.resolved == {ENCODER_DIGEST: sha256_file(encoder)}
    assert _key(spec, ctx).key == first.key
    encoder.write_bytes(b"weights 2")
    assert _key(spec, ctx).key != first.key


def test_the_summary_line_says_when_the_model_predicts_one_class() -> None:
    """Its scores alone (test accuracy 0.5000) would not tell a reader the version is flagged."""
    assert constant_note({"near_constant": False, VAL_NEAR_CONSTANT: False}) == ""
    assert constant_note({"near_constant": True, VAL_NEAR_CONSTANT: False}) == (
        "; predicts one class, or nearly, on test (near_constant)")
    assert constant_note({"near_constant": True, VAL_NEAR_CONSTANT: True}) == (
        "; predicts one class, or nearly, on test (near_constant) and validation (val_near_constant)")
