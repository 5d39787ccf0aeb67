"""How a stage runs: as the command itself (`run_command`, what an entry point does) or as a step another
command needs (`ensure_step`: reused when finished, awaited when running elsewhere, else run now)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from simclr_s2 import disk
from simclr_s2.learning import distributed
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import Spec
from simclr_s2.tracking.tracker import StageRun, Step, Tracker
from simclr_s2.tracking.tracker import written_folders as run_folders

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Spec)


class Stage(Generic[S]):
    """A use case. Subclasses set `spec` and implement `execute`; `resolve` turns `auto` values into
    what they stand for (running the demo chain when `make`, finding it otherwise) before the run opens."""

    spec: ClassVar[type[Spec]]
    system_metrics: ClassVar[bool] = False
    read_only: ClassVar[bool] = False  # evaluate, compare, promote: find `auto`, never make it
    exclusive: ClassVar[bool] = True  # refuse a second identical run while one is live

    @property
    def name(self) -> str:
        return self.spec.entry_point

    def resolve(self, spec: S, ctx: Context, make: bool = True) -> dict[str, str]:
        return {}

    def run_name(self, spec: S, resolved: Mapping[str, str]) -> str:
        return self.name

    def tags(self, spec: S, resolved: Mapping[str, str]) -> dict[str, Any]:
        return {}

    def execute(self, spec: S, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        raise NotImplementedError

    def dry_run(self, spec: S, ctx: Context) -> None:
        """What a `dry_run=true` shows, without opening a run or writing anything."""
        raise NotImplementedError

    def step(self, spec: S, resolved: Mapping[str, str]) -> Step:
        return Step(self.name, spec.given(), dict(resolved))


def run_command(stage: Stage[S], spec: S, ctx: Context) -> str | None:
    """The command an entry point runs: its own run (the one `mlflow run` made, when there is one),
    never reusing a finished one: it was asked for. A dry run opens no run. Returns the run id."""
    if getattr(spec, "dry_run", False):
        stage.dry_run(spec, ctx)
        return None
    with distributed.session():
        resolved = distributed.main_only(lambda: stage.resolve(spec, ctx, make=not stage.read_only))
        tracker = Tracker(ctx)
        with tracker.open(stage.step(spec, resolved), run_name=stage.run_name(spec, resolved),
                          tags=stage.tags(spec, resolved), run_id=ctx.launcher_run_id,
                          on_duplicate="fail" if stage.exclusive else "allow",
                          system_metrics=stage.system_metrics) as run:
            try:
                stage.execute(spec, resolved, run, ctx)
            except Exception as error:  # a full disk naming no file: the run's reason names the folder too
                named = disk.unnamed(error, written_folders(spec, ctx))
                if named is None or named is error:
                    raise
                raise named from error
        return run.run_id


def written_folders(spec: Spec, ctx: Context | None) -> dict[str, Path]:
    """The folders a command writes, by what they are to a person: where a full disk that names no file
    is looked for."""
    out = getattr(spec, "out", None)
    folders = {"out": Path(out).expanduser()} if isinstance(out, str) and out != "auto" else {}
    return {**folders, **run_folders(ctx)}  # on a tie, the first is named


def ensure_step(stage: Stage[S], spec: S, ctx: Context, *, parent_run_id: str | None = None,
                tags: Mapping[str, str] | None = None, usable: Callable[[Run], bool] | None = None) -> Run:
    """The finished run of `stage` with `spec` (see Tracker.ensure)."""
    resolved = stage.resolve(spec, ctx)
    return Tracker(ctx).ensure(stage.step(spec, resolved), lambda run: stage.execute(spec, resolved, run, ctx),
                               run_name=stage.run_name(spec, resolved),
                               tags={**stage.tags(spec, resolved), **(tags or {})},
                               parent_run_id=parent_run_id, usable=usable)


def find_step(stage: Stage[S], spec: S, ctx: Context) -> Run | None:
    """The finished run of `stage` with `spec`, without running anything (read-only commands)."""
    return Tracker(ctx).find_complete(stage.step(spec, stage.resolve(spec, ctx, make=False)))
