"""The `auto` chain behind `finetune`, finetune and baseline themselves, evaluate, and one clear line for
every bad input: stages run in-process exactly as their entry points run them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from simclr_s2.app.cli import main
from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.learning.checkpoints import read_tree
from simclr_s2.learning.models import build_simclr
from simclr_s2.settings.context import DEFAULT_EXPERIMENT
from simclr_s2.settings.specs import DEMO_INDEX
from simclr_s2.stages.classifier import BASELINE, FINETUNE
from simclr_s2.stages.evaluate import EVALUATE
from simclr_s2.stages.inputs import SOURCE
from simclr_s2.stages.pretrain import IMPORT_ENCODER, PRETRAIN
from simclr_s2.study.splits import create_splits
from simclr_s2.tracking.names import CLASSIFIER_MODEL, ENCODER_MODEL
from simclr_s2.tracking.process import fluent_uris
from simclr_s2.tracking.registry import ModelRef
from simclr_s2.tracking.thresholds import validation_threshold

CHAIN = ["make_demo_data", "build_index", "create_splits", "create_splits", "pretrain", "finetune"]


def _versions(project, model: str = CLASSIFIER_MODEL) -> list:
    return project.client.search_model_versions(f"name='{model}'")


def _chain(project, demo, stage: str | None = None, **tags: str) -> list:
    """The runs the demo chain made (of `stage`, with `tags`): from its archive's making, the newest
    `make_demo_data` before its finetune ended, to that end. Other files' tests may use the session's project
    before and after the chain, and make splits and indexes of their own."""
    end = demo.info.end_time
    start = next(r for r in project.runs("make_demo_data") if r.info.start_time <= end).info.start_time
    return [r for r in project.runs(stage, **tags) if start <= r.info.start_time <= end]


def test_every_step_ran_once_in_the_named_experiment(project, demo):
    runs = _chain(project, demo)
    assert sorted(r.data.tags["stage"] for r in runs) == sorted(CHAIN)
    assert all(r.info.status == "FINISHED" and r.data.tags["simclr_s2.complete"] == "true" for r in runs)
    experiment = project.client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert {r.info.experiment_id for r in runs} == {experiment.experiment_id}


def test_a_rerun_reuses_every_step_but_the_command_itself(project, demo):
    """What the chain reuses does not depend on the command registering its model (which is most of its CPU)."""
    before = {r.info.run_id for r in project.runs()}
    project.run_stage(FINETUNE, epochs=3, register="false")
    new = [r for r in project.runs() if r.info.run_id not in before]
    assert [r.data.tags["stage"] for r in new] == ["finetune"]


def test_finetune_logs_epochs_evaluation_and_registers_the_kept_epoch(project, demo):
    run = demo
    assert run.data.tags["mlflow.runName"] == "finetune-ben-basic-100pct-s0"
    assert {run.data.tags[k] for k in ("scheme", "fraction", "pretrained", "arch")} == {"basic", "100", "ben",
                                                                                      "resnet18"}
    params = run.data.params
    assert params["split"] == "auto" and params["resolved_split"].startswith("runs:/")
    assert params["pretrained"] == "auto" and params["resolved_pretrained"].startswith("models:/simclr-s2-encoder/")
    assert params["policy"] == "head2" and params["feature_cache_used"] == "True"
    assert sorted(m.step for m in project.client.get_metric_history(run.info.run_id, "val_auc")) == [0, 1, 2]
    for key in ("test_accuracy", "test_f1", "test_auc", "test_pr_auc", "test_tp", "best_val_f1"):
        assert math.isfinite(run.data.metrics[key])
    files = {f.path for f in project.client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert {f"evaluation/test/{n}" for n in ("confusion_matrix.png", "roc.png", "pr.png", "predictions.csv")} <= files
    assert {"training", "validation", "test"} <= {d.tags[0].value for d in run.inputs.dataset_inputs}
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{run.info.run_id}'")
    assert version.tags["pretrained"] == "ben" and version.tags["bands"].startswith("B04,B03")
    assert float(version.tags["test_f1"]) == pytest.approx(run.data.metrics["test_f1"], abs=1e-4)
    (output,) = run.outputs.model_outputs
    assert output.step == int(run.data.metrics["best_epoch"])


def test_the_registered_model_loads_and_predicts(project, demo, ctx):
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{demo.info.run_id}'")
    with fluent_uris(ctx.tracking_uri, ctx.registry_uri):  # MLflow's own loader, as a user calls it
        model = mlflow.pytorch.load_model(f"models:/{CLASSIFIER_MODEL}/{version.version}")
    assert model(torch.zeros(3, 10, 120, 120)).shape == (3,)


def test_the_registered_encoder_gives_the_trained_features(project, demo, ctx):
    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "ben")
    assert version.tags["band_list"] == "B04,B03,B02,B08,B05,B06,B07,B8A,B11,B12"
    checkpoint = read_tree(project.artifact(version.run_id, "checkpoints/pretrain.safetensors"))
    trained = build_simclr("resnet18", 10)
    trained.load_state_dict(checkpoint["model"])
    with fluent_uris(ctx.tracking_uri, ctx.registry_uri):
        registered = mlflow.pytorch.load_model(f"models:/{ENCODER_MODEL}@ben")
    x = torch.randn(4, 10, 120, 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(registered.eval()(x), trained.eval()(x))


def test_baseline_trains_everything_from_scratch(project, demo, split_uri):
    run_id = project.run_stage(BASELINE, split=split_uri(), fraction=50, epochs=2)
    run = project.client.get_run(run_id)
    assert run.data.tags["pretrained"] == "scratch" and run.data.params["policy"] == "all"
    assert run.data.params["frozen_weights"] == str(512 * 128 + 128)  # only the unused Dense 128 of the head
    assert len(project.client.get_metric_history(run_id, "val_loss")) == 2


def test_evaluate_reproduces_the_test_metrics_and_writes_nothing_else(project, demo, tmp_path):
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{demo.info.run_id}'")
    home = project.root / "home"
    files_before = sorted(p for p in home.rglob("*"))
    runs_before = len(project.runs())
    run_id = project.run_stage(EVALUATE, model_uri=f"models:/{CLASSIFIER_MODEL}/{version.version}")
    evaluation = project.client.get_run(run_id)
    for key in ("test_accuracy", "test_f1", "test_auc", "test_pr_auc"):
        assert evaluation.data.metrics[key] == pytest.approx(demo.data.metrics[key], abs=1e-6)
    assert len(project.runs()) == runs_before + 1
    assert sorted(p for p in home.rglob("*")) == files_before  # no packed store, no download cache
    # its own split, without natural sets: the threshold comes from balanced validation, reported only
    tags = evaluation.data.tags
    assert (tags["training_overlap"], tags["threshold_set"], tags["threshold_overlap"]) == ("0", "val_100pct.csv", "0")
    ref = ModelRef(f"models:/{CLASSIFIER_MODEL}/{version.version}", f"{CLASSIFIER_MODEL}/{version.version}",
                   dict(version.tags), version.run_id)
    assert "val_threshold" in evaluation.data.metrics and validation_threshold(project.client, ref)[0] == 0.5


def _fails(project, capsys, stage, *argv: str) -> str:
    """Run `stage` through its entry point boundary; the one error line it printed."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in project.env.items():
            mp.setenv(key, value)
        with pytest.raises(SystemExit) as ended:
            main(stage, list(argv))
    assert ended.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.parametrize(("argv", "message", "opened"), [
    (("--pretrained", "models:/simclr-s2-encoder@nope"), "not found in the model registry", True),
    (("--fraction", "7"), "fraction 7 not in the 'basic' splits", True),
    (("--split", "/nonexistent/splits"), "does not exist", True),
    (("--bands", "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09"), "band names and order must match", True),
    (("--lr", "1e30", "--feature-cache", "false", "--trainable", "all"), "training diverged", True),
    (("--lr", "-1"), "lr: expected a finite number > 0, got -1", False),
    (("--batch-size", "0"), "batch_size: expected a finite number > 0", False),
    (("--lr", "inf"), "lr: expected a finite number > 0", False),
])
def test_bad_input_is_one_line_a_failed_run_and_nothing_registered(project, demo, capsys, argv, message, opened):
    """A parameter refused while parsing opens no run (under `mlflow run` the launcher's run ends FAILED:
    tested end to end); anything found wrong later ends the run FAILED with the line as its reason."""
    versions, before = len(_versions(project)), {r.info.run_id for r in project.runs()}
    assert message in _fails(project, capsys, FINETUNE, "--epochs", "1", *argv)
    new = [r for r in project.runs() if r.info.run_id not in before]
    assert [(r.info.status, message in r.data.tags["simclr_s2.error"]) for r in new] == \
        ([("FAILED", True)] if opened else [])
    assert len(_versions(project)) == versions


