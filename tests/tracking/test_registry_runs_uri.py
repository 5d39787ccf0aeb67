"""An encoder given as a run's model (runs:/<id>/model) is the version that run registered: the same scaling,
bands and pretraining membership as by its models:/ URI, never a z-score and a band order guessed from the
channel count with the leakage guard left nothing to check."""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from simclr_s2.errors import UserError
from simclr_s2.learning.imported_weights import TORCHGEO_S2_BANDS, TORCHGEO_S2_SCALING, import_encoder_state
from simclr_s2.learning.models import Encoder
from simclr_s2.settings.mlflow_store import store_client
from simclr_s2.stages import leakage
from simclr_s2.study import membership
from simclr_s2.tracking.names import ENCODER_MODEL
from simclr_s2.tracking.registry import (
    BAND_LIST_TAG,
    SCALING_TAG,
    encoder_ref,
    encoder_uri,
    load_pretrained,
    log_and_register,
    resolve_model_uri,
)


@pytest.fixture(scope="module")
def imported(store: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A torchgeo-style encoder registered as import_encoder registers one, in a run that also recorded a
    pretraining membership: (run id, its version's models:/ URI)."""
    client, folder = store_client(store), tmp_path_factory.mktemp("runs-uri")
    run = client.create_run(client.create_experiment(f"runs-uri-{uuid.uuid4().hex[:8]}", str(folder / "artifacts")))
    run_id = run.info.run_id
    footprints = membership.save(membership.Membership.of(np.array([[32633, 300_000, 5_000_000]])),
                                folder / Path(leakage.ARTIFACT).name)
    client.log_artifact(run_id, str(footprints), str(Path(leakage.ARTIFACT).parent))
    torch.manual_seed(0)
    encoder = import_encoder_state(Encoder("resnet18", len(TORCHGEO_S2_BANDS)).state_dict(), None)
    name = f"runs-uri-encoder-{uuid.uuid4().hex[:8]}"
    example = torch.randn(2, len(encoder.bands), 120, 120).numpy()
    version = log_and_register(client, run_id, encoder.model, name, example,
                               {BAND_LIST_TAG: encoder.bands.text, SCALING_TAG: encoder.scaling,
                                leakage.DIGEST_TAG: "d"})
    client.set_terminated(run_id)
    return run_id, f"models:/{name}/{version}"


def test_a_runs_uri_is_the_version_its_run_registered(store, imported):
    run_id, registered = imported
    client = store_client(store)
    by_run, by_version = load_pretrained(client, f"runs:/{run_id}/model"), load_pretrained(client, registered)
    assert (by_run.scaling, by_run.bands, by_run.version, by_run.run_id) == \
        (TORCHGEO_S2_SCALING, by_version.bands, registered.removeprefix("models:/"), run_id)
    assert by_run.tags == by_version.tags and by_run.provenance()["pretrained_uri"] == f"runs:/{run_id}/model"
    seen = leakage.encoder_membership(client, dict(by_run.tags), by_run.run_id)
    assert isinstance(seen, membership.Membership)  # the guard checks it, as by models:/


def test_a_runs_uri_its_run_registered_nothing_from_is_refused(store, imported):
    run_id, _ = imported
    client = store_client(store)
    unregistered = client.create_run(client.get_run(run_id).info.experiment_id).info.run_id
    for uri in (f"runs:/{run_id}/other", f"runs:/{unregistered}/model", f"runs:/{run_id}"):  # the last: no path
        with pytest.raises(UserError, match=rf"^pretrained: {uri} is no registered model version \(its run "
                                            r"registered none from that path\); use models:/<name>/<version>$"):
            load_pretrained(client, uri)


def test_a_runs_uri_is_never_a_version_still_registering(store, imported):
    """A newer version of the same model of the run, whose registration has not finished (a remote registry can
    hold one: its status set in the store here), is not the one the URI is read as."""
    run_id, registered = imported
    client = store_client(store)
    name, version = registered.removeprefix("models:/").split("/")
    real = client.get_model_version(name, version)
    pending = client.create_model_version(name, client.get_model_version_download_uri(name, version), run_id)
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE model_versions SET status = 'PENDING_REGISTRATION', source = ? "
                   "WHERE name = ? AND version = ?", (real.source, name, pending.version))
    assert resolve_model_uri(client, f"runs:/{run_id}/model").version == f"{name}/{version}"


def test_a_logged_models_folder_or_artifact_uri_is_refused(store, imported, tmp_path):
    """The files of a registered DN / 10,000 encoder, given as their folder (or its file:// URI, or the logged
    model's own models:/m-<id>), record no scaling or bands: refused in one line, never fed z-scores."""
    client = store_client(store)
    name, version = imported[1].removeprefix("models:/").split("/")
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(name, version), dst_path=str(tmp_path))
    logged = client.get_model_version(name, version).source
    for uri in (folder, Path(folder).as_uri(), logged):
        with pytest.raises(UserError, match=rf"^pretrained: {re.escape(uri)} is no registered model version \(a "
                                            r"logged model's folder or artifact URI records neither its bands nor "
                                            r"its input scaling\); use models:/<name>/<version>$"):
            load_pretrained(client, uri)


