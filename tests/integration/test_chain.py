"""The `auto` chain behind `mlflow run . -e finetune`: every step is its own run with its params, metrics,
artifacts and dataset inputs, and a rerun reuses them instead of recomputing."""

import pandas as pd
import pytest

from simclr_s2.tracking.registry import ENCODER_MODEL

pytestmark = pytest.mark.integration


def test_every_step_ran_once_and_finished(project, demo):
    stages = [r.data.tags.get("stage") for r in project.runs()]
    assert sorted(stages) == sorted(["make_demo_data", "build_index", "create_splits", "create_splits",
                                     "pretrain", "finetune"])
    assert all(r.info.status == "FINISHED" for r in project.runs())


def test_demo_data_and_index_runs(project, demo):
    data = project.latest("make_demo_data")
    assert data.data.params["n_patches"] == "240"
    index = project.latest("build_index")
    metrics = index.data.metrics
    assert metrics["patches_indexed"] + metrics["patches_rejected"] == 240
    assert metrics["patches_per_second"] > 0
    files = {f.path for f in project.client.list_artifacts(index.info.run_id, "index")}
    assert files == {"index/index.parquet", "index/index.rejected.parquet"}
    (dataset,) = index.inputs.dataset_inputs
    assert dataset.dataset.name == "bigearthnet-index" and len(dataset.dataset.digest) > 8
    path = project.client.download_artifacts(index.info.run_id, "index/index.parquet")
    assert len(pd.read_parquet(path)) == metrics["patches_indexed"]


def test_split_runs_log_sets_as_datasets(project, demo):
    splits = project.latest("create_splits", scheme="basic")
    names = {d.dataset.name for d in splits.inputs.dataset_inputs}
    assert {"basic/train_001pct", "basic/val_100pct", "basic/test"} <= names
    files = {f.path.rsplit("/", 1)[-1] for f in project.client.list_artifacts(splits.info.run_id, "splits/basic")}
    assert {"manifest.json", "source.json", "test.csv", "train_100pct.csv"} <= files
    assert splits.data.metrics["train_100pct_count"] == 2 * splits.data.metrics["train_100pct_positives"]


def test_pretrain_registers_an_encoder_with_its_alias(project, demo):
    pretrain = project.latest("pretrain")
    assert pretrain.data.params["excluded_test_patches"] != "0"
    assert len(project.client.get_metric_history(pretrain.info.run_id, "loss")) > 0
    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "ben")
    assert version.run_id == pretrain.info.run_id
    assert {"arch", "bands", "data_digest", "optimizer", "epochs"} <= set(version.tags)
    assert version.tags["epochs"] == "1"


def test_rerun_reuses_every_finished_step(project, demo):
    before = {r.info.run_id for r in project.runs()}
    project.run("finetune", epochs=3)
    new = [r for r in project.runs() if r.info.run_id not in before]
    assert [r.data.tags["stage"] for r in new] == ["finetune"]


def test_import_encoder_registers_a_state_dict(project, demo, tmp_path):
    import torch

    from simclr_s2.models import build_simclr

    torch.manual_seed(0)
    model = build_simclr("resnet18", 10)
    torch.save(model.state_dict(), tmp_path / "encoder.pt")
    project.run("import_encoder", state_dict=tmp_path / "encoder.pt", name="imported", arch="resnet18")
    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "imported")
    assert version.tags["arch"] == "resnet18" and version.tags["stage"] == "import_encoder"

    done = project.run("import_encoder", check=False, state_dict=tmp_path / "encoder.pt", name="wrong",
                       arch="resnet50")
    assert done.returncode != 0
    (line,) = [s for s in done.stderr.splitlines() if s.startswith("error: ")]
    assert "does not fit resnet50" in line and "missing keys" in line


def test_the_registered_encoder_gives_the_trained_features(project, demo, monkeypatch):
    import mlflow
    import torch

    from simclr_s2.models import build_simclr

    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "ben")
    checkpoint = torch.load(project.client.download_artifacts(version.run_id, "checkpoints/pretrain.pt"),
                            map_location="cpu", weights_only=True)
    trained = build_simclr("resnet18", 10)
    trained.load_state_dict(checkpoint["model"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.env["MLFLOW_TRACKING_URI"])  # not global: later tests
    registered = mlflow.pytorch.load_model(f"models:/{ENCODER_MODEL}@ben")
    x = torch.randn(4, 10, 120, 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(registered.eval()(x), trained.eval()(x))
        torch.testing.assert_close(registered.encoder(x), trained.encoder(x))
