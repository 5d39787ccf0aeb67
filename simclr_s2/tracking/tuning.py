"""Optuna trials as MLflow runs (the search itself is simclr_s2.tune). Each worker has its own `tune` run;
each trial is a nested run under it, named trial-<n>, with its settings and per-epoch metrics.

How a trial ends in MLflow (tag `optuna.state` is Optuna's own state name):
  completed  status FINISHED, optuna.state=COMPLETE
  pruned     status KILLED,   optuna.state=PRUNED, optuna.pruned_at_epoch=<epochs trained>
  failed     status FAILED,   optuna.state=FAIL, simclr_s2.error=<reason> (a bad setting, a dead worker)
KILLED, not FINISHED, for a pruned trial: its status then says at a glance that it stopped before its
last epoch, and no search for finished runs mistakes it for a full training.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import optuna
import torch
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from simclr_s2.errors import UserError
from simclr_s2.tracking import steps
from simclr_s2.tracking.classifier import ClassifierSpec, train_classifier
from simclr_s2.tracking.inputs import split_ref
from simclr_s2.tracking.runs import ERROR_TAG, STAGE_TAG, canonical_params, ensure_run
from simclr_s2.tune import (
    DEFAULT_HEARTBEAT_S,
    StudyBudget,
    StudySettings,
    TrialSeededSampler,
    best_trial,
    masked,
    open_storage,
    open_study,
    run_study,
    save_plots,
    state_counts,
    trials_table,
)

log = logging.getLogger(__name__)

RUN_ATTR = "mlflow_run_id"  # Optuna user attribute: the trial's MLflow run
STATE_TAG = "optuna.state"
PRUNED_AT_TAG = "optuna.pruned_at_epoch"
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
TRIAL_STAGE = "tune-trial"
FINAL_RUN_TAG = "simclr_s2.final_run"


@dataclass(frozen=True)
class TuneResult:
    study: optuna.Study
    best: FrozenTrial
    target: str
    final_params: dict[str, Any]  # the target entry point's parameters that reproduce the best trial


def base_spec(settings: StudySettings, seed: int) -> ClassifierSpec:
    """The trials' fixed settings. `auto` split and encoder are resolved once, so every trial of this
    worker trains on the same data and encoder; patience is the target entry point's default, so the
    final run trains exactly as the trials did."""
    pretrained = settings.pretrained
    if settings.target == "finetune" and pretrained == "auto":
        pretrained = steps.demo_encoder_uri()
    return ClassifierSpec(stage=settings.target, split=split_ref(settings.split, settings.scheme),
                          scheme=settings.scheme, fraction=settings.fraction, pretrained=pretrained,
                          epochs=settings.epochs, seed=seed,
                          patience=int(float(canonical_params(settings.target, {})["patience"])))


def _spec_params(spec: ClassifierSpec) -> dict[str, Any]:
    """The spec as the target entry point's parameters (each stage has only its own)."""
    unused = {"stage", "feature_cache", *(("arch",) if spec.stage == "finetune" else ("pretrained", "trainable"))}
    return {k: v for k, v in asdict(spec).items() if k not in unused}


@contextmanager
def _trial_run(trial: optuna.Trial, spec: ClassifierSpec, study_name: str) -> Iterator[None]:
    """A nested run for `trial`, ended with the status and `optuna.state` tag of how the trial ended."""
    run = mlflow.start_run(nested=True, run_name=f"trial-{trial.number}", tags={
        STAGE_TAG: TRIAL_STAGE, STUDY_TAG: study_name, TRIAL_TAG: str(trial.number), "scheme": spec.scheme,
        "fraction": str(spec.fraction), "seed": str(spec.seed)})
    trial.set_user_attr(RUN_ATTR, run.info.run_id)
    mlflow.log_params(_spec_params(spec))
    try:
        yield
    except optuna.TrialPruned:
        mlflow.set_tag(STATE_TAG, TrialState.PRUNED.name)
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as error:
        mlflow.set_tags({STATE_TAG: TrialState.FAIL.name, ERROR_TAG: f"{type(error).__name__}: {error}"[:4000]})
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.set_tag(STATE_TAG, TrialState.COMPLETE.name)
    mlflow.end_run()


def _reporter(trial: optuna.Trial, metric: str) -> Callable[[Mapping[str, float], int], None]:
    """A `log_fn` that logs an epoch's metrics, reports `metric` to the trial and prunes when told to.
    Steps reported to Optuna count epochs trained (1, 2, ...), the resource Hyperband allocates."""

    def log_fn(metrics: Mapping[str, float], epoch: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)
        value = float(metrics[metric])
        trial.report(value, step=epoch + 1)
        if trial.should_prune():
            mlflow.set_tag(PRUNED_AT_TAG, str(epoch + 1))
            raise optuna.TrialPruned(f"{metric} {value:.4f} after epoch {epoch + 1}")

    return log_fn


