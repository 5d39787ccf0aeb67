"""The one door to MLflow: every run, artifact, logged model and registry call the use cases make goes
through a `Tracking` built from the command's tracking and registry URIs, so no call depends on what the
process-wide MLflow settings or the environment happen to say (where MLflow offers nothing but those,
see tracking.process).

The raw client (`Tracking.client`) is for the modules of simclr_s2.tracking and for tests; the stages, the
cluster and the front door use the methods (tests/tracking/test_one_door.py holds them to it)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlflow.entities import FileInfo, Run, RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from simclr_s2.settings.mlflow_store import StoreClient, store_client, store_uris
from simclr_s2.tracking import endings, versions
from simclr_s2.tracking.endings import ERROR_TAG
from simclr_s2.tracking.names import CLASSIFIER_MODEL

if TYPE_CHECKING:
    import numpy as np
    import torch

    from simclr_s2.bigearthnet.bands import Bands
    from simclr_s2.settings.context import Context
    from simclr_s2.tracking.registry import ModelRef, Pretrained, T

PARENT_TAG = "mlflow.parentRunId"
TrackingError = MlflowException  # what a call through the door raises when the store refuses or fails


class Tracking:
    """Runs, artifacts, logged models and the registry of one tracking store (and its registry)."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri, self.registry_uri = tracking_uri, registry_uri or tracking_uri

    @classmethod
    def of(cls, ctx: Context) -> Tracking:
        """The door of a command's context (its client is the process's one for that store: store_client)."""
        return cls(ctx.tracking_uri, ctx.registry_uri)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tracking:
        """The door of the store MLflow's own variables name (MLflow's default when unset), with no context
        built: to end the launcher's run when building the context is what failed."""
        return cls(*store_uris(env))

    @cached_property
    def client(self) -> StoreClient:
        return store_client(self.tracking_uri, self.registry_uri)

    # Runs: opened, continued by id, ended with the reason.

    def open(self, experiment_id: str, name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
        """A new RUNNING run with `tags` (a child of `parent_run_id` when given, in the same call); its id."""
        parent = {PARENT_TAG: parent_run_id} if parent_run_id else {}
        return self.client.create_run(experiment_id, run_name=name, tags={**parent, **tags}).info.run_id

    def get_run(self, run_id: str) -> Run:
        return self.client.get_run(run_id)

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def set_tag(self, run_id: str, key: str, value: object) -> None:
        self.client.set_tag(run_id, key, str(value))

    def end(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """End `run_id` as `status` (FINISHED, FAILED, KILLED), writing `reason` in its error tag first."""
        if reason is not None:
            self.client.set_tag(run_id, ERROR_TAG, reason)
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.from_string(status)))

    def delete_run(self, run_id: str) -> None:
        """To MLflow's trash: a run that holds nothing to keep."""
        self.client.delete_run(run_id)

    def fail_if_running(self, run_id: str, reason: str, tags: Mapping[str, str] | None = None) -> bool:
        return endings.fail_if_running(self.client, run_id, reason, tags)

    def mark_dry_run(self, run_id: str, tags: Mapping[str, str]) -> None:
        endings.mark_dry_run(self.client, run_id, tags)

    def remove_empty_checkpoint_folders(self, folder: Path) -> None:
        endings.remove_empty_checkpoint_folders(self.client, folder)

    # Artifacts.

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        return self.client.download_artifacts(run_id, path, dst)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        return self.client.list_artifacts(run_id, path)

    # Logged models and the registry.

    def log_and_register(self, run_id: str, model: torch.nn.Module, registered_name: str, example: np.ndarray,
                         tags: Mapping[str, object], **options: Any) -> str:
        """registry.log_and_register, in this store and registry."""
        return _registry().log_and_register(self.client, run_id, model, registered_name, example, tags, **options)

    def load_logged(self, uri: str, kind: type[T], what: str) -> tuple[T, ModelRef]:
        return _registry().load_logged(self.client, uri, kind, what)

    def load_pretrained(self, spec: str, bands: Bands | None = None) -> Pretrained:
        return _registry().load_pretrained(self.client, spec, bands)

    def resolve_model_uri(self, uri: str, what: str = "pretrained") -> ModelRef:
        return _registry().resolve_model_uri(self.client, uri, what)

    def encoder_ref(self, uri: str, what: str = "pretrained") -> ModelRef:
        return _registry().encoder_ref(self.client, uri, what)

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        return self.client.get_model_version(name, version)

    def validation_threshold(self, ref: ModelRef) -> tuple[float, str]:
        # imported here: thresholds reads the tracker's tags, and the tracker imports this module
        from simclr_s2.tracking import thresholds

        return thresholds.validation_threshold(self.client, ref)

    def search_versions(self, scheme: str, **filters: Any) -> list[versions.VersionRecord]:
        return versions.search_versions(self.client, scheme, **filters)

    def alias_version(self, alias: str, model: str = CLASSIFIER_MODEL) -> str | None:
        return versions.alias_version(self.client, alias, model)

    def move_alias(self, version: str, alias: str, tags: Mapping[str, str], **options: Any) -> None:
        versions.move_alias(self.client, version, alias, tags, **options)


def _registry() -> ModuleType:
    """simclr_s2.tracking.registry, imported where a model is logged or loaded: it brings torch and
    torchvision (about 2 CPU-s), which ending, tagging or searching runs (a refused parameter under `mlflow
    run`) does not need."""
    from simclr_s2.tracking import registry

    return registry
