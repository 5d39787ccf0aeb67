"""MLflow runs of the entry points: parameter keys, naming and tags, reuse of finished runs, resume of
interrupted ones, and a clean FAILED ending with the reason in a tag.

A run is identified by a key: the hash of its entry point and its full, canonical parameters (MLproject
defaults filled in, numbers normalised). The key is stored as a tag, so "has this already run?" is one
indexed search instead of comparing parameters run by run, as MLflow's multistep example does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Run, RunStatus
from mlflow.projects import _project_spec
from mlflow.tracking import MlflowClient

from simclr_s2 import distributed
from simclr_s2.errors import UserError
from simclr_s2.tracking.connectivity import TrackingUnreachable, is_unreachable, retry_budget_s

log = logging.getLogger(__name__)

KEY_TAG = "simclr_s2.key"
ERROR_TAG = "simclr_s2.error"
RESUMED_FROM_TAG = "simclr_s2.resumed_from"
PROCESSES_TAG = "simclr_s2.processes"  # torchrun's world size, on runs trained by several processes
STAGE_TAG = "stage"
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


def project_root() -> Path:
    """The MLflow project folder: the source checkout when installed editable, else the working folder."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "MLproject").exists() else Path.cwd()


def work_home() -> Path:
    """Local working state (checkpoints, feature caches, packed stores): $SIMCLR_S2_HOME or ./.simclr_s2."""
    return Path(os.environ.get("SIMCLR_S2_HOME", project_root() / ".simclr_s2")).resolve()


@cache
def _entry_points() -> dict[str, _project_spec.EntryPoint]:
    return _project_spec.load_project(str(project_root()))._entry_points


def canonical_params(entry_point: str, given: Mapping[str, object]) -> dict[str, str]:
    """Every parameter of `entry_point` as the string MLflow logs, defaults filled in; floats normalised
    so that 5e-5 and 0.00005 give the same key."""
    spec = _entry_points()[entry_point]
    unknown = set(given) - set(spec.parameters)
    if unknown:
        raise UserError(f"entry point {entry_point} has no parameter {sorted(unknown)}; "
                        f"it takes {sorted(spec.parameters)}")
    out = {}
    for name, param in spec.parameters.items():
        value = given.get(name, param.default)
        if value is None:
            raise UserError(f"entry point {entry_point} needs parameter {name}")
        out[name] = _canonical(value, param.type)
    return out


def _canonical(value: object, kind: str) -> str:
    """One spelling per value: numbers normalised (also inside comma lists, so "0.70,0.15" and the
    parsed [0.7, 0.15] agree), booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_canonical(v, "string") for v in value)
    if kind == "float":
        return _number(str(value)) or str(value)
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return text.lower()
    parts = [part.strip() for part in text.split(",")]
    numbers = [_number(part) for part in parts]
    return ",".join(numbers) if all(numbers) else text  # type: ignore[arg-type]


def _number(text: str) -> str | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def run_key(entry_point: str, params: Mapping[str, str]) -> str:
    blob = json.dumps({"entry_point": entry_point, "params": dict(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _experiment_id() -> str:
    active = mlflow.active_run()
    if active:
        return active.info.experiment_id
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"]).experiment_id
    return "0"  # MLflow's Default experiment


def find_runs(key: str, statuses: tuple[str, ...], exclude: str | None = None) -> list[Run]:
    """Runs carrying `key` in one of `statuses`, newest first."""
    runs = MlflowClient().search_runs(
        [_experiment_id()], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"], max_results=50)
    return [r for r in runs if r.info.status in statuses and r.info.run_id != exclude]


def find_finished(entry_point: str, params: Mapping[str, object]) -> Run | None:
    full = canonical_params(entry_point, params)
    runs = find_runs(run_key(entry_point, full), ("FINISHED",))
    return runs[0] if runs else None


def ensure_run(entry_point: str, params: Mapping[str, object],
               usable: Callable[[Run], bool] = lambda run: True,
               tags: Mapping[str, str] | None = None) -> Run:
    """The finished run of `entry_point` with these parameters: reused when one exists and is `usable`
    (its local outputs still there), else run now through `mlflow run` (a separate run, as in MLflow's
    multistep example), continuing an interrupted run with the same parameters in place. `tags` go on
    a run started here (e.g. mlflow.parentRunId). A failed step is a UserError."""
    full = canonical_params(entry_point, params)
    key = run_key(entry_point, full)
    if (found := find_finished(entry_point, full)) and usable(found):
        log.info("reusing finished %s run %s", entry_point, found.info.run_id)
        return found
    stale = find_runs(key, UNFINISHED)
    log.info("%s %s with %s", "resuming" if stale else "running", entry_point, full)
    # The nested command says `python`: make it this interpreter's, so the project's venv is used.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with distributed.outside_job():
        submitted = mlflow.projects.run(str(project_root()), entry_point=entry_point, parameters=full,
                                        env_manager="local", experiment_id=_experiment_id(), synchronous=False,
                                        run_id=stale[0].info.run_id if stale else None)
    for name, value in (tags or {}).items():
        MlflowClient().set_tag(submitted.run_id, name, value)
    if not submitted.wait():
        reason = MlflowClient().get_run(submitted.run_id).data.tags.get(ERROR_TAG, "see its log")
        raise UserError(f"step {entry_point} failed (run {submitted.run_id}): {reason}")
    return MlflowClient().get_run(submitted.run_id)


@dataclass
class StageRun:
    """The active run of one entry point and where it keeps local state that survives a kill."""

    run_id: str
    key: str
    resumed_from: str | None
    params: dict[str, str]

    @property
    def checkpoint_dir(self) -> Path:
        path = work_home() / "checkpoints" / self.key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """All of one step's metrics in one call (one HTTP request on a server)."""
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def epoch_logger(self, flush_on: str = "epoch_loss") -> Callable[[Mapping[str, float], int], None]:
        """A `log_fn` that holds per-step metrics until a call carrying `flush_on` (the end of an epoch,
        after which a checkpoint is written), then sends them in one batch: a run killed mid-epoch has
        logged nothing of that epoch, so its resumed rerun logs each step exactly once."""
        pending: list[Metric] = []

        def log_fn(metrics: Mapping[str, float], step: int) -> None:
            now = int(time.time() * 1000)
            pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
            if flush_on in metrics:
                client = MlflowClient()
                for start in range(0, len(pending), 1000):
                    client.log_batch(self.run_id, metrics=pending[start:start + 1000])
                pending.clear()

        return log_fn


