"""What registering a classifier hands MLflow (issue 23: every finetune, baseline and grid cell pays for its
registration): the version's tags in the call that makes the version, a signature taken without a forward
pass that still says what the served module gives, and an input example of whole DN. MLflow's log_model is
replaced by a recorder, so nothing is exported or stored here; tests/scenes/test_served_model registers and
serves a classifier for real."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from simclr_s2.bigearthnet.bands import STUDY_BANDS, InputTransform
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.tracking.registry import BAND_LIST_TAG, SCALING_TAG, log_and_register


class _Store:
    """The client calls log_and_register makes around log_model, recorded by name."""

    tracking_uri = registry_uri = "sqlite:///never-opened.db"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_run(self, run_id: str) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(experiment_id="1"), data=SimpleNamespace(params={}))

    def search_model_versions(self, *args: object) -> list:
        return []  # the run registered nothing yet

    def create_logged_model(self, *args: object, **options: object) -> SimpleNamespace:
        return SimpleNamespace(model_id="m-1")

    def __getattr__(self, name: str) -> object:
        return lambda *args, **options: self.calls.append(name)


@pytest.fixture(scope="module")
def registered() -> tuple[dict, _Store, np.ndarray, np.ndarray]:
    """log_model's arguments for a ResNet-18 classifier registered with 2 tags, the client calls around it,
    the DN the example inputs were made from and those inputs."""
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", len(STUDY_BANDS)).eval()
    dn = np.random.default_rng(0).integers(0, 5000, (2, len(STUDY_BANDS), 120, 120)).astype(np.float32)
    inputs = InputTransform(STUDY_BANDS)(dn)
    logged, store = {}, _Store()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importlib.import_module("mlflow.pytorch"), "log_model",  # not mlflow's lazy loader
                      lambda **options: logged.update(options) or SimpleNamespace(registered_model_version=3))
        version = log_and_register(store, "run", model, "classifier", inputs,
                                   {BAND_LIST_TAG: ",".join(STUDY_BANDS), SCALING_TAG: "bigearthnet-zscore", "seed": 0})
    assert version == "3"
    return logged, store, dn, inputs


def test_the_version_is_made_with_its_tags_in_one_call(registered):
    logged, store, _, _ = registered
    assert logged["registered_model_name"] == "classifier"
    assert logged["tags"] == {BAND_LIST_TAG: ",".join(STUDY_BANDS), SCALING_TAG: "bigearthnet-zscore", "seed": "0"}
    assert store.calls == ["set_tag"]  # the run's pointer to its version; no set_model_version_tag


def test_the_signature_says_what_the_served_module_gives_without_running_it(registered):
    logged, _, dn, _ = registered
    with torch.no_grad():
        output = logged["pytorch_model"](torch.from_numpy(dn))
    (inputs,), (outputs,) = logged["signature"].inputs.inputs, logged["signature"].outputs.inputs
    assert inputs.shape == (-1, *dn.shape[1:]) and outputs.shape == (-1, *output.shape[1:])


def test_the_input_example_is_the_dn_the_inputs_were_made_from(registered):
    logged, _, dn, _ = registered
    np.testing.assert_array_equal(logged["input_example"], dn)  # whole numbers: short JSON
