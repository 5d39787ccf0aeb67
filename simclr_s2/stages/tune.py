"""tune: Optuna trials as MLflow runs (the search itself is simclr_s2.study.tuning). Each worker has its
own `tune` run; each trial is a child run of it, named trial-<n>, with its settings and per-epoch metrics.
With backend=ray the command starts `workers` Ray tasks, each a `tune-worker` child run of its run joining the
same study on the shared storage; the command's run then logs the summary and makes the final run. Local
workers joining one study each log the summary; the final run is made by one that ends with no trial of the
study running elsewhere, so a study has one best and one final run.

How a trial ends in MLflow (tag `optuna.state` is Optuna's own state name):
  completed  FINISHED, optuna.state=COMPLETE
  pruned     KILLED,   optuna.state=PRUNED, optuna.pruned_at_epoch=<epochs trained>
  failed     FAILED,   optuna.state=FAIL, simclr_s2.error=<reason>
KILLED, not FINISHED, for a pruned trial: its status says at a glance that it stopped before its last
epoch. A trial fails alone when its own settings broke it (diverged, metric undefined, out of memory);
any other error (a missing file, a broken patch) stops the study: every trial would hit it again.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from simclr_s2 import faults
from simclr_s2.errors import SettingError, UserError
from simclr_s2.learning.runtime import StepMetrics
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages.base import Stage, ensure_step
from simclr_s2.stages.classifier import (
    CLASSIFIERS,
    ENCODER_DIGEST,
    SPLIT_DIGEST,
    TUNED_TAG,
    Classifier,
    ClassifierSpec,
    prepare,
    resolve_training,
    train_classifier,
)
from simclr_s2.study.search_space import SearchSpace
from simclr_s2.study.tuning import (
    Lost,
    StudyBudget,
    StudySettings,
    TrialSeededSampler,
    best_trial,
    default_study_name,
    make_pruner,
    masked,
    open_storage,
    open_study,
    run_study,
    save_plots,
    state_counts,
    storage_url,
    trials_table,
)
from simclr_s2.tracking.door import Tracking, TrackingError
from simclr_s2.tracking.endings import describe
from simclr_s2.tracking.liveness import is_live
from simclr_s2.tracking.names import STAGE_TAG
from simclr_s2.tracking.tracker import StageRun, Step

if TYPE_CHECKING:
    from simclr_s2.cluster.dispatch import Placement

log = logging.getLogger(__name__)

RUN_ATTR = "mlflow_run_id"  # Optuna user attribute: the trial's MLflow run
WORKER_ATTR = "worker_run_id"  # Optuna user attribute: the MLflow run of the worker running the trial
STATE_TAG = "optuna.state"
PRUNED_AT_TAG = "optuna.pruned_at_epoch"
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
TRIAL_STAGE = "tune-trial"
WORKER_STAGE = "tune-worker"
FINAL_RUN_TAG = "simclr_s2.final_run"
TRIAL_ERRORS = (SettingError, torch.OutOfMemoryError)  # a trial's own settings broke it: the study goes on


@dataclass(frozen=True)
class Plan:
    """One worker's study: the stage it tunes, the fixed part of every trial, the search, and where the
    study lives."""

    stage: Classifier
    base: ClassifierSpec
    settings: StudySettings
    study_name: str
    storage: str


def _target(stage: Classifier, spec: specs.Tune, resolved: Mapping[str, str]) -> ClassifierSpec:
    """The tuned entry point's spec with the study's fixed settings (`resolved` filling `auto`); the
    encoder goes only to a spec that loads one (a baseline's `pretrained` is None, a class value)."""
    fixed: dict[str, Any] = {"split": resolved.get("split", spec.split), "scheme": spec.scheme,
                             "fraction": spec.fraction, "epochs": int(resolved.get("epochs", spec.epochs)),
                             "seed": spec.seed}
    if stage.spec.pretrained is not None:
        fixed["pretrained"] = resolved.get("pretrained", spec.pretrained)
    return build(stage.spec, fixed)


def _plan(spec: specs.Tune, resolved: Mapping[str, str], ctx: Context) -> Plan:
    stage = CLASSIFIERS[spec.target]
    base = _target(stage, spec, resolved)
    space = SearchSpace(lr_min=spec.lr_min, lr_max=spec.lr_max, weight_decay_max=spec.weight_decay_max,
                        dropout_min=spec.dropout_min, dropout_max=spec.dropout_max,
                        batch_sizes=spec.batch_sizes, trainables=spec.trainables)
    settings = StudySettings(target=spec.target, split=_held(base.split, resolved.get(SPLIT_DIGEST), "manifest"),
                             pretrained=_held(base.pretrained or "", resolved.get(ENCODER_DIGEST), "sha256"),
                             scheme=spec.scheme, fraction=spec.fraction, metric=spec.metric,
                             epochs=base.epochs, seed=spec.seed, pruner=spec.pruner, space=space)
    return Plan(stage, base, settings, _study_name(spec), storage_url(spec.storage, ctx.state_dir()))


def _held(ref: str, digest: str | None, what: str) -> str:
    """A split or encoder as a study's settings name it: with the digest of what a local folder or file holds
    now, so a worker on one drawn or written over again does not join the trials of its former content."""
    return f"{ref} ({what} {digest})" if digest else ref


def _study_name(spec: specs.Tune) -> str:
    """The study's name: `auto` is <target>-<scheme>-<fraction>pct."""
    if spec.study_name == "auto":
        return default_study_name(spec.target, spec.scheme, spec.fraction)
    return spec.study_name


class TrialProgress:
    """`runtime.Progress` of a trial: each epoch logged at once, reported to Optuna, pruned when told."""

    def __init__(self, run: StageRun, trial: optuna.Trial, metric: str) -> None:
        self.run, self.trial, self.metric = run, trial, metric

    def resumed(self, history: Sequence[StepMetrics]) -> None:  # trials keep no checkpoints
        raise AssertionError("a trial never resumes")

    def save(self, checkpoint: dict[str, Any], path: Path, epoch: int) -> None:
        raise AssertionError("a trial keeps no checkpoint")

    def epoch_done(self, entries: Sequence[StepMetrics], epoch: int) -> None:
        for step, metrics in entries:
            self.run.log_metrics(metrics, step=step)
        faults.point(f"trial{self.trial.number}_after_log", epoch)
        value = float(entries[-1][1][self.metric])
        self.trial.report(value, step=epoch + 1)  # epochs trained: the resource Hyperband allocates
        if self.trial.should_prune():
            self.run.set_tags({PRUNED_AT_TAG: epoch + 1})
            raise optuna.TrialPruned(f"{self.metric} {value:.4f} after epoch {epoch + 1}")


@contextmanager
def _trial_run(trial: optuna.Trial, base: specs.Spec, ctx: Context, parent: StageRun,
               study_name: str) -> Iterator[StageRun]:
    """A child run for `trial`, ended with the status and `optuna.state` tag of how the trial ended."""
    door = Tracking.of(ctx)
    created = door.open(ctx.experiment_id, f"trial-{trial.number}", parent_run_id=parent.run_id, tags={
        STAGE_TAG: TRIAL_STAGE, STUDY_TAG: study_name, TRIAL_TAG: str(trial.number),
        "scheme": base.scheme, "fraction": str(base.fraction), "seed": str(base.seed)})
    run = StageRun(ctx, created, Step(TRIAL_STAGE, {}), Path())
    trial.set_user_attr(RUN_ATTR, run.run_id)
    try:
        yield run
    except optuna.TrialPruned:
        run.set_tags({STATE_TAG: TrialState.PRUNED.name})
        door.end(run.run_id, "KILLED")
        raise
    except BaseException as error:
        run.set_tags({STATE_TAG: TrialState.FAIL.name})
        door.end(run.run_id, "FAILED", describe(error))
        raise
    run.set_tags({STATE_TAG: TrialState.COMPLETE.name})
    door.end(run.run_id)


def _objective(plan: Plan, ctx: Context, parent: StageRun):
    """The trial: suggested settings on top of the fixed ones, trained in a child run; its value is the
    validation metric of the kept (best-AUC) epoch, the one the final run would register."""
    prepared = prepare(plan.base, {}, ctx)  # split and encoder loaded once for all trials

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, parent.run_id)  # first: a worker lost from here on is known gone
        fixed = _params(plan.base)  # the target's parameters: what it takes decides what is searched
        spec = build(plan.stage.spec, {**fixed, **plan.settings.space.suggest(trial, fixed)})
        with _trial_run(trial, spec, ctx, parent, plan.study_name) as run:
            run.log_params(_params(spec))
            progress = TrialProgress(run, trial, plan.settings.metric)
            trained = train_classifier(spec, {}, prepared, ctx, run, progress, checkpoint_path=None)
            value = trained.result.best_val.get(plan.settings.metric, math.nan)
            if math.isnan(value):
                raise SettingError(f"trial {trial.number}: {plan.settings.metric} is undefined on the "
                                   "validation set (one class only?)")
            return value

    return objective


