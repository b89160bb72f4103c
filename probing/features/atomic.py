"""Atomic feature files: a writer holds ``OUTPUT.lock`` and writes ``OUTPUT.partial``, renamed when complete.

``h5py.File(path, "w")`` empties a file before HDF5's own lock check, so two writers of one output
would wipe each other's work. Every writer therefore first takes an exclusive advisory lock on a
sidecar file (released by the kernel when the process dies), writes into ``OUTPUT.partial`` beside
the output, and ``os.replace``-s it into place only after the last row is flushed. A finished file
is thus never truncated or half-written; an interrupted run leaves its rows in ``OUTPUT.partial``,
where ``probing extract --resume`` finds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import Any

from probing.errors import ProbingError

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"


def partial_path(path: str | os.PathLike) -> Path:
    """Where the rows of ``path`` are written until it is complete."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def final_path(path: str | os.PathLike) -> Path:
    """The output a (possibly partial) path belongs to."""
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        return path.with_name(path.name[: -len(PARTIAL_SUFFIX)])
    return path


def lock_path(path: str | os.PathLike) -> Path:
    path = final_path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def being_written(path: str | os.PathLike) -> bool:
    """Whether another process holds the write lock of ``path`` (or of the output it is partial of)."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def busy_error(path: str | os.PathLike, reading: bool = False) -> ProbingError:
    """``path`` is locked by another writer; ``reading``: the caller only wants to read it."""
    path = final_path(path)
    hint = "then read it" if reading else "or choose another --output"
    return ProbingError(
        f"{path} is being written by another process (lock {lock_path(path).name}); wait for it to "
        f"finish, {hint}"
    )


class WriteLock:
    """Exclusive lock on ``OUTPUT.lock`` for the lifetime of one writer (not re-entrant)."""

    def __init__(self, path: str | os.PathLike):
        self.path = final_path(path)
        self.lock = lock_path(self.path)
        self._fd: int | None = None

    def acquire(self) -> WriteLock:
        """Take the lock or raise a one-line error; creates the output's folder."""
        while True:
            try:
                self.lock.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ProbingError(
                    f"cannot write {self.path}: {err.strerror or err}; "
                    "choose a writable location with --output"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise busy_error(self.path) from None
            # the holder before us may have removed the lock file after we opened it: retry
            try:
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.lock.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def failure_reason(err: BaseException) -> str:
    """Why a write failed, in a few words (h5py's messages run over several lines)."""
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    found = re.search(r"error message = '([^']*)'", str(err))
    return found[1] if found else (str(err).splitlines() or [type(err).__name__])[0][:200]


def discard_partial(file: Any, partial: Path, lock: WriteLock | None) -> None:
    """After a failed write: remove the unfinished file (its h5py handle ``file``) and release the
    lock. Closing writes HDF5's caches, which fails again on a full disk and leaves handles that
    crash the interpreter at exit; so the file is emptied and its descriptor pointed at an anonymous
    memory file (Linux) first: what HDF5 still writes goes nowhere."""
    with contextlib.suppress(OSError):
        os.truncate(partial, 0)
    with contextlib.suppress(OSError, RuntimeError, AttributeError, ValueError):
        if file.id.valid:
            handle = file.id.get_vfd_handle()
            memory = os.memfd_create("discarded")
            try:
                os.dup2(memory, handle)
            finally:
                os.close(memory)
    with contextlib.suppress(OSError, RuntimeError):
        file.close()
    partial.unlink(missing_ok=True)
    if lock is not None:
        lock.release()


def write_error(path: Path, err: BaseException, done: int, total: int) -> ProbingError:
    return ProbingError(
        f"cannot write {path}: {failure_reason(err)} ({done} of {total} rows written); the "
        f"unfinished {partial_path(path).name} was removed: free space there or choose another "
        "--output, then extract again"
    )


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a closed file's data to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