@pytest.mark.parametrize("content", [b"not a pickle at all", "list"])
def test_a_file_that_is_no_state_dict_is_one_line(project, demo, capsys, tmp_path, content):
    path = tmp_path / "weights.pt"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    line = _fails(project, capsys, FINETUNE, "--pretrained", str(path), "--epochs", "1")
    assert line.startswith(f"error: pretrained: {path}")
    line = _fails(project, capsys, IMPORT_ENCODER, "--state-dict", str(path), "--name", "x", "--arch", "resnet18")
    assert "state_dict:" in line


def test_pretrain_refuses_a_nan_learning_rate(project, demo, capsys):
    assert "lr: expected a finite number > 0, got nan" in _fails(project, capsys, PRETRAIN, "--lr", "nan")


def test_an_unknown_tracking_uri_scheme_is_one_line(project, capsys, monkeypatch):
    monkeypatch.setitem(project.env, "MLFLOW_TRACKING_URI", "nosuchscheme://x")
    line = _fails(project, capsys, FINETUNE)
    assert "MLFLOW_TRACKING_URI" in line and "nosuchscheme://x" in line


def test_import_encoder_registers_a_state_dict_with_its_bands(project, demo, tmp_path):
    torch.manual_seed(0)
    torch.save(build_simclr("resnet18", 10).state_dict(), tmp_path / "encoder.pt")
    project.run_stage(IMPORT_ENCODER, state_dict=str(tmp_path / "encoder.pt"), name="imported", arch="resnet18")
    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "imported")
    assert version.tags["stage"] == "import_encoder" and version.tags["band_list"].startswith("B04")


