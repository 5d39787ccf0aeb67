"""The context one command runs in, built once at the entry point and passed down: where runs go, where
local state lives, and the sizes of the demo. Nothing below reads the environment for these again."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from simclr_s2.errors import UserError
from simclr_s2.settings.experiment import DEFAULT_EXPERIMENT, create_experiment

DEFAULT_HEARTBEAT_S = 30.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _positive(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"{name}: expected a number > 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Sizes:
    """The demo's size and caps on training length: the tests and the README's long commands run the
    real code with these made small (SIMCLR_S2_DEMO_PATCHES, SIMCLR_S2_DEMO_PRETRAIN_EPOCHS,
    SIMCLR_S2_MAX_EPOCHS, SIMCLR_S2_MAX_TRIALS). A cap that shortens a run is logged on it."""

    demo_patches: int = 1000
    demo_pretrain_epochs: int | None = None  # None: the pretrain entry point's default
    max_epochs: int | None = None
    max_trials: int | None = None

    def epochs(self, asked: int) -> int:
        return min(asked, self.max_epochs) if self.max_epochs else asked

    def trials(self, asked: int) -> int:
        return min(asked, self.max_trials) if self.max_trials else asked


@dataclass(frozen=True)
class Context:
    """Tracking store, experiment, state folder, project root and demo sizes of one command.

    `launcher_run_id` is the run `mlflow run` made before starting the entry point (MLFLOW_RUN_ID);
    `experiment_id` / `experiment_name` say where every run of the command goes (never MLflow's
    Default experiment: `simclr-s2` unless MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID name another).
    """

    tracking_uri: str
    experiment_name: str
    home: Path
    data_root: Path
    project_root: Path = PROJECT_ROOT
    experiment_id_given: str | None = None
    launcher_run_id: str | None = None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    checkpoint_interval_s: float = 0.0  # 0: every epoch's checkpoint is written (see tracking.publisher)
    sizes: Sizes = field(default_factory=Sizes)
    reuse: bool = True  # False: steps a command would reuse run again

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Context:
        """The context described by the environment (MLflow's variables and SIMCLR_S2_*)."""
        env = os.environ if env is None else env
        uri = env.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
        experiment_id = env.get("MLFLOW_EXPERIMENT_ID") or None
        if experiment_id == "0" and not env.get("MLFLOW_RUN_ID"):
            experiment_id = None  # a leftover pointing at Default; under `mlflow run` it is the launcher's
        epochs = env.get("SIMCLR_S2_DEMO_PRETRAIN_EPOCHS")
        return cls(
            tracking_uri=uri,
            experiment_name=env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT,
            experiment_id_given=experiment_id,
            home=Path(env.get("SIMCLR_S2_HOME") or PROJECT_ROOT / ".simclr_s2").resolve(),
            data_root=Path(env.get("SIMCLR_S2_DATA") or PROJECT_ROOT / "data").resolve(),
            launcher_run_id=env.get("MLFLOW_RUN_ID") or None,
            heartbeat_s=_positive(env, "SIMCLR_S2_HEARTBEAT_S", DEFAULT_HEARTBEAT_S),
            checkpoint_interval_s=_positive(env, "SIMCLR_S2_CHECKPOINT_INTERVAL_S", 0.0),
            sizes=Sizes(
                demo_patches=int(_positive(env, "SIMCLR_S2_DEMO_PATCHES", 1000, int)),
                demo_pretrain_epochs=int(_positive(env, "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS", 1, int))
                if epochs else None,
                max_epochs=int(_positive(env, "SIMCLR_S2_MAX_EPOCHS", 1, int)) if env.get("SIMCLR_S2_MAX_EPOCHS")
                else None,
                max_trials=int(_positive(env, "SIMCLR_S2_MAX_TRIALS", 1, int)) if env.get("SIMCLR_S2_MAX_TRIALS")
                else None,
            ),
        )

    def with_reuse(self, reuse: bool) -> Context:
        return replace(self, reuse=reuse)

    @cached_property
    def client(self) -> MlflowClient:
        try:
            return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        except MlflowException as error:
            raise UserError(f"MLFLOW_TRACKING_URI: cannot use {self.tracking_uri!r}: "
                            f"{error.message.splitlines()[0]}") from None

    @cached_property
    def experiment_id(self) -> str:
        """The experiment every run of this command goes to: the one MLFLOW_EXPERIMENT_ID names (which must
        exist), else the named one, created when missing."""
        if self.experiment_id_given:
            return self._given_experiment(self.experiment_id_given)
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise UserError(f"MLFLOW_EXPERIMENT_NAME: experiment {self.experiment_name!r} is deleted; "
                            f"restore it (mlflow experiments restore) or choose another name")
        return create_experiment(self.client, self.experiment_name)

    def _given_experiment(self, experiment_id: str) -> str:
        """`experiment_id` when this store has it, active; one line naming the variable otherwise."""
        try:
            found = self.client.get_experiment(experiment_id)
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            found = None
        if found is None or found.lifecycle_stage == "deleted":
            state = "is deleted" if found else "does not exist"
            raise UserError(f"MLFLOW_EXPERIMENT_ID: experiment {experiment_id} {state} in {self.tracking_uri}; "
                            "unset it or name an existing experiment (MLFLOW_EXPERIMENT_NAME)")
        return experiment_id

    def state_dir(self, *parts: str) -> Path:
        """A folder under the local state home, created; one clear line when it cannot be."""
        path = self.home.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"SIMCLR_S2_HOME: cannot write the state folder {path}: {error.strerror}") from None
        if not os.access(path, os.W_OK):
            raise UserError(f"SIMCLR_S2_HOME: the state folder {path} is not writable")
        return path
