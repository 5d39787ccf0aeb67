"""The context one command runs in, built once at the entry point and passed down: where runs go, where
local state lives, and the sizes of the demo. Nothing below reads the environment for these again."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from simclr_s2.errors import UserError
from simclr_s2.settings.mlflow_store import DEFAULT_EXPERIMENT, experiment_for, store_uris

DEFAULT_HEARTBEAT_S = 30.0


def project_folder(package_file: Path = Path(__file__)) -> Path:
    """Where the state and data folders default to: the checkout the package runs from (its MLproject beside
    the package), else the working folder (an installed copy, in site-packages, is no place for them; the
    training image and `mlflow run` run in the project folder)."""
    root = package_file.resolve().parents[2]
    return root if (root / "MLproject").is_file() else Path.cwd()


PROJECT_ROOT = project_folder()


def _positive(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    """The variable's number, finite and > 0: nan made the heartbeat beat without pause (Event.wait(nan)
    returns at once) and inf killed its thread, and either misjudged the run's liveness."""
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{name}: expected {'a whole' if kind is int else 'a finite'} number > 0, got {text!r}")
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
    """Tracking store (and registry), experiment, state folder, project root and demo sizes of one command.
    MLflow itself is reached through simclr_s2.tracking's door, built from these URIs.

    `launcher_run_id` is the run `mlflow run` made before starting the entry point (MLFLOW_RUN_ID);
    `experiment_id` / `experiment_name` say where every run of the command goes (never MLflow's
    Default experiment: `simclr-s2` unless MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID name another).
    """

    tracking_uri: str
    experiment_name: str
    home: Path
    data_root: Path
    registry_uri_given: str | None = None  # None: the registry is the tracking store's
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
        uri, registry_uri = store_uris(env)
        experiment_id = env.get("MLFLOW_EXPERIMENT_ID") or None
        if experiment_id == "0" and not env.get("MLFLOW_RUN_ID"):
            experiment_id = None  # a leftover pointing at Default; under `mlflow run` it is the launcher's
        epochs = env.get("SIMCLR_S2_DEMO_PRETRAIN_EPOCHS")
        return cls(
            tracking_uri=uri,
            registry_uri_given=registry_uri,
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

    @property
    def registry_uri(self) -> str:
        return self.registry_uri_given or self.tracking_uri

    @cached_property
    def experiment_id(self) -> str:
        """The experiment every run of this command goes to: the one MLFLOW_EXPERIMENT_ID names (which must
        exist), else the named one, created when missing."""
        return experiment_for(self.tracking_uri, self.experiment_name, self.experiment_id_given)

    @cached_property
    def found_links(self) -> dict[tuple[str, ...], str]:
        """The `auto` chain's links this command found or made (stages.auto), kept for the command so that
        each is searched for once: a finished run stays what it was while the command runs."""
        return {}

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
