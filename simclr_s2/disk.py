"""A write that failed because a file system is full or read-only is the machine's state, not a bug: one line
naming the file and its file system (with what is left there), so a person frees space in the right place.

Such a failure comes as an OSError with ENOSPC, EDQUOT or EROFS (a copy's names the destination second), as
an error whose text says so (our packer's short write, an error wrapped by a library), or as torch.save's
RuntimeError from its zip writer, which says only that writing failed. `writing` turns any of them into a
DiskFullError at a write point and removes what the write left half done.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from simclr_s2.errors import UserError

CODES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
TEXTS = {**{os.strerror(code).lower(): code for code in CODES}, "short write": errno.ENOSPC,
         "disk full": errno.ENOSPC, "database or disk is full": errno.ENOSPC}  # the last: SQLite's SQLITE_FULL
UNSTATED = 0  # a write failed, the error does not say why (torch's zip writer)
ZIP_WRITER = ("PytorchStreamWriter failed writing", "inline_container.cc")


class DiskFullError(UserError):
    """A write failed on a full or read-only file system; `path` is the file or folder it names."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


Where = str | Path | Callable[[], Path]  # a callable when finding the place costs something (a request)


def failure(error: BaseException, path: Where) -> DiskFullError | None:
    """The one-line error for `error` raised while writing `path` (or the file the error names), or None
    when it is no disk failure."""
    if isinstance(error, DiskFullError):
        return error
    code = _cause(error)
    if code is None:
        return None
    target = _named(error) or Path(path() if callable(path) else path)
    return DiskFullError(f"cannot write {target}: {_state(code, target)}", str(target))


def unnamed(error: BaseException, folders: Mapping[str, Path]) -> DiskFullError | None:
    """`failure` for an error raised somewhere under `folders` (what each is, for people -> where): when the
    error names no file, it names the folder whose file system is read-only or has the least space left."""
    if isinstance(error, DiskFullError) or _named(error) is not None or not folders:
        return failure(error, Path.cwd())
    if _cause(error) is None:
        return None
    label, folder = min(folders.items(), key=lambda item: _free(item[1]))  # on a tie, the first
    return DiskFullError(f"{failure(error, folder)} (the error names no file: of the folders this command "
                         f"writes, {label} is the fullest)", str(folder))


@contextmanager
def writing(path: Where, *leftovers: Path) -> Iterator[None]:
    """Writes to `path` inside: a disk failure becomes a DiskFullError, and on any failure `leftovers` (files
    or folders the write makes before renaming them into place) are removed."""
    try:
        yield
    except BaseException as error:
        for leftover in leftovers:
            _remove(leftover)
        if (full := failure(error, path)) is None or full is error:
            raise
        raise full from error


def _remove(path: Path) -> None:
    """Remove a file or folder if it is there (nothing to report when it is not)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path` (or, if it does not exist yet, its nearest parent)."""
    path = Path(os.path.abspath(path))
    while not (os.path.exists(path) and os.path.ismount(path)):
        path = path.parent
    return path


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the errors it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _cause(error: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EROFS for a write that failed for that reason, UNSTATED for torch's failed write,
    None for any other error."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in CODES:
            return link.errno
        text = str(link).lower()
        for words, code in TEXTS.items():
            if words in text:
                return code
        if isinstance(link, RuntimeError) and any(words.lower() in text for words in ZIP_WRITER):
            return UNSTATED
    return None


def _named(error: BaseException) -> Path | None:
    """The file a failed OSError names: a copy's or rename's destination before its source."""
    for link in _chain(error):
        if isinstance(link, OSError) and (name := link.filename2 or link.filename):
            return Path(os.fsdecode(name))
    return None


def _free(folder: Path) -> float:
    """Bytes free to us on `folder`'s file system; a read-only one counts as none left."""
    stat = os.statvfs(mount_point(folder))
    return -1.0 if stat.f_flag & os.ST_RDONLY else float(stat.f_bavail * stat.f_frsize)


def _state(code: int, path: Path) -> str:
    """What is wrong with the file system holding `path`, and what to do, in words."""
    mount = mount_point(path)
    free = _free(mount)
    if code == errno.EROFS or (code == UNSTATED and free < 0):
        return f"file system {mount} is read-only; make it writable or write elsewhere"
    left = f"{max(free, 0) / 2**20:.1f} MiB free"
    if code == errno.EDQUOT:
        return f"disk quota exceeded on file system {mount} ({left}); free some space or write elsewhere"
    if code == errno.ENOSPC:
        return f"file system {mount} is full ({left}); free some space or write elsewhere"
    return f"writing failed on file system {mount} ({left}); if it is full, free some space or write elsewhere"


def sync_folder(folder: Path) -> None:
    """Make the renames into `folder` durable: a rename is an entry of the folder, which fsync of the file
    does not write."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    """Whether process `pid` of this machine exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_left_by_dead(folder: Path, pattern: str, pid_of: Callable[[str], str]) -> None:
    """Remove what killed processes left in `folder` (SIGKILL, a lost session: no clean-up ran): the files and
    folders matching `pattern` whose name gives (`pid_of`; "" for none of this machine's) the id of a process
    of this machine that is gone."""
    for path in folder.glob(pattern):
        if (pid := pid_of(path.name)).isdigit() and not alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