@contextmanager
def stage_run(entry_point: str, params: Mapping[str, object], *, run_name: str,
              tags: Mapping[str, object] = (), resumable: bool = False,
              system_metrics: bool = False) -> Iterator[StageRun]:
    """Run one entry point inside its MLflow run.

    Under `mlflow run` the run already exists (MLFLOW_RUN_ID); called directly, one is started. With
    `resumable`, an unfinished run with the same key is continued: directly, in that very run; under
    `mlflow run`, which has already made a fresh run, its metric history is carried into the fresh run
    and the stale one is deleted, so exactly one run holds every step once. A user error or crash ends
    the run FAILED with the reason in the `simclr_s2.error` tag; Ctrl-C ends it KILLED.

    Under torchrun only rank 0 opens and ends the run; the other ranks get the same StageRun (ids,
    checkpoint folder) once rank 0 has set it up, and never touch MLflow.
    """
    stage = distributed.main_only(lambda: _open_run(entry_point, params, run_name, tags, resumable,
                                                    system_metrics))
    if not distributed.is_main():
        yield stage
        return
    try:
        yield stage
    except KeyboardInterrupt:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as error:
        if is_unreachable(error):  # telling the server would only wait for it again; the checkpoints stay
            raise TrackingUnreachable(
                f"tracking server {mlflow.get_tracking_uri()} unreachable after retrying for about "
                f"{retry_budget_s()} s; checkpoints kept in {stage.checkpoint_dir}: run the same command "
                "again to resume once the server is back") from error
        mlflow.set_tag(ERROR_TAG, f"{type(error).__name__}: {error}"[:4000])
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run()
    shutil.rmtree(work_home() / "checkpoints" / stage.key, ignore_errors=True)


def _open_run(entry_point: str, params: Mapping[str, object], run_name: str, tags: Mapping[str, object],
              resumable: bool, system_metrics: bool) -> StageRun:
    """Start (or reopen) the run `stage_run` describes, with its parameters and tags."""
    full = canonical_params(entry_point, params)
    key = run_key(entry_point, full)
    current = os.environ.get("MLFLOW_RUN_ID")
    stale = [r.info.run_id for r in find_runs(key, UNFINISHED)] if resumable else []
    if current in stale:  # `mlflow run --run-id` (or the grid) reopened the interrupted run itself
        resumed_from = current
    else:
        resumed_from = stale[0] if stale else None
    run_id = current or resumed_from
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name,
                           log_system_metrics=system_metrics or None)
    client = MlflowClient()
    if current and resumed_from and resumed_from != current:
        _carry_history(client, resumed_from, current)
    existing = client.get_run(run.info.run_id).data.params
    mlflow.log_params({k: v for k, v in full.items() if k not in existing})
    mlflow.set_tags({STAGE_TAG: entry_point, KEY_TAG: key, "mlflow.runName": run_name,
                     **({PROCESSES_TAG: str(distributed.world())} if distributed.world() > 1 else {}),
                     **{k: str(v) for k, v in dict(tags).items()}})
    if resumed_from:
        mlflow.set_tag(RESUMED_FROM_TAG, resumed_from)
        log.info("resuming %s run %s", entry_point, resumed_from)
    stage = StageRun(run.info.run_id, key, resumed_from, full)
    if not resumed_from:  # a checkpoint without a run to continue would leave holes in the history
        shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)
    return stage


def _carry_history(client: MlflowClient, source: str, target: str) -> None:
    """Copy every metric step of `source` into `target`, then delete `source` (kept in MLflow's trash)."""
    keys = client.get_run(source).data.metrics.keys()
    history = [m for k in keys for m in client.get_metric_history(source, k)]
    for start in range(0, len(history), 1000):
        chunk = history[start:start + 1000]
        client.log_batch(target, metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in chunk])
    client.set_tag(source, "simclr_s2.resumed_in", target)
    client.delete_run(source)


def fail_current_run(reason: str) -> None:
    """Mark the run `mlflow run` created FAILED with `reason` when a user error stops the entry point
    before its run was entered (e.g. a bad parameter caught while parsing)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        client = MlflowClient()
        tags = client.get_run(run_id).data.tags
        if STAGE_TAG not in tags and "mlflow.project.entryPoint" in tags:
            client.set_tag(run_id, STAGE_TAG, tags["mlflow.project.entryPoint"])
        client.set_tag(run_id, ERROR_TAG, reason[:4000])
        client.set_terminated(run_id, "FAILED")