def make_objective(base: ClassifierSpec, settings: StudySettings,
                   study_name: str) -> Callable[[optuna.Trial], float]:
    """The trial: suggested settings on top of `base`, trained in a nested run; its value is the
    validation metric of the kept (best-AUC) epoch, the one the final run would register."""

    def objective(trial: optuna.Trial) -> float:
        spec = replace(base, **settings.space.suggest(trial, settings.target))
        with _trial_run(trial, spec, study_name):
            trained = train_classifier(spec, checkpoint_path=None, log_fn=_reporter(trial, settings.metric),
                                       log_checkpoints=False)
            value = trained.result.best_val.get(settings.metric, math.nan)
            if math.isnan(value):
                raise UserError(f"trial {trial.number}: {settings.metric} is undefined on the validation set "
                                f"(one class only?)")
            return value

    return objective


def mark_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna failed `trial` because its worker stopped sending heartbeats (killed, machine lost): end
    the trial's run and that worker's `tune` run FAILED too, so MLflow shows nothing running either."""
    run_id = trial.user_attrs.get(RUN_ATTR)
    if not run_id:
        return
    client = MlflowClient()
    reason = f"worker lost: trial {trial.number} of study {study.study_name} stopped sending heartbeats"
    try:
        run = client.get_run(run_id)
        client.set_tag(run_id, STATE_TAG, TrialState.FAIL.name)
        for target in (run, client.get_run(run.data.tags.get("mlflow.parentRunId", run_id))):
            if target.info.status == "RUNNING":
                client.set_tag(target.info.run_id, ERROR_TAG, reason)
                client.set_terminated(target.info.run_id, "FAILED")
    except MlflowException as error:  # e.g. a worker elsewhere logging to another tracking server
        log.warning("trial %d: cannot mark its MLflow run %s failed: %s", trial.number, run_id, error)


def log_summary(study: optuna.Study, metric: str) -> FrozenTrial:
    """On the active (`tune`) run: trial counts, the trials table, Optuna's plots, and the study's best
    trial (over all workers so far) as best_* parameters and metric. No completed trial is a UserError."""
    counts = state_counts(study)
    mlflow.log_metrics({f"trials_{state.lower()}": n for state, n in counts.items()})
    mlflow.log_text(trials_table(study).to_csv(index=False), "tune/trials.csv")
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_plots(study, Path(tmp)):
            mlflow.log_artifact(str(path), "tune")
    best = best_trial(study)
    if best is None:
        raise UserError(f"study {study.study_name}: no trial completed ({counts['FAIL']} failed, "
                        f"{counts['PRUNED']} pruned); see the simclr_s2.error tag of its trial runs")
    mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
    mlflow.log_metric(f"best_{metric}", best.value)
    mlflow.set_tags({"optuna.best_trial": str(best.number), "optuna.best_run_id": best.user_attrs.get(RUN_ATTR, "-")})
    return best


def tune(settings: StudySettings, *, study_name: str, storage: str, n_trials: int, timeout_s: float | None,
         seed: int, pruner: BasePruner, heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> TuneResult:
    """This worker's part of the study, inside the active `tune` run: trials until the study holds
    `n_trials` (over all workers) or `timeout_s` passes, then the summary of the whole study so far."""
    base = base_spec(settings, seed)
    study = open_study(study_name, open_storage(storage, heartbeat_s, mark_stale), settings,
                       TrialSeededSampler(seed), pruner)
    mlflow.set_tags({STUDY_TAG: study_name, "optuna.storage": masked(storage)})
    run_study(study, make_objective(base, settings, study_name), StudyBudget(n_trials), timeout_s,
              catch=(UserError, torch.OutOfMemoryError))
    best = log_summary(study, settings.metric)
    return TuneResult(study, best, settings.target, {**_spec_params(base), **best.params})


def run_final(result: TuneResult, parent_run_id: str) -> Run:
    """The target entry point with the best trial's settings, registered like any other run (a finished
    run with the same parameters is reused), shown under the `tune` run."""
    run = ensure_run(result.target, result.final_params,
                     tags={"mlflow.parentRunId": parent_run_id, STUDY_TAG: result.study.study_name})
    mlflow.set_tag(FINAL_RUN_TAG, run.info.run_id)
    return run
