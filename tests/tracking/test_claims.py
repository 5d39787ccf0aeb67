"""One live run per key: a claim two runs cannot both win, in whatever order their writes and reads fall.
Runs are held at the `claim` fault point (made and tagged, claim not yet written) or right after the
write, by events and barriers, never by a timer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from simclr_s2 import faults
from simclr_s2.tracking import tracker
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.liveness import CLAIM_TAG, CLAIMS_MODEL, PID_START_TAG, claim, holder_tags
from simclr_s2.tracking.tracker import KEY_TAG, DuplicateRunError, StageRun, Step, Tracker

STEP = Step("s", {"a": "1"}, code="c")
WAIT_S = 120  # a bound on every wait, so a broken claim fails the test instead of hanging it


def _claims_left(ctx) -> list:
    return Tracking.of(ctx).client.search_model_versions(f"name = '{CLAIMS_MODEL}' and tags.`{CLAIM_TAG}` = "
                                                         f"'{ctx.experiment_id}/{STEP.key}'")


def _at_claim(monkeypatch, hold: Callable[[], None]) -> None:
    """Call `hold` in every run that reaches the `claim` fault point."""
    point = faults.point

    def holding(name: str, epoch: int) -> None:
        if name == "claim":
            hold()
        point(name, epoch)

    monkeypatch.setattr(faults, "point", holding)


def _open(ctx, body: Callable[[StageRun], None], outcomes: list,
          refused: Callable[[], object] = lambda: None) -> threading.Thread:
    """A thread opening the run of STEP as a command does (`on_duplicate="fail"`), recording its run id or
    its error in `outcomes`; `refused` is called after a refusal."""
    def attempt() -> None:
        try:
            with Tracker(ctx).open(STEP, run_name="s") as run:
                body(run)
            outcomes.append(run.run_id)
        except DuplicateRunError as error:
            outcomes.append(error)
            refused()
        except BaseException as error:  # noqa: BLE001 - recorded for the test to show
            outcomes.append(error)

    thread = threading.Thread(target=attempt)
    thread.start()
    return thread


def test_a_run_held_before_its_claim_loses_to_the_one_that_claimed_meanwhile(ctx, monkeypatch):
    """The race seen in practice: the first run was made and tagged first, then the second claimed and won
    before the first wrote its claim. Ordered by a time either took before writing, both would train."""
    reached, go = threading.Event(), threading.Event()
    first = threading.current_thread()

    def hold_the_first() -> None:
        if threading.current_thread() is not first:
            reached.set()
            assert go.wait(WAIT_S)

    _at_claim(monkeypatch, hold_the_first)
    early: list = []
    thread = _open(ctx, lambda run: None, early)
    assert reached.wait(WAIT_S)
    with Tracker(ctx).open(STEP, run_name="s") as run:  # made later, claims first
        go.set()
        thread.join(WAIT_S)
    (refused,) = early
    assert isinstance(refused, DuplicateRunError) and run.run_id in str(refused)
    assert Tracking.of(ctx).client.get_run(run.run_id).info.status == "FINISHED"
    assert [r.info.status for r in Tracker(ctx).unfinished(STEP)] == ["FAILED"]
    assert _claims_left(ctx) == []


def test_two_runs_that_both_wrote_before_either_read_agree_on_one(ctx, monkeypatch):
    both_written = threading.Barrier(2, timeout=WAIT_S)
    claim = tracker.claim

    def claim_then_wait(*args) -> int:
        version = claim(*args)
        both_written.wait()
        return version

    monkeypatch.setattr(tracker, "claim", claim_then_wait)
    outcomes: list = []
    threads = [_open(ctx, lambda run: None, outcomes) for _ in range(2)]
    for thread in threads:
        thread.join(WAIT_S)
    won = [o for o in outcomes if isinstance(o, str)]
    assert len(won) == 1 and isinstance(next(o for o in outcomes if o not in won), DuplicateRunError)
    assert _claims_left(ctx) == []


def test_of_many_identical_runs_started_together_exactly_one_trains_and_registers(ctx, monkeypatch, tmp_path):
    """Each of 50 threads stands for a process. Unlike processes, they share one client and so one
    SQLAlchemy pool, and MLflow opens a second session inside create_run and set_tag: the pool holds two
    connections a thread, so no thread waits on the pool (a thread holding SQLite's write lock while it
    waited there for its second connection stalled the others until the pool's 30 s timeout, under load)."""
    contenders = 50
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", str(2 * contenders + 5))
    ctx = replace(ctx, tracking_uri=f"sqlite:///{tmp_path}/many.db")
    start = threading.Barrier(contenders, timeout=WAIT_S)
    _at_claim(monkeypatch, start.wait)  # all made and tagged, then all claim at once
    settled = threading.Barrier(contenders, timeout=WAIT_S)  # the winner stays live until the others gave up
    model = f"twin-{ctx.experiment_id}"
    Tracking.of(ctx).client.create_registered_model(model)

    def train_and_register(run: StageRun) -> None:
        Tracking.of(ctx).client.create_model_version(model, f"runs:/{run.run_id}/model", run_id=run.run_id)
        settled.wait()

    outcomes: list = []
    threads = [_open(ctx, train_and_register, outcomes, settled.wait) for _ in range(contenders)]
    for thread in threads:
        thread.join(WAIT_S)
    won = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, DuplicateRunError)]
    assert (len(won), len(refused)) == (1, contenders - 1), [o for o in outcomes if o not in won + refused]
    (version,) = Tracking.of(ctx).client.search_model_versions(f"name = '{model}'")
    assert version.run_id == won[0] and _claims_left(ctx) == []


@pytest.mark.parametrize("retry", [False, True], ids=["next-run", "retry-of-the-same-run"])
def test_a_killed_runs_claim_does_not_block_the_next_run(ctx, retry):
    """A run killed while holding its key leaves its claim and its run RUNNING: its process is gone, so the
    next identical run (or a cluster retry continuing that very run) takes the key and removes that claim."""
    killed = Tracking.of(ctx).client.create_run(ctx.experiment_id, tags={
        KEY_TAG: STEP.key, **holder_tags(ctx.heartbeat_s), PID_START_TAG: "1.00"}).info.run_id
    left = claim(Tracking.of(ctx).client, ctx.experiment_id, STEP.key, killed)
    with Tracker(ctx).open(STEP, run_name="s", run_id=killed if retry else None) as run:
        assert [int(v.version) for v in _claims_left(ctx)] == [run.claim] != [left]
    assert _claims_left(ctx) == []
    assert Tracking.of(ctx).client.get_run(killed).info.status == ("FINISHED" if retry else "FAILED")
