"""The boundary every entry point goes through: parse the command line into the entry point's spec, then
(simclr_s2.app.boundary) build the context, run the use case, exit. Parsing and every check that needs no
data happen here, before the stage, torch or MLflow are imported, so `--help` and a refusal are quick.
Only at this boundary do errors become exit statuses:

  0  done
  2  a user error (bad parameter, missing file, broken patch, diverged training, an identical run live,
     a full or read-only disk, credentials the tracking server refuses, a URI naming no MLflow server):
     one line `error: ...`, and the run ends FAILED with the reason in its simclr_s2.error tag (where
     the server lets it be marked)
  3  the tracking server stayed unreachable: one line; the run is left as it was (its checkpoints
     stay), and the same command resumes it once the server is back
Anything else is a bug: its traceback is printed, and the run ends FAILED with the exception.
A failed command clears the empty checkpoint folders ended runs left; a dry run under `mlflow run` tags
the run the launcher made `dry_run=true` (it holds nothing).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

from simclr_s2.app.entry_points import EntryPoint
from simclr_s2.errors import UserError
from simclr_s2.settings.spec import Spec, build, canonical, fields_of, flag

if TYPE_CHECKING:
    from simclr_s2.stages.base import Stage

USER_ERROR = 2
UNREACHABLE = 3


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one UserError line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def parser(cls: type[Spec]) -> argparse.ArgumentParser:
    """The command line of an entry point, built from its spec: `--name value` for every parameter, and no
    abbreviation: `mlflow run -P epoch=1` passes an undeclared `--epoch`, which must not become `--epochs`."""
    p = _Parser(prog=f"{cls.entry_point}", description=(cls.__doc__ or "").strip(), allow_abbrev=False)
    for f in fields_of(cls):
        required = f.default is dataclasses.MISSING
        shown = "" if required else f" (default: {canonical(f.default)})"
        p.add_argument(flag(f.name), dest=f.name, required=required, help=f.metadata["help"] + shown)
    return p


def parse(cls: type[Spec], argv: Sequence[str] | None) -> Spec:
    values = {k: v for k, v in vars(parser(cls).parse_args(argv)).items() if v is not None}
    return build(cls, values)


def main(entry: EntryPoint | Stage, argv: Sequence[str] | None = None) -> NoReturn:
    """Run an entry point (or a stage already loaded) as a command and exit with its status (see the module
    doc): its parameters are parsed and checked first, then its stage is imported and run."""
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = parse(entry.spec, argv)
    except UserError as error:
        if main_rank and os.environ.get("MLFLOW_RUN_ID"):  # the run `mlflow run` made ends FAILED, saying why
            from simclr_s2.app.launcher_run import fail_launcher_run

            fail_launcher_run(entry.spec.entry_point, error)
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR)
    with imports_uncollected():
        from simclr_s2.app.boundary import run

        stage = entry.load() if isinstance(entry, EntryPoint) else entry
    # Importing MLflow (just done) sets its logger to INFO; its INFO notes (system metrics...) are noise here.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    run(stage, spec)


@contextmanager
def imports_uncollected() -> Iterator[None]:
    """Import torch, MLflow and the stage (pytest: collect the tests) without the cyclic garbage collector,
    then move what they made out of its reach for good (`gc.freeze`). Imports make hundreds of thousands of
    objects that live as long as the process and free almost none, yet each 25 % of growth triggers a full
    collection that walks them all: 8 of those took 1.0 s of a `finetune`'s first 5 s, and each later one
    walked them again (0.3 s each while scoring and registration import theirs; docs/performance.md,
    Start-up)."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def leave(status: int | None) -> NoReturn:
    """End this process with `status` once its command is done, without the interpreter's teardown (2-6 s
    of wall freeing torch's and MLflow's modules one by one on 2 busy cores, docs/performance.md) but with
    all an exit owes: the atexit handlers run (MLflow's queues and temporary folders, logging's flush) and
    the streams are flushed. A thread still at work (not a daemon) gets the ordinary exit, which waits."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()  # what the interpreter runs at exit, before its teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)
