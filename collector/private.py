"""Private by default: what the bridge writes (prompts, commands, paths, e-mails, tokens) is for its own user only.

- :data:`PRIVATE_UMASK` (``077``) is the umask of a bridge process (:func:`use_private_umask`, set by ``ccbridge
  run``), so every file it or a library creates (SQLite ``-wal``/``-shm``, metrics files) is ``0600`` and every
  directory ``0700``;
- independently of the umask, :func:`private_dirs` creates missing directories ``0700`` and :func:`private_file`
  creates a database file ``0600`` before SQLite opens it (SQLite gives its ``-wal`` and ``-shm`` files the mode of
  the database file), and tightens those sidecar files if an older version left them readable;
- :func:`exposed` is the one check of "readable by group or others" used for the receiver tokens file and for
  configuration files holding literal secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def use_private_umask() -> int:
    """Set the process umask to :data:`PRIVATE_UMASK` (adding to, never loosening, the current one); returns the
    previous umask."""
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def exposed(mode: int) -> bool:
    """True when a file of ``mode`` is readable, writable or executable by group or others."""
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def private_dirs(path: str | Path) -> Path:
    """Create ``path`` and its missing parents with mode ``0700`` (whatever the umask); an existing directory is
    left as it is (an operator may have given it a group on purpose), with a warning when others can read it."""
    p = Path(path)
    missing: list[Path] = []
    cur = p
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
            os.chmod(d, DIR_MODE)
    return p


def private_file(path: str | Path) -> None:
    """Create ``path`` empty with mode ``0600`` if it does not exist (so SQLite's ``-wal``/``-shm`` files inherit
    that mode), and take group and other permissions off it and its SQLite sidecar files if they have them."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        os.chmod(p, FILE_MODE)
    for candidate in (p, *(Path(f"{p}{s}") for s in SQLITE_SIDECARS)):
        try:
            mode = candidate.stat().st_mode
        except OSError:
            continue
        if exposed(mode):
            with contextlib.suppress(OSError):
                os.chmod(candidate, stat.S_IMODE(mode) & ~(stat.S_IRWXG | stat.S_IRWXO))
