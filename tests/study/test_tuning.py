"""tune: pruned trials are marked in MLflow and the best settings logged and trained once more; two workers
on one storage share a study without duplicate trials and make one final run; a study whose worker process
was killed resumes, fails the trial it lost and runs its settings again. Workers are held and killed at
named points, never raced; a worker runs in this process as its entry point runs it (a held one in a
thread, `Project.held`), the killed one in a process forked from this one (a fresh process's imports cost
about 8 CPU-seconds). Trials fine-tune only the head of an untrained encoder written once per module
(features are cached, so no encoder is pretrained and each trial is cheap); one-epoch trials on 15 patches
keep the file near 3 minutes on two busy cores."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch
from forked import forked_exit_code
from mlflow.entities import Run
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState
from project_runner import Project

from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.errors import UserError
from simclr_s2.faults import FAULT_ENV
from simclr_s2.learning.models import build_simclr
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.settings.specs import Tune
from simclr_s2.stages import classifier as classifier_stage
from simclr_s2.stages import tune as tune_stage
from simclr_s2.stages.base import run_command
from simclr_s2.stages.inputs import SOURCE
from simclr_s2.stages.tune import FINAL_RUN_TAG, RUN_ATTR, TRIAL_STAGE, TUNE
from simclr_s2.study.search_space import SearchSpace, check_metric
from simclr_s2.study.splits import create_splits
from simclr_s2.study.tuning import (
    RETRY_ATTR,
    StudyBudget,
    StudyFull,
    StudySettings,
    TrialSeededSampler,
    best_trial,
    make_pruner,
    masked,
    open_storage,
    open_study,
    run_study,
    save_plots,
    storage_url,
)
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.fingerprint import package_fingerprint

ROOT = Path(__file__).resolve().parents[2]
STUDY = "demo-study"
ENCODER = "encoder.pt"
FRACTION = 50
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def demo_split(demo_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Basic-scheme splits of the shared demo archive; tuned at fraction 50: 15 training, 3 validation patches."""
    out = tmp_path_factory.mktemp("tune-splits")
    create_splits(load_index(demo_index), "basic", out, fractions=(FRACTION,), index_digest=index_digest(demo_index))
    source = {"index": str(demo_index), "archive_root": str(index_archive_root(demo_index))}
    (out / "basic" / SOURCE).write_text(json.dumps(source))
    torch.manual_seed(0)
    torch.save(build_simclr("resnet18", 10).state_dict(), out.parent / ENCODER)
    return out