def _params(spec: specs.Spec) -> dict[str, Any]:
    return {k: v for k, v in vars(spec).items() if k not in ("register", "reuse")}


def mark_stale(ctx: Context):
    """Optuna's callback for a trial whose worker stopped sending heartbeats (killed, machine lost), and
    StudyBudget's for one whose worker is known gone: end the trial's run and that worker's `tune` run
    FAILED too, so MLflow shows nothing running."""

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        run_id, worker = trial.user_attrs.get(RUN_ATTR), trial.user_attrs.get(WORKER_ATTR)
        reason = (f"worker lost: trial {trial.number} of study {study.study_name}: its worker died or stopped "
                  "sending heartbeats")
        try:
            door = Tracking.of(ctx)
            if run_id:
                door.set_tag(run_id, STATE_TAG, TrialState.FAIL.name)
            for target in filter(None, (run_id, worker)):
                door.fail_if_running(target, reason)
        except TrackingError as error:  # e.g. a worker elsewhere logging to another tracking server
            log.warning("trial %d: cannot mark its MLflow runs failed: %s", trial.number, error)

    return on_stale


def worker_gone(ctx: Context) -> Lost:
    """Whether a running trial's worker is gone, by the project's liveness rule for the worker's `tune` run
    (WORKER_ATTR, set first in the trial): its process dead on this machine, else its heartbeat silent for
    three intervals, or the run ended (a rerun of the same command ends it FAILED at once). Unsure (the
    worker not named yet, the store not answering) is not gone: Optuna's own heartbeat decides then."""
    door = Tracking.of(ctx)

    def gone(trial: FrozenTrial) -> bool:
        worker = trial.user_attrs.get(WORKER_ATTR)
        try:
            return worker is not None and not is_live(door.get_run(worker), ctx.heartbeat_s)
        except TrackingError as error:
            log.warning("trial %d: cannot tell whether its worker is alive: %s", trial.number, error)
            return False

    return gone


