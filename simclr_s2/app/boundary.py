"""The part of the boundary that runs a parsed command (see simclr_s2.app.cli for the exit statuses): build
the context, run the use case, turn what went wrong into one line and an exit status. Imported only once
the parameters are parsed and checked, since it loads MLflow, torch and the stage."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from simclr_s2 import disk
from simclr_s2.app.cli import UNREACHABLE, USER_ERROR
from simclr_s2.app.launcher_run import fail_launcher_run
from simclr_s2.errors import UserError
from simclr_s2.settings.context import Context
from simclr_s2.stages.base import Stage, run_command, written_folders
from simclr_s2.tracking.connectivity import TrackingUnreachable, refusal, server_lost
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.names import STAGE_TAG
from simclr_s2.tracking.process import quiet_defaults


def run(stage: Stage, spec: object) -> NoReturn:
    """Run `stage` with its parsed `spec` as a command and exit with its status."""
    main_rank = os.environ.get("RANK", "0") == "0"
    quiet_defaults()
    ctx = None
    try:
        ctx = Context.from_env()
        run_command(stage, spec, ctx)
        if getattr(spec, "dry_run", False) and ctx.launcher_run_id and main_rank:
            Tracking.of(ctx).mark_dry_run(ctx.launcher_run_id, {STAGE_TAG: stage.name})
    except TrackingUnreachable as error:
        _give_up(str(error))
    except Exception as error:
        if not isinstance(error, UserError):
            error = disk.unnamed(error, written_folders(spec, ctx)) or error
        user = isinstance(error, UserError)
        if not user and (lost := server_lost(error)) is not None:  # requests' connection errors are OSErrors too
            _give_up(f"tracking server {lost}: {str(error).splitlines()[0]}")
        if not user and (refused := refusal(error)) is not None:  # credentials, a permission, a wrong URI
            server = ctx.tracking_uri if ctx is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
            error, user = UserError(f"tracking server {server} {refused}: {str(error).splitlines()[0]}"), True
        if main_rank:
            fail_launcher_run(stage.name, error)
            _clear_checkpoint_folders(ctx)
        if not user:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR)
    sys.exit(0)


def _clear_checkpoint_folders(ctx: Context | None) -> None:
    """The failed run's checkpoint folder, when it holds nothing (see remove_empty_checkpoint_folders). Not
    when the store itself cannot be used: its one line (MLFLOW_TRACKING_URI) is the error being reported."""
    if ctx is None:
        return
    try:
        Tracking.of(ctx).remove_empty_checkpoint_folders(ctx.home / "checkpoints")
    except UserError:
        return
    except Exception:  # noqa: BLE001 - the error being reported matters more than this tidying
        logging.getLogger(__name__).warning("could not clear the empty folders in %s", ctx.home / "checkpoints")


def _give_up(reason: str) -> NoReturn:
    print(f"error: {reason}", file=sys.stderr, flush=True)
    os._exit(UNREACHABLE)  # skip exit hooks: they would wait for the server all over again
