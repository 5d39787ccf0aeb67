"""Loading a logged model downloads only what loading reads, and a process opens one client per store
(issue 23: evaluate copied the whole model folder, and every context made its own client)."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest
import torch

from simclr_s2.errors import UserError
from simclr_s2.learning.models import IrrigationClassifier, SimCLRModel
from simclr_s2.learning.serving import save_rebuildable
from simclr_s2.settings.mlflow_store import store_client
from simclr_s2.tracking.registry import load_logged

LEFT_BEHIND = ("input_example.json", "serving_input_example.json", "requirements.txt")


def _downloads(monkeypatch: pytest.MonkeyPatch, whole: bool = False) -> list[str]:
    """The artifact URIs load_logged downloads (their last part, or `whole`), recorded as it goes."""
    asked: list[str] = []
    download = mlflow.artifacts.download_artifacts

    def recorded(**options: str) -> str:
        asked.append(options["artifact_uri"] if whole else Path(options["artifact_uri"]).name)
        return download(**options)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", recorded)
    return asked


def _with_extras(folder: Path) -> str:
    for name in LEFT_BEHIND:
        (folder / name).write_text("{}")
    return str(folder)


def test_a_served_classifier_is_rebuilt_from_its_rebuild_files_alone(store, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", 3).eval()
    logged = tmp_path / "model"
    (logged / "extra_files").mkdir(parents=True)
    (logged / "data").mkdir()
    (logged / "data" / "model.pt2").write_bytes(b"not read")
    save_rebuildable(model, logged / "extra_files")
    asked = _downloads(monkeypatch)
    loaded, _ = load_logged(store_client(store), _with_extras(logged), IrrigationClassifier, "model_uri")
    assert asked == ["extra_files"]
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


def test_a_pickled_model_downloads_what_mlflow_loads_it_from(store, tmp_path, monkeypatch):
    """...and the process's import path is as it was: MLflow puts the model's code folder first on it, and
    that folder is removed after the load (a grid or tuning process loads many)."""
    model = torch.nn.Linear(3, 1)
    logged, code = tmp_path / "model", tmp_path / "code"
    code.mkdir()
    (code / "helpers.py").write_text("")
    mlflow.pytorch.save_model(model, str(logged), serialization_format="pickle", pip_requirements=[],
                              code_paths=[str(code)])
    asked, path = _downloads(monkeypatch), list(sys.path)
    loaded, _ = load_logged(store_client(store), _with_extras(logged), torch.nn.Linear, "pretrained")
    assert sorted(asked) == ["MLmodel", "code", "data"] and torch.equal(loaded.weight, model.weight)
    assert sys.path == path


def test_a_registered_version_is_downloaded_from_where_the_registry_keeps_it(store, tmp_path, monkeypatch):
    """Each part straight from the version's files: a models:/ URI per part would ask the registry each time."""
    model = torch.nn.Linear(3, 1)
    logged = tmp_path / "model"
    mlflow.pytorch.save_model(model, str(logged), serialization_format="pickle", pip_requirements=[])
    client = store_client(store)
    client.create_registered_model("registry-loading-linear")
    version = client.create_model_version("registry-loading-linear", str(logged)).version
    asked = _downloads(monkeypatch, whole=True)
    loaded, ref = load_logged(client, f"models:/registry-loading-linear/{version}", torch.nn.Linear, "pretrained")
    assert sorted(asked) == [f"{logged}/MLmodel", f"{logged}/data"] and ref.version.endswith(f"/{version}")
    assert torch.equal(loaded.weight, model.weight)


def test_one_client_per_store_and_it_names_its_registry(store, tmp_path):
    other = f"sqlite:///{tmp_path}/registry.db"
    assert store_client(store) is store_client(store, store)
    assert store_client(store, other).registry_uri == other and store_client(store).registry_uri == store


def test_a_model_of_the_other_kind_is_named_in_the_registrys_words(store, tmp_path):
    """evaluate model_uri=models:/simclr-s2-encoder@ben said 'is a SimCLRModel, expected a IrrigationClassifier'."""
    (tmp_path / "model" / "extra_files").mkdir(parents=True)
    save_rebuildable(IrrigationClassifier.from_scratch("resnet18", 3), tmp_path / "model" / "extra_files")
    with pytest.raises(UserError, match=r"^pretrained: .*model is a classifier \(simclr-s2-irrigation\), expected "
                                        r"an encoder \(simclr-s2-encoder\)$"):
        load_logged(store_client(store), str(tmp_path / "model"), SimCLRModel, "pretrained")


def test_a_model_path_that_does_not_exist_says_so(store, tmp_path):
    """evaluate model_uri=/nonexistent said: cannot load /nonexistent: No such artifact: 'MLmodel'."""
    with pytest.raises(UserError, match=rf"^model_uri: {tmp_path / 'nowhere'} does not exist; expected models:/"):
        load_logged(store_client(store), str(tmp_path / "nowhere"), IrrigationClassifier, "model_uri")


def test_a_uri_of_a_store_this_project_does_not_name_is_not_called_missing(store):
    """gs://, wasbs://, hdfs:// are MLflow's to read: such a model is not said not to exist (it was, as a path)."""
    with pytest.raises(UserError, match=r"^model_uri: cannot load gs://bucket/model: "):
        load_logged(store_client(store), "gs://bucket/model", IrrigationClassifier, "model_uri")
