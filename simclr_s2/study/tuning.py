"""Optuna search over the classifier's training settings, without MLflow (simclr_s2.tracking.tuning adds
the runs): the search space, a sampler that several workers can share, the pruners, a study in a
database that workers join by name, and a trial budget for the whole study rather than per worker.

Several workers (processes or machines) started with the same study name and storage join one study:
the database hands out trial numbers, so no two workers run the same trial. A worker that dies leaves
its trial RUNNING; every worker sends heartbeats while a trial runs, and the next worker to start a
trial fails trials whose heartbeat stopped (Optuna's RDBStorage heartbeat), so a rerun resumes the study.
Optuna waits two heartbeats of silence; a worker that can tell sooner that a trial's worker is gone (the
caller's `lost`, e.g. its process dead on this machine) fails the trial at once, so a rerun started right
after its worker was killed does not count the dead one. Either way the lost trial is queued again
(`requeue`): its settings, or its draw when it died before drawing, are what the next trial runs, so a
resumed study tries the settings of the unbroken one.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from simclr_s2.errors import UserError
from simclr_s2.study.search_space import PRUNERS, TARGETS, SearchSpace, check_metric, storage_problem

log = logging.getLogger(__name__)

SETTINGS_ATTR = "simclr_s2.settings"
RETRY_ATTR = "retry_of"  # a trial's user attribute: the number of the lost trial it runs again
DEFAULT_HEARTBEAT_S = 60
OPEN_ATTEMPTS = 5
# Trials that use up the budget: finished ones that told something, those still running, and queued retries.
SPENT_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


Lost = Callable[[FrozenTrial], bool]
"""Whether a RUNNING trial's worker is known to be gone; False when unsure (Optuna's heartbeat decides then)."""
OnLost = Callable[[optuna.Study, FrozenTrial], None]
"""Called with a trial failed because its worker is gone, as Optuna calls its stale-trial callback."""


class StudyFull(Exception):
    """Raised by a trial that another worker's trial made surplus; Optuna records it as failed."""


@dataclass(frozen=True)
class StudySettings:
    """What the trials of one study must share for their values to be comparable; a worker joining an
    existing study with other settings is refused. The seed sets each trial's draws and training, the
    pruner which trials stop early: a worker with another would add trials of another search."""

    target: str
    pretrained: str
    split: str
    scheme: str
    fraction: int
    metric: str
    epochs: int
    seed: int
    pruner: str
    space: SearchSpace

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"target: expected one of {', '.join(TARGETS)}, got {self.target}")
        check_metric(self.metric)

    def as_attr(self) -> dict[str, str]:
        flat = {**asdict(self), **asdict(self.space)}
        del flat["space"]
        if self.target == "baseline":  # neither decides a baseline's result
            del flat["pretrained"], flat["trainables"]
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in flat.items()}


def default_study_name(target: str, scheme: str, fraction: int) -> str:
    return f"{target}-{scheme}-{fraction}pct"


def storage_url(spec: str, home: Path) -> str:
    """`auto`: a SQLite file under the work home (one machine); else a SQLAlchemy database URL."""
    if spec == "auto":
        folder = home / "tune"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'optuna.db'}"
    if problem := storage_problem(spec):
        raise UserError(f"storage: {problem}, got {masked(spec)}")
    url = make_url(spec)
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the project ships psycopg2.
        return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return spec


