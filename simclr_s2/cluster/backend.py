"""MLflow's project backend `ray` (entry point group `mlflow.project_backend` in pyproject.toml):

    mlflow run . -e finetune --backend ray --backend-config ray.json

submits any entry point to a Ray cluster as one task: the project folder travels as the job's
working_dir (Ray's packaging, .gitignore'd files left out), the entry point's MLproject command runs
there in the node's Python environment, in the run MLflow made for it, and its output comes back line by
line. (A process already connected to Ray, e.g. a notebook calling mlflow.projects.run, cannot ship a
folder: its nodes must see the project at the same path.) Followed (the default), `mlflow run` behaves as
with the local backend: it prints the output, ends the run when the command could not, and exits 1 when
the command failed. ray.json holds any of:

    {"address": "auto", "num_cpus": 1, "num_gpus": 0, "max_retries": 2, "follow": true}

`address` as the `ray_address` parameter (auto, local, host:port, ray://host:port); `max_retries`: how
often Ray starts the command again when its worker or node died (it continues the same run from its
checkpoint); `follow: false` returns at once (the Python API's `synchronous=False`): the submitted run
then lives as long as this process.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from mlflow.entities import RunStatus
from mlflow.exceptions import ExecutionException
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (
    MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG,
    PROJECT_BUILD_IMAGE,
    PROJECT_DOCKER_ARGS,
    PROJECT_DOCKER_AUTH,
    PROJECT_ENV_MANAGER,
    PROJECT_STORAGE_DIR,
    PROJECT_SYNCHRONOUS,
    fetch_and_validate_project,
    get_entry_point_command,
    get_or_create_run,
    load_project,
)
from ray.exceptions import RayError

from simclr_s2.cluster import command as remote_command
from simclr_s2.cluster.connection import join
from simclr_s2.cluster.environment import handed_over
from simclr_s2.errors import UserError
from simclr_s2.tracking.door import Tracking

log = logging.getLogger(__name__)

# what MLflow itself adds to the config
MLFLOW_KEYS = (MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG, PROJECT_BUILD_IMAGE, PROJECT_DOCKER_ARGS,
               PROJECT_DOCKER_AUTH, PROJECT_ENV_MANAGER, PROJECT_STORAGE_DIR, PROJECT_SYNCHRONOUS)


@dataclass(frozen=True)
class RayConfig:
    """The backend config (ray.json)."""

    address: str = "auto"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2
    follow: bool = True

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> RayConfig:
        ours = {k: v for k, v in config.items() if k not in MLFLOW_KEYS}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(ours) - set(names))
        if unknown:
            raise ExecutionException(f"ray backend config: no key {', '.join(unknown)}; "
                                     f"it takes {', '.join(names)}")
        kinds = {"address": str, "num_cpus": (int, float), "num_gpus": (int, float), "max_retries": int,
                 "follow": bool}
        for key, value in ours.items():
            bad = not isinstance(value, kinds[key]) or (key != "follow" and isinstance(value, bool))
            # JSON's NaN and Infinity parse as floats: Ray would refuse them only after MLflow made the run
            if bad or (isinstance(value, int | float) and not isinstance(value, bool)
                       and not (math.isfinite(value) and value >= 0)):
                raise ExecutionException(f"ray backend config: {key} must be {_kind(kinds[key])}, "
                                         f"got {value!r}")
        return cls(**ours)


def _kind(kind: type | tuple[type, ...]) -> str:
    return {str: "a string", bool: "true or false", int: "a whole number >= 0"}.get(kind, "a finite number >= 0")


class RayBackend(AbstractBackend):
    def run(self, project_uri: str, entry_point: str, params: dict, version: str | None, backend_config: dict,
            tracking_uri: str, experiment_id: str) -> RaySubmittedRun:
        """Submit the entry point as a Ray task; followed (the default), wait for it here (the CLI calls
        backends other than local asynchronously and would otherwise exit at once, and its task with it)."""
        config = RayConfig.parse(backend_config or {})
        if backend_config.get(PROJECT_ENV_MANAGER) not in (None, "local"):
            log.warning("the ray backend runs entry points in the Python environment of the cluster's nodes; "
                        "--env-manager %s is not used", backend_config[PROJECT_ENV_MANAGER])
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        run_id = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point,
                                   params).info.run_id
        with tempfile.TemporaryDirectory(prefix="simclr-s2-storage-") as storage:
            # MLflow downloads parameters of type path under it (no entry point here has one, and a node could
            # not read this machine's folder): its default, a new folder in /tmp, was left there every run
            command = " ".join(get_entry_point_command(project, entry_point, params,
                                                       backend_config.get(PROJECT_STORAGE_DIR) or storage))
        try:
            shipped = join(config.address, name="ray backend config: address", log_to_driver=False,
                           runtime_env={"working_dir": work_dir, "excludes": [".git"]})
        except UserError as error:
            Tracking(tracking_uri).fail_if_running(run_id, str(error))
            raise ExecutionException(str(error)) from None
        log.info("=== Running command '%s' on the Ray cluster (run %s) ===", command, run_id)
        stream = ray.remote(remote_command.entry_point).options(
            name=f"mlflow-run-{entry_point}-{run_id[:8]}", num_returns="streaming", num_cpus=config.num_cpus,
            num_gpus=config.num_gpus, max_retries=config.max_retries, retry_exceptions=False,
        ).remote(command, handed_over(tracking_uri, experiment_id, run_id), None if shipped else work_dir)
        submitted = RaySubmittedRun(run_id, stream, Tracking(tracking_uri))
        if config.follow and not submitted.wait():
            raise ExecutionException(f"Run (ID '{run_id}') failed")
        return submitted


class RaySubmittedRun(SubmittedRun):
    """An entry point running as a Ray task: its output is printed while `wait` follows it."""

    def __init__(self, run_id: str, stream: ray.ObjectRefGenerator, tracking: Tracking) -> None:
        super().__init__()
        self._run_id, self._stream, self._tracking = run_id, stream, tracking
        self._code: int | None = None

    @property
    def run_id(self) -> str:
        return self._run_id

    def wait(self) -> bool:
        """Print the command's output until it exits; True when it exited 0. A run the command left
        RUNNING (its worker died for good) ends FINISHED or FAILED by the exit status, as MLflow does."""
        if self._code is None:
            try:
                self._code = self._follow()
            except KeyboardInterrupt:  # as MLflow's local backend: the command stops, its run ends FAILED
                ray.cancel(self._stream)
                self._tracking.fail_if_running(self._run_id, "interrupted")
                raise
            if self._code != 0:
                self._tracking.fail_if_running(self._run_id, f"the command exited with status {self._code}")
            elif self._tracking.get_run(self._run_id).info.status == "RUNNING":
                self._tracking.end(self._run_id)
        return self._code == 0

    def _follow(self) -> int:
        try:
            for ref in self._stream:
                item = ray.get(ref)
                if isinstance(item, remote_command.Exited):
                    return item.code
                sys.stdout.write(item)
                sys.stdout.flush()
        except RayError as error:
            print(f"ray backend: the task of run {self._run_id} was lost: {error}",
                  file=sys.stderr, flush=True)
        return -1

    def get_status(self) -> str:
        if self._code is None:
            ready, _ = ray.wait([self._stream.completed()], timeout=0)
            if not ready:
                return RunStatus.to_string(RunStatus.RUNNING)
            self.wait()
        return RunStatus.to_string(RunStatus.FINISHED if self._code == 0 else RunStatus.FAILED)

    def cancel(self) -> None:
        """Stop the task (its command and the command's children with it) and wait for it to end."""
        if self._code is None:
            ray.cancel(self._stream)
            self.wait()
