"""The storage layer: the only package that knows tables, files and the stored bytes' layout.

Callers get backend objects from the factories here and use them through the protocols in
:mod:`collector.store.api`:

- :func:`open_store` -- the writer of one shard (:class:`~collector.store.api.AuditLog`; group commit);
- :func:`open_reader` -- every read of a data directory (:class:`~collector.store.api.StoreReader`);
- :func:`open_usage_history` -- the Analytics API usage history (:class:`~collector.store.usage.UsageStore`).

The embedded SQLite backend is the only one today; a second backend is chosen here, not in the callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from collector.store.api import AppendResult, AuditLog, RecordQuery, StorageError, StoreReader
from collector.store.chain import ChainBreak, ChainReport
from collector.store.reader import SqliteStoreReader, iter_records
from collector.store.sqlite import AuditStore

if TYPE_CHECKING:
    from collector.config import StorageConfig
    from collector.store.usage import UsageStore

__all__ = [
    "AppendResult",
    "AuditStore",
    "ChainBreak",
    "ChainReport",
    "RecordQuery",
    "StorageError",
    "existing_usage_history",
    "has_store",
    "has_usage_history",
    "iter_records",
    "open_cluster_reader",
    "open_reader",
    "open_store",
    "open_usage_history",
]


def open_store(cfg: StorageConfig, *, shard: int = 0) -> AuditLog:
    """The (not yet opened) writer of ``shard`` (worker index) for ``cfg.backend``; call ``open()`` before
    appending. SQLite: a shard file under ``cfg.directory``; PostgreSQL: the writer ``<host>/<shard>``."""
    if cfg.backend == "postgresql":
        from collector.store.postgres.writer import PostgresAuditLog

        return PostgresAuditLog(cfg.postgresql, shard=shard, max_commit_records=cfg.max_commit_records)
    return AuditStore(
        cfg.directory,
        shard=shard,
        synchronous=cfg.synchronous,
        max_commit_records=cfg.max_commit_records,
        commit_interval=cfg.commit_interval,
        writer=cfg.writer,
    )


def open_reader(directory: str | Path) -> SqliteStoreReader:
    """Reads of the data directory ``directory`` (never writes records; safe beside a running bridge)."""
    return SqliteStoreReader(directory)


def open_cluster_reader(cfg: StorageConfig) -> StoreReader:
    """Reads for ``cfg.backend``: the data directory (SQLite) or the whole cluster's database (PostgreSQL)."""
    if cfg.backend == "postgresql":
        from collector.store.postgres.reader import PostgresStoreReader

        return PostgresStoreReader(cfg.postgresql)
    return SqliteStoreReader(cfg.directory)


def open_usage_history(directory: str | Path) -> UsageStore:
    """The Analytics API usage history of a data directory (created on first use)."""
    from collector.store.usage import UsageStore

    return UsageStore.open(directory)


def existing_usage_history(directory: str | Path) -> UsageStore | None:
    """The usage history of a data directory if there is one (read-only callers: nothing is created)."""
    from collector.store.usage import UsageStore

    return UsageStore.open_existing(directory)


def has_store(directory: str | Path) -> bool:
    """Whether ``directory`` holds an audit store (at least one shard)."""
    return bool(open_reader(directory).shards())


def has_usage_history(directory: str | Path) -> bool:
    """Whether ``directory`` holds an Analytics API usage history."""
    from collector.store.usage import DB_FILENAME

    return (Path(directory) / DB_FILENAME).is_file()