def masked(url: str) -> str:
    """`url` without its password, fit for logs and run parameters."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> RDBStorage:
    """The study database, with heartbeats: a trial silent for 2 x `heartbeat_s` is failed, queued again
    (`requeue`) and `on_stale` called, by the next worker that starts a trial."""
    # SQLite serialises writers: wait for the lock instead of failing when workers write at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                  heartbeat_stale_trial_callback=requeued(on_stale))
        except SQLAlchemyError as error:
            # Workers started together on a new database race to create its tables; the loser retries.
            if attempt == OPEN_ATTEMPTS:
                raise UserError(f"storage {masked(url)}: cannot open it ({str(error).splitlines()[0]})") from None
            time.sleep(random.uniform(0.5, 2.0))
        except (ImportError, ValueError) as error:  # no driver for the URL's database, a malformed URL
            raise UserError(f"storage {masked(url)}: cannot open it ({str(error).splitlines()[0]})") from None


class TrialSeededSampler(BaseSampler):
    """TPE whose random draws depend on (seed, trial number) only. A plain TPESampler(seed) draws the
    same sequence in every process, so workers sharing a study would try identical start-up settings;
    seeding per trial keeps a one-worker study reproducible and gives each worker's trials their own.
    A trial draws as the number it would have had without the retries before it (`requeue`), and a retry as
    the trial it runs again: a resumed study draws what the unbroken one did. The constant liar keeps
    concurrent workers from crowding around one promising point."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._tpe = self._for_trial(0)

    def _for_trial(self, number: int) -> TPESampler:
        seed = int(np.random.SeedSequence([self._seed, number]).generate_state(1)[0])
        return TPESampler(seed=seed, constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for_trial(draw_number(study, trial))
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def draw_number(study: optuna.Study, trial: FrozenTrial) -> int:
    """Which draw of the study `trial` makes: its number less the retries before it (a retry's is the lost
    trial's)."""
    number = int(trial.user_attrs.get(RETRY_ATTR, trial.number))
    return number - sum(RETRY_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False) if t.number < number)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a trial failed because its worker was lost to run again: its settings, or (lost before it drew
    them) its draw, so a resumed study tries what the unbroken one would have. Once only: a retry that loses
    its worker too may be what kills it (memory), and its place goes to new settings."""
    if RETRY_ATTR not in trial.user_attrs:
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})


def requeued(on_lost: OnLost | None) -> OnLost:
    """`on_lost` after `requeue`: what is done with a trial failed because its worker was lost."""

    def lost(study: optuna.Study, trial: FrozenTrial) -> None:
        requeue(study, trial)
        if on_lost is not None:
            on_lost(study, trial)

    return lost


def make_pruner(name: str, epochs: int) -> BasePruner:
    """median: stop a trial whose metric falls below the median of earlier trials at the same epoch, once
    5 trials have finished and never before its second epoch (first epochs are noisy); hyperband:
    successive-halving brackets from 1 epoch up to `epochs`."""
    if name == "median":
        return MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    raise UserError(f"pruner: expected one of {', '.join(PRUNERS)}, got {name}")


def open_study(name: str, storage: RDBStorage, settings: StudySettings, sampler: BaseSampler,
               pruner: BasePruner) -> optuna.Study:
    """Create the study or join the one of that name, after checking it was started with the same
    settings; trials left running by a dead worker are failed now, so the study resumes cleanly."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    wanted = settings.as_attr()
    found = study.user_attrs.get(SETTINGS_ATTR)
    if found is None:
        study.set_user_attr(SETTINGS_ATTR, wanted)
    elif found != wanted:
        diff = ", ".join(f"{k}={found.get(k)} (now {wanted.get(k)})" for k in sorted(set(found) | set(wanted))
                         if found.get(k) != wanted.get(k))
        raise UserError(f"study_name {name}: that study was started with {diff}; "
                        f"use the same settings or another study_name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study


class StudyBudget:
    """`n_trials` for the whole study, however many workers share it (Optuna's own n_trials counts per
    worker). Completed, pruned, running and queued trials count; failed ones do not, so a lost trial's
    retry (`requeue`) takes its place. A running trial whose worker `lost` says is gone is failed, queued
    again (and `on_lost` called) before counting: counted as running, it would end the study a trial short
    and stay RUNNING. As a callback it stops this worker once the budget is spent and no retry waits;
    `claim` catches the race of two workers starting the last trial at once."""

    def __init__(self, n_trials: int, lost: Lost | None = None, on_lost: OnLost | None = None) -> None:
        self.n_trials = n_trials
        self.lost, self.on_lost = lost, requeued(on_lost)

    def spent(self, study: optuna.Study, before: int | None = None) -> int:
        self.fail_lost(study)
        trials = study.get_trials(deepcopy=False, states=SPENT_STATES)
        return sum(1 for t in trials if before is None or t.number < before)

    def fail_lost(self, study: optuna.Study) -> None:
        """Fail the running trials whose worker is gone. Another worker may fail one first: then that one
        queues it again and reports it, so a lost trial is run again once."""
        if self.lost is None:
            return
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self.lost(trial) and (failed := _fail(study, trial)) is not None:
                self.on_lost(study, failed)

    def done(self, study: optuna.Study) -> bool:
        """Whether this worker may stop: the budget is spent and no queued retry waits for a worker."""
        return (self.spent(study) >= self.n_trials
                and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def running(self, study: optuna.Study) -> list[int]:
        """The trials still running in other workers (once those whose worker is gone are failed)."""
        self.fail_lost(study)
        return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.done(study):
            study.stop()

    def claim(self, trial: optuna.Trial) -> None:
        """Call first in the objective: raises StudyFull when earlier trials already fill the budget."""
        if self.spent(trial.study, before=trial.number) >= self.n_trials:
            trial.study.stop()
            raise StudyFull(f"trial {trial.number} not run: the study already has {self.n_trials} trials")


def _fail(study: optuna.Study, trial: FrozenTrial) -> FrozenTrial | None:
    """`trial` failed by this worker; None when another worker finished it first."""
    try:
        return study.tell(trial.number, state=TrialState.FAIL)
    except (ValueError, UpdateFinishedTrialError):  # told already ("Cannot tell a FAIL trial"), or meanwhile
        return None


def run_study(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: StudyBudget,
              timeout_s: float | None = None, catch: tuple[type[Exception], ...] = ()) -> None:
    """Run trials in this worker until the study's budget is spent or `timeout_s` has passed. Exceptions
    in `catch` (and StudyFull) fail their trial and the search goes on; others stop the worker."""
    if budget.done(study):
        log.info("study %s already has %d trials; nothing to run", study.study_name, budget.n_trials)
        return

    def claimed(trial: optuna.Trial) -> float:
        budget.claim(trial)
        return objective(trial)

    # n_trials caps this worker too, so one whose trials keep failing cannot loop forever.
    study.optimize(claimed, n_trials=budget.n_trials, timeout=timeout_s or None, catch=(StudyFull, *catch),
                   callbacks=[budget], gc_after_trial=True)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial of the highest value (the study maximises); of equal values the earliest draw
    (`draw_number`). Optuna's own `best_trial` leaves ties to the database's order, which SQL does not fix
    (PostgreSQL's changes as rows are updated), and numbers a retry after the trials other workers ran
    meanwhile: the final run's settings would then depend on timing, not on the seed."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    best = max(t.value for t in done)
    return min((t for t in done if t.value == best), key=lambda t: draw_number(study, t))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = pd.Series([t.state.name for t in study.get_trials(deepcopy=False)]).value_counts()
    return {state.name: int(counts.get(state.name, 0)) for state in TrialState}


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, times, params_*, user_attrs_*."""
    return study.trials_dataframe(attrs=("number", "state", "value", "datetime_start", "datetime_complete",
                                         "duration", "params", "user_attrs"))


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimisation history and per-epoch (intermediate) values, and parameter importances
    when at least two trials completed (fewer cannot rank anything); PNG files in `folder`."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": plots.plot_optimization_history,
        "intermediate_values": plots.plot_intermediate_values,
    }
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
        wanted["param_importances"] = plots.plot_param_importances
    saved = []
    for name, plot in wanted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            try:
                figure = plot(study).figure
            except (ValueError, RuntimeError) as error:  # e.g. importances of parameters that never varied
                log.warning("no %s plot: %s", name, error)
                continue
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        saved.append(path)
    return saved

