"""The registered classifier serves itself: `mlflow models serve` as a real process, with pickle and model
code refused, answers a patch of archive DN with the probability the evaluate path gives it; the package
rebuilds the trainable classifier from the same version without pickle."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from ports import claimed_port
from project_runner import BIN

from simclr_s2.bigearthnet.bands import STUDY_BANDS, InputTransform
from simclr_s2.bigearthnet.reader import patch_dir, read_pixels
from simclr_s2.learning.datasets import BatchLoader, PatchDataset
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.learning.serving import DN_EXPECTED
from simclr_s2.learning.train import predict
from simclr_s2.tracking.names import CLASSIFIER_MODEL
from simclr_s2.tracking.process import fluent_uris
from simclr_s2.tracking.registry import load_logged, log_and_register

REBEN = Path(__file__).parents[1] / "bigearthnet" / "fixtures" / "reben-sample"
# MLflow 3.17 reads the second (a pt2 archive loads only once found free of pickle); later MLflow the first too
NO_CODE = {"MLFLOW_ALLOW_MODEL_CODE_EXECUTION": "false", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
CHAMPION = f"models:/{CLASSIFIER_MODEL}@champion"  # the alias the classifier fixture sets
START_DEADLINE_S = 300  # importing torch and MLflow on a loaded 2-core machine can take a minute


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _wait_until_up(server: subprocess.Popen, url: str) -> None:
    """Poll /ping until it answers; fail at once if the server exits, or after a generous deadline."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow models serve exited with {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer {url} within {START_DEADLINE_S} s")


# Imported first by every Python process that has its folder on PYTHONPATH: simclr_s2 cannot be imported there
NO_PACKAGE = """import sys


class NoPackage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "simclr_s2":
            raise ImportError(f"{name}: the served model must not need it")


sys.meta_path.insert(0, NoPackage())
"""


def without_the_package(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` for a process where simclr_s2 cannot be imported, installed in the venv or not: the claim that a
    served model needs nothing of this package."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(NO_PACKAGE)
    return {**env, "PYTHONPATH": str(folder)}


def test_the_served_classifier_answers_a_patch_of_dn_as_evaluate_does(project, classifier, tmp_path):
    """...in a server where simclr_s2 cannot be imported."""
    patch = next((REBEN / "BigEarthNet-S2").glob("*/*"))
    model, _ = load_logged(project.client, classifier, IrrigationClassifier, "model")
    _, evaluated, _ = predict(model, BatchLoader(PatchDataset(REBEN, [patch.name], [0.0], STUDY_BANDS), 1))
    dn = read_pixels(patch_dir(REBEN, patch.name), STUDY_BANDS, normalised=False)[None]
    with claimed_port() as port, open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", CHAMPION,
                                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                  env=without_the_package({**project.process_env(), **NO_CODE}, tmp_path / "site"),
                                  stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            _wait_until_up(server, f"http://127.0.0.1:{port}/ping")
            answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": dn.tolist()})
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    assert abs(answer["predictions"][0] - float(evaluated[0])) < 1e-5, (tmp_path / "serve.log").read_text()[-2000:]


def test_the_registered_classifier_holds_no_pickle_and_rebuilds_trainable(project, classifier, monkeypatch, tmp_path):
    for key, value in NO_CODE.items():
        monkeypatch.setenv(key, value)
    uri = project.env["MLFLOW_TRACKING_URI"]
    with fluent_uris(uri, uri):  # MLflow's own functions, as a user calls them
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=classifier, dst_path=str(tmp_path)))
        info = mlflow.models.get_model_info(classifier)
        served = mlflow.pytorch.load_model(classifier)  # the exported graph, loaded with pickle refused
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"data/model.pt2", "extra_files/weights.safetensors", "extra_files/architecture.json"} <= files
    assert not [f for f in files if f.endswith((".pth", ".pkl")) or f.startswith("code/")]
    assert (folder / "requirements.txt").read_text().split() == [f"torch=={torch.__version__.split('+')[0]}",
                                                                "numpy", "mlflow"]  # the torch that wrote it
    assert info.metadata["bands"] == list(STUDY_BANDS) and info.metadata["scaling"] == "bigearthnet-zscore"
    model, _ = load_logged(project.client, classifier, IrrigationClassifier, "model")
    assert all(p.requires_grad for p in model.encoder.parameters())
    dn = np.random.default_rng(0).integers(0, 5000, (3, len(STUDY_BANDS), 120, 120)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(InputTransform(STUDY_BANDS)(dn))))
        torch.testing.assert_close(served(torch.from_numpy(dn)), expected, atol=1e-5, rtol=0)
        for spoiled in (np.nan, np.inf):  # no data left as NaN: refused, not answered with NaN (not JSON)
            with pytest.raises(RuntimeError, match=re.escape(DN_EXPECTED)):
                served(torch.from_numpy(np.where(dn == dn.flat[0], spoiled, dn).astype(np.float32)))



def test_a_classifier_without_its_band_list_is_not_registered():
    model = IrrigationClassifier.from_scratch("resnet18", len(STUDY_BANDS))
    example = np.zeros((2, len(STUDY_BANDS), 120, 120), np.float32)
    with pytest.raises(ValueError, match="registered with its band list"):  # before the store is asked
        log_and_register(None, "no-run", model, CLASSIFIER_MODEL, example, {"scaling": "bigearthnet-zscore"})