def test_the_split_sets_are_logged_as_datasets(project, demo):
    (splits,) = _chain(project, demo, "create_splits", scheme="basic")
    names = {d.dataset.name for d in splits.inputs.dataset_inputs}
    assert {"basic/train_001pct", "basic/val_100pct", "basic/test"} <= names
    (index,) = _chain(project, demo, "build_index")
    assert len(pd.read_parquet(project.artifact(index.info.run_id, "index/index.parquet"))) == \
        index.data.metrics["patches_indexed"]


def test_import_encoder_takes_torchgeo_weights_and_records_their_scaling(project, demo, tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    net = resnet50()
    net.conv1 = torch.nn.Conv2d(13, 64, 7, 2, 3, bias=False)  # timm / torchgeo layout: 13 L1C bands
    torch.save(net.state_dict(), tmp_path / "ssl4eo.pth")
    project.run_stage(IMPORT_ENCODER, state_dict=str(tmp_path / "ssl4eo.pth"), name="ssl4eo")
    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "ssl4eo")
    assert (version.tags["arch"], version.tags["layout"], version.tags["scaling"]) == \
        ("resnet50", "timm", "reflectance/10000")
    assert "pretraining_digest" not in version.tags  # pretraining data unknown: fine-tunes record "unknown"


def test_a_custom_scheme_and_a_natural_prevalence_test_set(project, demo, tmp_path):
    """A custom scheme's splits are filed under custom_<hash>; the demo classifier (basic) is scored on a
    natural-prevalence test set of its own scheme, drawn apart from its split: its own training patches are
    read from its run's split and checked (allow_pretraining_overlap=true goes past what they share)."""
    from simclr_s2.stages.data import CREATE_SPLITS

    index = f"runs:/{project.latest('build_index').info.run_id}/index/index.parquet"
    run = project.client.get_run(project.run_stage(
        CREATE_SPLITS, index=index, scheme="Permanently irrigated land;Rice fields", fractions="100",
        natural_test="true", natural_share=0.2, out=str(tmp_path / "custom")))
    scheme = run.data.tags["scheme"]
    assert scheme.startswith("custom_") and (tmp_path / "custom" / scheme / "test_natural.csv").is_file()
    # drawn by the library, not as a run: the chain's other tests read the newest basic splits run as the demo's
    index_path = Path(project.env["SIMCLR_S2_DATA"]) / DEMO_INDEX / "index.parquet"
    create_splits(load_index(index_path), "basic", tmp_path, fractions=(100,), kind="spatial", natural_test=True,
                  natural_share=0.2, index_digest=index_digest(index_path))
    (tmp_path / "basic" / SOURCE).write_text(json.dumps({"index": str(index_path),
                                                         "archive_root": str(index_archive_root(index_path))}))
    natural = pd.read_csv(tmp_path / "basic" / "test_natural.csv")
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{demo.info.run_id}'")
    evaluated = project.client.get_run(project.run_stage(
        EVALUATE, model_uri=f"models:/{CLASSIFIER_MODEL}/{version.version}", split=str(tmp_path),
        set="test_natural", allow_pretraining_overlap="true"))
    metrics = evaluated.data.metrics
    assert {"test_natural_pr_auc", "test_natural_f1", "test_natural_valthr_f1", "val_threshold"} <= set(metrics)
    assert float(evaluated.data.tags["set_prevalence"]) == pytest.approx(natural["label"].mean(), abs=1e-4)
    assert evaluated.data.tags["training_overlap"] != "unknown"  # read from the split the demo run logged
    # the threshold comes from that split's natural validation set, guarded the same way
    assert evaluated.data.tags["threshold_set"] == "val_natural_100pct.csv"
    assert evaluated.data.tags["threshold_overlap"] != "unknown"