def test_a_bare_alias_names_the_encoder_model_and_a_file_of_that_name_is_the_file(store, imported, tmp_path,
                                                                                    monkeypatch, ctx):
    """finetune pretrained=<alias> reads models:/simclr-s2-encoder@<alias> (as main's encoders do), pinned to the
    version it names; a file of that name in the working folder stays a file."""
    from simclr_s2.stages.classifier import pinned_alias

    client = store_client(store)
    name, version = imported[1].removeprefix("models:/").split("/")
    real = client.get_model_version(name, version)
    if not client.search_registered_models(f"name = '{ENCODER_MODEL}'"):
        client.create_registered_model(ENCODER_MODEL)
    mv = client.create_model_version(ENCODER_MODEL, client.get_model_version_download_uri(name, version),
                                     real.run_id, tags=real.tags)
    alias = f"bare-{uuid.uuid4().hex[:8]}"
    client.set_registered_model_alias(ENCODER_MODEL, alias, mv.version)
    monkeypatch.chdir(tmp_path)
    (tmp_path / alias).mkdir()  # a folder of that name (downloaded weights kept there) is no state dict
    loaded = load_pretrained(client, alias)
    assert (loaded.version, loaded.scaling, loaded.name) == (f"{ENCODER_MODEL}/{mv.version}", TORCHGEO_S2_SCALING,
                                                             alias)
    assert pinned_alias(alias, ctx) == f"models:/{ENCODER_MODEL}/{mv.version}"  # a finetune's key pins it
    with pytest.raises(UserError, match=rf"^pretrained: models:/{ENCODER_MODEL}@no-{alias} not found in the model "
                                        r"registry \("):
        load_pretrained(client, f"no-{alias}")
    (tmp_path / alias).rmdir()
    torch.save(Encoder("resnet18", 13).state_dict(), tmp_path / alias)  # a timm-layout state dict
    assert encoder_uri(alias) == alias and load_pretrained(client, alias).version == ""


def test_models_latest_is_the_newest_ready_version_and_a_stage_is_refused_in_one_line(store, ctx):
    """models:/<name>/latest, which MLflow's own loaders and `mlflow models serve` take, is the newest version
    ready to read (pinned, with its tags; a finetune's key pins it, as an alias: it moves), not "version
    'latest' not found"; a stage name gets one line naming the forms taken."""
    from simclr_s2.stages.classifier import pinned_alias

    client, name = store_client(store), f"latest-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for seed in range(3):
        client.create_model_version(name, "file:///nowhere", tags={"seed": str(seed)})
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:  # the newest one still registering
        db.execute("UPDATE model_versions SET status = 'PENDING_REGISTRATION' WHERE name = ? AND version = 3",
                   (name,))
    ref = resolve_model_uri(client, f"models:/{name}/latest", "model_uri")
    assert (ref.uri, ref.version, ref.tags["seed"]) == (f"models:/{name}/2", f"{name}/2", "1")
    assert pinned_alias(f"models:/{name}/latest", ctx) == f"models:/{name}/2"
    assert resolve_model_uri(client, f"models:/{name}/Latest", "model_uri").uri == f"models:/{name}/2"  # any case
    assert pinned_alias(f"models:/{name}/LATEST", ctx) == f"models:/{name}/2"
    with pytest.raises(UserError, match=rf"^model_uri: models:/{name}/Production: expected a version number, "
                                        r"latest or @<alias> after the model's name$"):
        resolve_model_uri(client, f"models:/{name}/Production", "model_uri")


def test_a_classifier_given_for_an_encoder_is_refused_by_its_version(store, imported):
    """main encoders=models:/simclr-s2-irrigation/1 passed its dry run (no weights read there): every cell
    would have failed."""
    client = store_client(store)
    name, version = imported[1].removeprefix("models:/").split("/")
    classifier = client.create_model_version(name, client.get_model_version_download_uri(name, version),
                                             imported[0], tags={"stage": "finetune"})
    with pytest.raises(UserError, match=rf"^encoders: models:/{name}/{classifier.version} is a classifier "
                                        r"\(simclr-s2-irrigation\), expected an encoder \(simclr-s2-encoder\)$"):
        encoder_ref(client, f"models:/{name}/{classifier.version}", "encoders")
