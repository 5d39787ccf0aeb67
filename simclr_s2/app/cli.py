"""The boundary every entry point script goes through: parse the command line into the entry point's
spec, build the context, run the use case, exit. Only here do errors become exit statuses:

  0  done
  2  a user error (bad parameter, missing file, broken patch, diverged training, an identical run live,
     a full or read-only disk): one line `error: ...`, and the run ends FAILED with the reason in its
     simclr_s2.error tag
  3  the tracking server stayed unreachable: one line; the run is left as it was (its checkpoints
     stay), and the same command resumes it once the server is back
Anything else is a bug: its traceback is printed, and the run ends FAILED with the exception.
A failed command clears the empty checkpoint folders ended runs left; a dry run under `mlflow run` tags
the run the launcher made `dry_run=true` (it holds nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from simclr_s2 import disk
from simclr_s2.app.context import Context
from simclr_s2.app.spec import build, canonical, fields_of, flag
from simclr_s2.errors import UserError
from simclr_s2.stages.base import Stage, run_command
from simclr_s2.tracking.connectivity import TrackingUnreachable, bound_retries, is_unreachable
from simclr_s2.tracking.endings import fail_if_running, mark_dry_run, remove_empty_checkpoint_folders
from simclr_s2.tracking.tracker import STAGE_TAG, describe

USER_ERROR = 2
UNREACHABLE = 3


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one UserError line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def parser(stage: Stage) -> argparse.ArgumentParser:
    """The command line of an entry point, built from its spec: `--name value` for every parameter."""
    cls = stage.spec
    p = _Parser(prog=f"{cls.entry_point}", description=(cls.__doc__ or "").strip())
    for f in fields_of(cls):
        required = f.default is dataclasses.MISSING
        shown = "" if required else f" (default: {canonical(f.default)})"
        p.add_argument(flag(f.name), dest=f.name, required=required, help=f.metadata["help"] + shown)
    return p


def parse(stage: Stage, argv: Sequence[str] | None) -> object:
    values = {k: v for k, v in vars(parser(stage).parse_args(argv)).items() if v is not None}
    return build(stage.spec, values)


def main(stage: Stage, argv: Sequence[str] | None = None) -> NoReturn:
    """Run `stage` as a command and exit with its status (see the module doc)."""
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO notes (system metrics...) are noise here
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file floods logs
    bound_retries()
    spec = ctx = None
    try:
        spec = parse(stage, argv)
        ctx = Context.from_env()
        run_command(stage, spec, ctx)
        if getattr(spec, "dry_run", False) and ctx.launcher_run_id and main_rank:
            mark_dry_run(ctx.client, ctx.launcher_run_id, {STAGE_TAG: stage.name})
    except TrackingUnreachable as error:
        _give_up(str(error))
    except Exception as error:
        if not isinstance(error, UserError):
            error = disk.unnamed(error, _written(spec, ctx)) or error
        user = isinstance(error, UserError)
        if not user and is_unreachable(error):  # requests' connection errors are OSErrors too
            _give_up(f"tracking server unreachable: {str(error).splitlines()[0]}")
        if main_rank:
            _fail_launcher_run(stage, error)
            _clear_checkpoint_folders(ctx)
        if not user:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR)
    sys.exit(0)


def _written(spec: object, ctx: Context | None) -> dict[str, Path]:
    """The folders a command writes, by what they are to a person: where a full disk that names no file
    is looked for."""
    out = getattr(spec, "out", None)
    folders = {"out": Path(out).expanduser()} if isinstance(out, str) and out != "auto" else {}
    if ctx is not None:
        folders.update({"SIMCLR_S2_DATA": ctx.data_root, "SIMCLR_S2_HOME": ctx.home})
    return {**folders, "the temporary folder": Path(tempfile.gettempdir())}  # on a tie, the first is named


def _fail_launcher_run(stage: Stage, error: BaseException) -> None:
    """The run `mlflow run` made ends FAILED with the reason when the command stopped before (or without)
    taking it over, e.g. a bad parameter caught while parsing."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return
    try:
        ctx = Context.from_env()
        run_id = ctx.launcher_run_id
        fail_if_running(ctx.client, run_id, describe(error), {STAGE_TAG: stage.name})  # unless taken over, ended
    except Exception:  # noqa: BLE001 - the error being reported matters more than this note
        logging.getLogger(__name__).warning("could not mark run %s failed", run_id)


def _clear_checkpoint_folders(ctx: Context | None) -> None:
    """The failed run's checkpoint folder, when it holds nothing (see remove_empty_checkpoint_folders)."""
    if ctx is None:
        return
    try:
        remove_empty_checkpoint_folders(ctx.client, ctx.home / "checkpoints")
    except Exception:  # noqa: BLE001 - the error being reported matters more than this tidying
        logging.getLogger(__name__).warning("could not clear the empty folders in %s", ctx.home / "checkpoints")


def _give_up(reason: str) -> NoReturn:
    print(f"error: {reason}", file=sys.stderr, flush=True)
    os._exit(UNREACHABLE)  # skip exit hooks: they would wait for the server all over again
