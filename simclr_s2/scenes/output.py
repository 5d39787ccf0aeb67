"""Where a scene's maps go: `<out>/<scene id>/`. They are written into a hidden draft folder in `out` and moved
into place only once every file is complete, so a failed or interrupted run leaves nothing that looks like
a map; a folder of an earlier prediction of the scene is replaced, anything else there is refused."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simclr_s2 import disk
from simclr_s2.errors import UserError
from simclr_s2.scenes.maps import SUMMARY

ENTRY_POINT = "predict"  # what a summary.json of ours says it came from
DRAFT = f".{ENTRY_POINT}-"
DRAFT_SUFFIX = ".draft"
IDENTITY = "scene_identity"  # the summary's key for Scene.identity


@contextmanager
def draft_folder(out: Path) -> Iterator[Path]:
    """A hidden folder in `out` (made when missing), removed when the block fails; drafts that killed runs
    left there are removed first."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _sweep(out)
        draft = Path(tempfile.mkdtemp(prefix=f"{DRAFT}{os.getpid()}@{socket.gethostname()}-", suffix=DRAFT_SUFFIX,
                                      dir=out))
        draft.chmod(_folder_mode())  # mkdtemp's 0700 would survive the rename: maps nobody else could read
    except OSError as error:
        raise UserError(f"out: cannot write {out}: {error.strerror or error}") from None
    try:
        yield draft
    except BaseException:
        shutil.rmtree(draft, ignore_errors=True)
        raise


def _folder_mode() -> int:
    """The mode a plain mkdir gives a folder: 0o777 less the umask (which can only be read by setting it)."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o777 & ~umask


def _sweep(out: Path) -> None:
    """Remove the drafts that killed runs left in `out` (SIGKILL, SIGTERM, a lost session: no clean-up ran).
    A draft is named `.predict-<pid>@<host>-<random>.draft` by the run writing it; those of live processes,
    of other hosts sharing `out`, or named otherwise are left."""
    def pid_of(name: str) -> str:
        pid, _, rest = name.removeprefix(DRAFT).partition("@")
        return pid if rest.rpartition("-")[0] == socket.gethostname() else ""

    disk.remove_left_by_dead(out, f"{DRAFT}*@*{DRAFT_SUFFIX}", pid_of)


def check_target(target: Path, identity: str) -> None:
    """Refuse a `target` that exists and is not an earlier prediction of the scene of `identity` (checked before
    any work is done): two folders of per-band GeoTIFFs can share a name, so an id."""
    if not target.exists():
        return
    earlier = _earlier_prediction(target)
    if earlier is None:
        raise UserError(f"out: {target} exists and holds no earlier prediction ({SUMMARY} of {ENTRY_POINT}); "
                        "move it or name another out")
    if earlier.get(IDENTITY, identity) != identity:  # a summary written before identities: replaced
        raise UserError(f"out: {target} holds the maps of another scene of that name ({earlier[IDENTITY]}); name "
                        "another out or move them")


def _earlier_prediction(folder: Path) -> dict | None:
    """The summary of the prediction in `folder`, None when it holds none."""
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("entry_point") == ENTRY_POINT else None


def publish(draft: Path, target: Path, identity: str) -> Path:
    """Move the finished `draft` to `target`, replacing an earlier prediction of the scene of `identity` there."""
    check_target(target, identity)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    draft.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
