"""Single writer per data directory: an exclusive ``flock`` on ``<data dir>/ccbridge.lock``, holder PID inside.

``ccbridge run`` takes the lock before it opens the store or starts delivery and holds it for its whole life (a
multi-worker bridge: the primary process, before it spawns the workers; the workers check that their parent holds
it). Commands that write to a data directory (``dlq replay``, ``analytics sync``) take it for their duration, so they
refuse while a bridge runs and a bridge refuses while they run. Read-only commands never touch it: SQLite's WAL lets
them read beside the writer.

The lock is an advisory ``fcntl.flock`` (Linux ``flock(2)``): the kernel releases it when the holding process exits,
however it exits (``kill -9`` included), so a stale lock file never blocks a restart. The PID written into the file
is only for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILENAME = "ccbridge.lock"


class DataDirLocked(Exception):
    """Another process holds the data directory's lock."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        self.directory = directory
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"data directory {directory} is in use by {holder} (a running ccbridge)")


def lock_path(directory: str | Path) -> Path:
    return Path(directory) / LOCK_FILENAME


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class DataDirLock:
    """The exclusive lock of one data directory; :meth:`acquire` raises :class:`DataDirLocked` when taken."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = lock_path(directory)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirLock:
        """Take the lock without waiting (creating the directory if needed) and record this process's PID."""
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(self.directory, _read_pid(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(directory: str | Path) -> int | None:
    """The PID recorded by the process holding the lock, or None when nobody holds it (a read-only probe)."""
    path = lock_path(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