@pytest.fixture(scope="module")
def empty_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new tracking database, made once and copied per test: making one (its migrations) takes seconds."""
    path = tmp_path_factory.mktemp("tracking") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path.parent)  # the default experiment's artifacts go beside the database
        Tracking(f"sqlite:///{path}").client.search_experiments()
    return path


@pytest.fixture
def env(tmp_path: Path, empty_tracking_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A temporary tracking store and work home, for this process's context and the workers it starts (the
    store only in the returned environment, never this process's). One torch thread each: on busy cores,
    two threads per process run several times slower than one."""
    shutil.copy(empty_tracking_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMCLR_S2_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def _args(split: Path, storage: str, n_trials: int, epochs: int = 1, final_run: bool = False) -> list[str]:
    """A fine-tune study on a state-dict encoder with the frozen part cached: trials cost a feature pass
    and a few small matrix products, so the workers' start-up is most of a test."""
    return ["--target", "finetune", "--pretrained", str(split.parent / ENCODER), "--trainables", "head2",
            "--split", str(split), "--fraction", str(FRACTION), "--epochs", str(epochs),
            "--n-trials", str(n_trials), "--storage", storage, "--study-name", STUDY, "--batch-sizes", "8,16",
            "--lr-min", "1e-4", "--lr-max", "1e-2", "--final-run", str(final_run).lower()]


def _runs(env: dict[str, str], stage: str) -> list[Run]:
    client = Tracking(env["MLFLOW_TRACKING_URI"]).client
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.stage = '{stage}'")


def _trial_runs(env: dict[str, str]) -> dict[int, Run]:
    runs = _runs(env, TRIAL_STAGE)
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    assert len(by_trial) == len(runs), "two MLflow runs for one trial"
    return by_trial


def _values(args: list[str]) -> dict[str, str]:
    """Command-line arguments as the spec's parameters."""
    return {a.removeprefix("--").replace("-", "_"): v for a, v in zip(args[::2], args[1::2], strict=True)}


def _tune_here(args: list[str], env: dict[str, str]) -> None:
    """A worker in this process: `tune` with these command-line arguments, as its entry point runs it."""
    run_command(TUNE, build(Tune, _values(args)), Context.from_env(env))


def _killed_worker(args: list[str], env: dict[str, str], fault: str | Callable[[], None]) -> int | None:
    """The exit status of a worker process forked from this one (its imports done) that SIMCLR_S2_FAULT
    `fault` kills, or that `fault`, called in it first, set up to die; one that outlives the timeout is
    killed here."""
    def work() -> None:
        if callable(fault):
            fault()
        else:
            os.environ[FAULT_ENV] = fault  # the fault points read this process's environment
        _tune_here(args, env)

    return forked_exit_code(work)


class PruneTrialOne(BasePruner):
    """Prunes trial 1 at its first report, whatever the metrics: a pruned trial every time."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return trial.number == 1


def test_pruned_trial_is_marked_in_mlflow_and_the_best_is_logged(demo_split, env, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_stage, "make_pruner", lambda name, epochs: PruneTrialOne())
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _tune_here(_args(demo_split, storage, n_trials=2, epochs=2), env)

    client = Tracking(env["MLFLOW_TRACKING_URI"]).client
    (parent,) = _runs(env, "tune")
    trials = _trial_runs(env)
    assert sorted(trials) == [0, 1]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials.values()} == {parent.info.run_id}
    pruned = trials[1]
    assert (pruned.info.status, pruned.data.tags["optuna.state"]) == ("KILLED", "PRUNED")
    assert pruned.data.tags["optuna.pruned_at_epoch"] == "1"
    assert len(client.get_metric_history(pruned.info.run_id, "val_f1")) == 1
    done = trials[0]
    assert (done.info.status, done.data.tags["optuna.state"]) == ("FINISHED", "COMPLETE")
    assert len(client.get_metric_history(done.info.run_id, "val_f1")) == 2
    assert {"lr", "dropout", "weight_decay", "batch_size"} <= set(done.data.params)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_f1"] == pytest.approx(study.best_value)
    assert float(parent.data.params["best_lr"]) == pytest.approx(study.best_params["lr"])
    assert parent.data.tags["optuna.best_run_id"] == done.info.run_id
    assert parent.data.metrics["trials_pruned"] == 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    # one completed trial: no parameter importances yet (see test_plots_...)
    assert artifacts == {f"tune/{name}" for name in ("trials.csv", "optimization_history.png",
                                                      "intermediate_values.png")}


def test_every_trial_starts_from_the_pretrained_weights(demo_split, env, tmp_path, monkeypatch):
    """Trials share one loaded encoder: with every layer trained, a trial must not start where the last ended."""
    starts: list[torch.Tensor] = []
    fit = classifier_stage.fit

    def recording_fit(model, *args, **kwargs):
        starts.append(model.encoder.conv1.weight.detach().clone())
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(classifier_stage, "fit", recording_fit)
    args = _args(demo_split, f"sqlite:///{tmp_path}/optuna.db", n_trials=2)
    args[args.index("--trainables") + 1] = "all"
    _tune_here(args, env)
    assert len(starts) == 2 and torch.equal(starts[0], starts[1])


def test_two_workers_share_one_study_without_duplicate_trials(demo_split, env, tmp_path, capsys):
    """The first worker, in a thread, is held inside its first trial while the second runs: both run trials,
    however fast. The workers meet only in the two stores, as processes would. The second ends while the
    first's trial runs: the first, ending last, makes the study's one final run, from the best of all."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = _args(demo_split, storage, n_trials=3, final_run=True)
    first = Project(tmp_path, {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    with first.held(TUNE, "trial0_after_log@0", tmp_path, **_values(args)) as held:
        _tune_here(args, env)
        assert "no final run here: trial 0 of study demo-study still running" in capsys.readouterr().out
    held.result(timeout=300)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    finals = [r.data.tags[FINAL_RUN_TAG] for r in _runs(env, "tune") if FINAL_RUN_TAG in r.data.tags]
    assert len(finals) == 1
    (final,) = [r for r in _runs(env, "finetune") if r.data.tags.get("simclr_s2.tuned") == "true"]
    assert final.info.run_id == finals[0]
    assert float(final.data.params["lr"]) == pytest.approx(study.best_params["lr"])

    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    done = [t for t in trials if t.state in FINISHED_STATES]
    assert len(done) == 3  # the study's total, not 3 per worker
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert len({t.params["lr"] for t in done}) == 3  # the workers did not draw the same settings

    runs = _trial_runs(env)
    assert {t.user_attrs[RUN_ATTR] for t in done} == {runs[t.number].info.run_id for t in done}
    parents = {r.info.run_id for r in _runs(env, "tune")}
    assert len(parents) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == parents  # both workers ran trials


@pytest.mark.parametrize("stale", [True, False], ids=["after-optuna-heartbeat", "at-once"])
def test_an_interrupted_study_resumes_and_fails_the_lost_trial(demo_split, env, tmp_path, stale):
    """Rerun once Optuna's heartbeat has gone stale, or at once (the default 60 s heartbeat, far from stale):
    either way the lost trial is failed, not counted, and the rerun runs one in its place."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    env = {**env, "SIMCLR_S2_HEARTBEAT_S": "1" if stale else "60"}  # 1: a lost trial is stale after 2 s
    args = _args(demo_split, url, n_trials=2)
    assert _killed_worker(args, env, "trial1_after_log@0") == -signal.SIGKILL  # inside its second trial
    storage = open_storage(url)  # after the fork: the worker shares no connection of this process
    if stale:
        # Past the lost trial's grace period (2 x 1 s), which SQLite counts in whole seconds (Optuna's
        # heartbeats are its CURRENT_TIMESTAMP): stale when they differ by 3, surely so 3 s after the worker
        # died. (2.5 s passed only while the resuming worker was a process: its start-up took the rest.)
        time.sleep(3.5)

    # The study resumed here, by the code the killed worker ran: the run key holds the code's fingerprint,
    # which this process took (and cached) at its first run, maybe before an edit of the sources.
    package_fingerprint.cache_clear()
    _tune_here(args, env)

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert (trials[2].params, trials[2].user_attrs[RETRY_ATTR]) == (trials[1].params, 1)  # the lost settings
    runs = _trial_runs(env)
    lost = runs[1]
    assert (lost.info.status, lost.data.tags["optuna.state"]) == ("FAILED", "FAIL")
    assert {runs[0].info.status, runs[2].info.status} == {"FINISHED"}
    first_parent = Tracking(env["MLFLOW_TRACKING_URI"]).client.get_run(lost.data.tags["mlflow.parentRunId"])
    assert first_parent.info.status == "FAILED"
    assert "interrupted" in first_parent.data.tags["simclr_s2.error"]


def _dies_opening_trial_run(number: int) -> Callable[[], None]:
    """Set up the worker to die as trial `number`'s MLflow run is about to be made (its settings drawn)."""
    def setup() -> None:
        open_run = Tracking.open

        def dying(self: Tracking, experiment_id: str, name: str, *args: object, **kwargs: object) -> str:
            if name == f"trial-{number}":
                os.kill(os.getpid(), signal.SIGKILL)
            return open_run(self, experiment_id, name, *args, **kwargs)

        Tracking.open = dying  # in the forked worker only

    return setup


def test_a_trial_lost_before_its_run_was_made_is_run_again(demo_split, env, tmp_path):
    """Its worker is known from the trial's first moment: a rerun at once (Optuna's 60 s heartbeat far from
    stale) fails it, ends the dead worker's run and runs its settings, instead of finding the budget spent."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    args = _args(demo_split, url, n_trials=2)
    assert _killed_worker(args, env, _dies_opening_trial_run(1)) == -signal.SIGKILL
    storage = open_storage(url)
    package_fingerprint.cache_clear()
    _tune_here(args, env)

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params and trials[2].user_attrs[RETRY_ATTR] == 1
    assert sorted(_trial_runs(env)) == [0, 2]  # the lost trial never had a run
    statuses = sorted(r.info.status for r in _runs(env, "tune"))
    assert statuses == ["FAILED", "FINISHED"]  # the dead worker's run is ended


def test_an_encoder_alias_is_pinned_to_its_version(env):
    """The tune run's key, its study's settings and its final run name the weights, not the alias: after the
    alias moves, a rerun makes a new final run rather than reusing the old encoder's."""
    client = Tracking(env["MLFLOW_TRACKING_URI"]).client
    run_id = client.create_run("0").info.run_id
    client.create_registered_model("enc")
    for _ in range(2):
        client.create_model_version("enc", f"runs:/{run_id}/model", run_id=run_id)
    ctx = Context.from_env(env)
    by_alias = build(Tune, {"pretrained": "models:/enc@ben", "split": "given"})
    for version in ("1", "2"):
        client.set_registered_model_alias("enc", "ben", version)
        assert TUNE.resolve(by_alias, ctx, make=False)["pretrained"] == f"models:/enc/{version}"
    pinned = build(Tune, {"pretrained": "models:/enc/2", "split": "given"})
    assert "pretrained" not in TUNE.resolve(pinned, ctx, make=False)  # logged once, as given


@pytest.mark.parametrize("completed", [1, 2])
def test_plots_rank_parameters_once_two_trials_completed(tmp_path, completed):
    study = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    for n in range(completed + 1):
        trial = study.ask()
        SearchSpace().suggest(trial, ("trainable",))
        trial.report(0.5, step=1)
        study.tell(trial, float(n) if n < completed else None,
                   state=TrialState.COMPLETE if n < completed else TrialState.PRUNED)
    names = {p.stem for p in save_plots(study, tmp_path)}
    assert names == ({"optimization_history", "intermediate_values"}
                     | ({"param_importances"} if completed > 1 else set()))


@pytest.mark.parametrize("name", ["median", "hyperband"])
def test_the_named_pruners_stop_hopeless_trials(name):
    """A synthetic search whose best lr is 1e-3: trials far from it are pruned before their last epoch."""
    study = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0), pruner=make_pruner(name, 9))

    def objective(trial: optuna.Trial) -> float:
        quality = -abs(math.log10(SearchSpace().suggest(trial, ())["lr"]) + 3)
        for epoch in range(1, 10):
            trial.report(quality + epoch / 100, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned
        return quality + 0.09

    study.optimize(objective, n_trials=30)
    assert len(study.get_trials(states=(TrialState.PRUNED,))) >= 5
    with pytest.raises(UserError):
        make_pruner("patience", 9)


def test_a_running_trial_whose_worker_is_gone_is_failed_and_queued_again():
    """Known gone (`lost`), a running trial is failed at once, reported, and queued again: its retry counts
    in its place. One still at work counts."""
    study = optuna.create_study()
    gone, _working = study.ask(), study.ask()
    reported: list[tuple[int, TrialState]] = []
    budget = StudyBudget(2, lost=lambda t: t.number == gone.number,
                         on_lost=lambda s, t: reported.append((t.number, t.state)))
    assert budget.spent(study) == 2
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[2].user_attrs[RETRY_ATTR] == gone.number
    assert reported == [(gone.number, TrialState.FAIL)]
    assert budget.running(study) == [1]


def test_a_lost_trial_another_worker_failed_first_is_queued_again_once():
    """Two workers find the same trial's worker gone: the one whose fail comes second neither queues nor
    reports it."""
    study = optuna.create_study()
    study.ask()

    def failed_meanwhile(trial: FrozenTrial) -> bool:
        study.tell(trial.number, state=TrialState.FAIL)  # the other worker, between this one's read and fail
        return True

    reported: list[int] = []
    StudyBudget(2, lost=failed_meanwhile, on_lost=lambda s, t: reported.append(t.number)).fail_lost(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL] and reported == []


@pytest.mark.parametrize("drew", [True, False], ids=["lost-after-its-draw", "lost-before-it"])
def test_a_resumed_study_tries_the_settings_of_the_unbroken_one(drew):
    """A study whose first trial lost its worker, resumed: the same settings complete as in the unbroken
    study, whether the lost trial had drawn its settings or not, and the budget still holds."""
    def objective(trial: optuna.Trial) -> float:
        return SearchSpace().suggest(trial, ("trainable",))["lr"]

    def completed(study: optuna.Study) -> list[dict[str, object]]:
        return sorted((t.params for t in study.get_trials(states=(TrialState.COMPLETE,))), key=str)

    unbroken = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    run_study(unbroken, objective, StudyBudget(3))
    resumed = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    lost = resumed.ask()
    if drew:
        SearchSpace().suggest(lost, ("trainable",))
    run_study(resumed, objective, StudyBudget(3, lost=lambda t: t.number == lost.number))
    assert completed(resumed) == completed(unbroken)
    assert [t.state for t in resumed.trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3


def test_of_equal_values_the_best_trial_is_the_earliest_draw_so_a_resumed_study_picks_the_unbroken_ones():
    """Every trial scores the same: the best is the first draw, by its settings, not by the trials' numbers or
    the database's order (unspecified among ties). A study whose trial 0 lost its worker while another worker
    finished trials 1 and 2 runs it again as trial 3, and makes its final run with the unbroken study's
    settings."""
    def objective(trial: optuna.Trial) -> float:
        SearchSpace().suggest(trial, ("trainable",))
        return 0.75

    unbroken = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    run_study(unbroken, objective, StudyBudget(3))
    resumed = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    lost = resumed.ask()
    SearchSpace().suggest(lost, ("trainable",))
    run_study(resumed, objective, StudyBudget(3))  # the other worker: trials 1 and 2, trial 0 still running
    run_study(resumed, objective, StudyBudget(3, lost=lambda t: t.number == lost.number))
    assert resumed.trials[3].user_attrs[RETRY_ATTR] == lost.number
    assert best_trial(resumed).params == best_trial(unbroken).params == unbroken.trials[0].params


def test_a_trial_beyond_the_study_budget_is_given_up_before_it_runs():
    """Two workers asking for the study's last trial at once: the later one gives its trial up."""
    study = optuna.create_study()
    study.ask()  # the other worker's trial, still running
    budget, ran = StudyBudget(1), []

    def objective(trial: optuna.Trial) -> float:
        budget.claim(trial)
        ran.append(trial.number)
        return 1.0

    study.optimize(objective, n_trials=2, catch=(StudyFull,))
    assert ran == []
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.FAIL]


def _settings(**changes: object) -> StudySettings:
    base = {"target": "baseline", "pretrained": "auto", "split": "auto", "scheme": "basic", "fraction": 10,
            "metric": "val_f1", "epochs": 2, "seed": 0, "pruner": "median", "space": SearchSpace()}
    return StudySettings(**{**base, **changes})


def test_joining_a_study_with_other_settings_is_refused(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    open_study("s", storage, _settings(), TrialSeededSampler(0), optuna.pruners.NopPruner())
    open_study("s", storage, _settings(pretrained="ignored-for-baseline"), TrialSeededSampler(1),
               optuna.pruners.NopPruner())
    with pytest.raises(UserError, match=r"epochs=2 \(now 5\)"):
        open_study("s", storage, _settings(epochs=5), TrialSeededSampler(0), optuna.pruners.NopPruner())


@pytest.mark.parametrize(("change", "message"), [({"seed": 1}, r"seed=0 \(now 1\)"),
                                                 ({"pruner": "hyperband"}, r"pruner=median \(now hyperband\)")])
def test_joining_a_study_with_another_seed_or_pruner_is_refused(tmp_path, change, message):
    """Either changes what the trials train or which of them stop: the joined study would mix two searches."""
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    open_study("s", storage, _settings(), TrialSeededSampler(0), optuna.pruners.NopPruner())
    with pytest.raises(UserError, match=message):
        open_study("s", storage, _settings(**change), TrialSeededSampler(0), optuna.pruners.NopPruner())


def test_sampler_draws_depend_on_seed_and_trial_number_only():
    def draws(seed: int, numbers: range) -> list[float]:
        study = optuna.create_study(sampler=TrialSeededSampler(seed))
        out = []
        for _ in numbers:
            trial = study.ask()
            out.append(trial.suggest_float("lr", 1e-5, 1e-2, log=True))
            study.tell(trial, 0.0)
        return out

    first = draws(0, range(3))
    assert first == draws(0, range(3))
    assert len(set(first)) == 3
    assert first != draws(1, range(3))


def test_storage_urls(tmp_path):
    assert storage_url("auto", tmp_path) == f"sqlite:///{tmp_path}/tune/optuna.db"
    # the project's PostgreSQL driver, not SQLAlchemy 2.1's default psycopg 3
    assert storage_url("postgresql://me@db:5432/optuna", tmp_path) == "postgresql+psycopg2://me@db:5432/optuna"
    assert masked("postgresql+psycopg2://me:secret@db/optuna") == "postgresql+psycopg2://me:***@db/optuna"
    with pytest.raises(UserError, match="database URL"):
        storage_url("optuna.db", tmp_path)


def test_test_metrics_are_refused():
    with pytest.raises(UserError, match="leak the test set"):
        check_metric("test_auc")


@pytest.mark.parametrize("bad", [{"metric": "val_loss"}, {"target": "pretrain"}])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        _settings(**bad)


@pytest.mark.parametrize("bad", [{"lr_min": 1e-2, "lr_max": 1e-3}, {"dropout_max": 1.0}, {"batch_sizes": ()},
                                 {"trainables": ("everything",)}])
def test_bad_search_spaces_are_user_errors(bad):
    with pytest.raises(UserError):
        SearchSpace(**bad)