def log_summary(run: StageRun, study: optuna.Study, metric: str) -> FrozenTrial:
    """On the `tune` run: trial counts, the trials table, Optuna's plots, and the study's best trial
    (over all workers so far). No completed trial is a UserError."""
    counts = state_counts(study)
    run.log_metrics({f"trials_{state.lower()}": n for state, n in counts.items()})
    run.log_text(trials_table(study).to_csv(index=False), "tune/trials.csv")
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_plots(study, Path(tmp)):
            run.log_artifact(path, "tune")
    best = best_trial(study)
    if best is None:
        raise UserError(f"study {study.study_name}: no trial completed ({counts['FAIL']} failed, "
                        f"{counts['PRUNED']} pruned); see the simclr_s2.error tag of its trial runs")
    run.log_params({f"best_{k}": v for k, v in best.params.items()})
    run.log_metrics({f"best_{metric}": best.value})
    run.set_tags({"optuna.best_trial": best.number, "optuna.best_run_id": best.user_attrs.get(RUN_ATTR, "-")})
    return best


class Tune(Stage[specs.Tune]):
    spec = specs.Tune
    exclusive = False  # workers with the same settings join one study: that is the point

    def resolve(self, spec: specs.Tune, ctx: Context, make: bool = True) -> dict[str, str]:
        resolved = resolve_training(_target(CLASSIFIERS[spec.target], spec, {}), ctx, make)
        if ctx.sizes.trials(spec.n_trials) != spec.n_trials:
            resolved["n_trials"] = str(ctx.sizes.trials(spec.n_trials))
        return resolved

    def run_name(self, spec: specs.Tune, resolved: Mapping[str, str]) -> str:
        return f"tune-{_study_name(spec)}-s{spec.seed}"

    def tags(self, spec: specs.Tune, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"scheme": spec.scheme, "fraction": spec.fraction, "seed": spec.seed}

    def step(self, spec: specs.Tune, resolved: Mapping[str, str]) -> Step:
        """Logged parameters never hold a password: the storage URL is masked."""
        return Step(self.name, {**spec.given(), "storage": masked(spec.storage)}, dict(resolved))

    def execute(self, spec: specs.Tune, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        ctx = ctx.with_reuse(spec.reuse)
        plan = _plan(spec, resolved, ctx)
        study = _study(spec, plan, ctx, run)
        with _cluster(spec):
            if spec.backend == "ray":
                _search_on_ray(spec, plan, ctx, run)  # every worker has ended: no trial of theirs runs on
                elsewhere = []
            else:
                elsewhere = _search(spec, resolved, plan, study, ctx, run)
            best = log_summary(run, study, spec.metric)
            print(f"study {plan.study_name}: best {spec.metric} {best.value:.4f} (trial {best.number}) with "
                  f"{best.params}")
            if spec.final_run and elsewhere:  # their results may change the best: the last worker decides
                print(f"no final run here: trial {', '.join(map(str, elsewhere))} of study {plan.study_name} "
                      "still running in another worker, whose end makes it")
            elif spec.final_run:
                final = self._final_run(spec, plan, best, ctx, run)
                print(f"final {spec.target} run {final} with the best settings")

    def _final_run(self, spec: specs.Tune, plan: Plan, best: FrozenTrial, ctx: Context, run: StageRun) -> str:
        """The target with the best trial's settings, registered like any other run (a finished run with
        the same parameters is reused), shown under the `tune` run; on the cluster with backend=ray."""
        stage = plan.stage
        final = build(stage.spec, {**_params(plan.base), **best.params})
        tags = {STUDY_TAG: plan.study_name, TUNED_TAG: "true"}
        if spec.backend == "ray":
            from simclr_s2.cluster import dispatch

            job = dispatch.Job(f"final-{plan.study_name}", stage, _params(final), tags)
            run_id = dispatch.ensure_on_cluster(job, ctx, run.run_id, _placement(spec, retries=2))
        else:
            run_id = ensure_step(stage, final, ctx, parent_run_id=run.run_id, tags=tags).info.run_id
        run.set_tags({FINAL_RUN_TAG: run_id})
        return run_id


class TuneWorker(Tune):
    """One of the workers a `tune` with backend=ray starts, as a Ray task: it runs trials of the shared
    study in a child run of that command's run, which alone logs the summary and makes the final run."""

    @property
    def name(self) -> str:
        return WORKER_STAGE

    def run_name(self, spec: specs.Tune, resolved: Mapping[str, str]) -> str:
        return f"{WORKER_STAGE}-{super().run_name(spec, resolved).removeprefix('tune-')}"

    def execute(self, spec: specs.Tune, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        ctx = ctx.with_reuse(spec.reuse)
        plan = _plan(spec, resolved, ctx)
        _search(spec, resolved, plan, _study(spec, plan, ctx, run), ctx, run)


def _study(spec: specs.Tune, plan: Plan, ctx: Context, run: StageRun) -> optuna.Study:
    storage = open_storage(plan.storage, ctx.heartbeat_s, mark_stale(ctx))
    study = open_study(plan.study_name, storage, plan.settings, TrialSeededSampler(spec.seed),
                       make_pruner(spec.pruner, plan.base.epochs))
    run.set_tags({STUDY_TAG: plan.study_name, "optuna.storage": masked(plan.storage)})
    return study


def _search(spec: specs.Tune, resolved: Mapping[str, str], plan: Plan, study: optuna.Study, ctx: Context,
            run: StageRun) -> list[int]:
    """Trials in this process until the study's budget (over all workers) is spent or timeout_s passed;
    returns the trials other workers still run then."""
    budget = StudyBudget(int(resolved.get("n_trials", spec.n_trials)), worker_gone(ctx), mark_stale(ctx))
    run_study(study, _objective(plan, ctx, run), budget, spec.timeout_s or None, catch=TRIAL_ERRORS)
    return budget.running(study)


def _placement(spec: specs.Tune, retries: int) -> Placement:
    from simclr_s2.cluster.dispatch import Placement

    return Placement(spec.ray_address, spec.cpus_per_worker, spec.gpus_per_worker, spec.workers, retries)


def _cluster(spec: specs.Tune) -> AbstractContextManager:
    """Connected to the Ray cluster for the whole command with backend=ray (workers, then the final run)."""
    if spec.backend != "ray":
        return nullcontext()
    from simclr_s2.cluster.connection import connected

    return connected(spec.ray_address)


def _search_on_ray(spec: specs.Tune, plan: Plan, ctx: Context, run: StageRun) -> None:
    """`workers` Ray tasks, each a TuneWorker joining the study on its shared storage. A worker is never
    retried: the study's budget is shared, so the others run the trials a lost one leaves, and Optuna's
    heartbeat fails the trial it held."""
    from simclr_s2.cluster import connection, dispatch

    if make_url(plan.storage).get_backend_name() == "sqlite" and connection.node_count() > 1:
        raise UserError(f"storage: the {connection.node_count()} machines of the Ray cluster cannot share a "
                        "SQLite file; give a database URL (postgresql://user@host/db) every node reaches")
    encoder = {} if plan.base.pretrained is None else {"pretrained": plan.base.pretrained}
    fixed = {"split": plan.base.split, "storage": plan.storage, "backend": "local", "workers": 1,
             "final_run": False, **encoder}
    params = {**vars(spec), **fixed}
    jobs = [dispatch.Job(f"{WORKER_STAGE}-{i}", TUNE_WORKER, params) for i in range(1, spec.workers + 1)]
    outcomes = dispatch.run_jobs(jobs, ctx, run.run_id, _placement(spec, retries=0), "workers")
    run.log_metrics({"workers_failed": sum(bool(o.error) for o in outcomes)})  # each logged as it ended


TUNE = Tune()
TUNE_WORKER = TuneWorker()
