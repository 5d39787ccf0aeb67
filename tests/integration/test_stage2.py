"""finetune, baseline and evaluate through `mlflow run`: tracking, registration, resume after a kill, and
one clear line for every bad input."""

import os
import signal
import subprocess
import time

import mlflow
import numpy as np
import pytest

from simclr_s2.tracking.registry import CLASSIFIER_MODEL

pytestmark = pytest.mark.integration


def test_finetune_tracks_epochs_evaluation_and_registers(project, demo, monkeypatch):
    run = demo
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.runName"] == "finetune-ben-basic-100pct-s0"
    assert {run.data.tags[k] for k in ("scheme", "fraction", "pretrained", "arch")} == {"basic", "100", "ben",
                                                                                      "resnet18"}
    params = run.data.params
    assert params["policy"] == "head2" and params["feature_cache_used"] == "True"
    assert int(params["trainable_weights"]) > 0 and int(params["frozen_weights"]) > int(params["trainable_weights"])
    assert params["pretrained_version"].startswith("simclr-s2-encoder/")
    history = project.client.get_metric_history(run.info.run_id, "val_auc")
    assert sorted(m.step for m in history) == [0, 1, 2]
    for key in ("test_accuracy", "test_f1", "test_auc", "test_pr_auc", "test_tp", "best_val_f1"):
        assert key in run.data.metrics
    evaluation = {f.path for f in project.client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert {f"evaluation/test/{n}" for n in ("confusion_matrix.png", "roc.png", "pr.png", "predictions.csv")} \
        <= evaluation
    contexts = {d.tags[0].value for d in run.inputs.dataset_inputs}
    assert {"training", "validation", "test"} <= contexts

    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{run.info.run_id}'")
    assert version.tags["stage"] == "finetune" and version.tags["pretrained"] == "ben"
    assert float(version.tags["test_f1"]) == pytest.approx(run.data.metrics["test_f1"], abs=1e-4)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.env["MLFLOW_TRACKING_URI"])  # not global: later tests
    model = mlflow.pytorch.load_model(f"models:/{CLASSIFIER_MODEL}/{version.version}")
    assert model(__import__("torch").zeros(3, 10, 120, 120)).shape == (3,)


def test_evaluate_reproduces_the_finetune_test_metrics(project, demo, split_uri):
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{demo.info.run_id}'")
    project.run("evaluate", model_uri=f"models:/{CLASSIFIER_MODEL}/{version.version}", split=split_uri("basic"))
    evaluation = project.latest("evaluate")
    for key in ("test_accuracy", "test_f1", "test_auc", "test_pr_auc"):
        assert evaluation.data.metrics[key] == pytest.approx(demo.data.metrics[key], abs=1e-6)


def test_baseline_trains_everything_from_scratch(project, split_uri):
    project.run("baseline", split=split_uri("basic"), fraction=50, epochs=2)
    run = project.latest("baseline")
    assert run.data.tags["pretrained"] == "scratch" and run.data.params["policy"] == "all"
    assert run.data.params["frozen_weights"] == str(512 * 128 + 128)  # only the unused Dense 128 of the head
    assert len(project.client.get_metric_history(run.info.run_id, "val_loss")) == 2
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{run.info.run_id}'")
    assert version.tags["stage"] == "baseline"


@pytest.mark.parametrize(("params", "message"), [
    ({"pretrained": "models:/simclr-s2-encoder@nope"}, "not found in the model registry"),
    ({"fraction": 7}, "fraction 7 not in the 'basic' splits"),
    ({"split": "/nonexistent/splits"}, "does not exist"),
    ({"lr": -1}, "lr"),
    ({"batch_size": 0}, "batch-size"),
    ({"bands": "all"}, "expects 10 bands, data has 12"),
])
def test_bad_input_is_one_line_and_a_failed_run(project, demo, params, message):
    versions_before = len(project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}'"))
    done = project.run("finetune", check=False, epochs=1, **params)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    run = project.runs()[0]  # the run `mlflow run` made for this attempt
    assert run.info.status == "FAILED"
    assert message in run.data.tags.get("simclr_s2.error", "")
    assert len(project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}'")) == versions_before


def test_a_killed_finetune_resumes_in_one_run_without_repeating_steps(project, demo, split_uri):
    params = {"split": split_uri("basic"), "fraction": 100, "epochs": 5, "feature_cache": "false", "seed": 7,
              "register": "false"}
    first = subprocess.Popen(project.command("finetune", **params), env=project.env, cwd=project.root, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    killed_run = None
    while time.time() < deadline:
        runs = project.runs("finetune", seed="7")
        if runs and len(project.client.get_metric_history(runs[0].info.run_id, "val_auc")) >= 2:
            killed_run = runs[0].info.run_id
            os.killpg(first.pid, signal.SIGKILL)
            break
        time.sleep(0.5)
    first.wait()
    assert killed_run, "the first run never reached its second epoch"
    steps_before = len(project.client.get_metric_history(killed_run, "val_auc"))
    assert steps_before < 5

    project.run("finetune", **params)
    (resumed,) = project.runs("finetune", seed="7")
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["simclr_s2.resumed_from"] == killed_run
    steps = sorted(m.step for m in project.client.get_metric_history(resumed.info.run_id, "val_auc"))
    assert steps == [0, 1, 2, 3, 4]
    assert project.client.get_run(killed_run).info.lifecycle_stage == "deleted"
    assert np.isfinite(resumed.data.metrics["test_f1"])
