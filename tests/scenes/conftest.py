"""One tiny registered classifier in a temporary tracking store, for the scenes tests (the scenes themselves:
scene_files.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from project_runner import Project, project_env

from simclr_s2.bigearthnet.bands import STUDY_BANDS
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.tracking.names import CLASSIFIER_MODEL
from simclr_s2.tracking.registry import BAND_LIST_TAG, SCALING_TAG, log_and_register


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("scenes-project")
    return Project(root, project_env(root))


@pytest.fixture(scope="session")
def classifier(project: Project) -> str:
    """models:/ URI of a registered classifier of the study's bands (a ResNet-18 of random weights whose
    output bias makes scores spread around 0.5: the maps need no skill, only the exact path)."""
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", len(STUDY_BANDS)).eval()
    example = np.random.default_rng(0).normal(size=(2, len(STUDY_BANDS), 120, 120)).astype(np.float32)
    client = project.client
    run_id = client.create_run(project.context().experiment_id, run_name="tiny-classifier").info.run_id
    version = log_and_register(client, run_id, model, CLASSIFIER_MODEL, example,
                               {BAND_LIST_TAG: ",".join(STUDY_BANDS), SCALING_TAG: "bigearthnet-zscore"},
                               aliases=("champion",))
    client.set_terminated(run_id)
    return f"models:/{CLASSIFIER_MODEL}/{version}"
