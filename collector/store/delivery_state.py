"""Delivery state of one store shard: per-destination cursors and dead letters, in ``shard-N.delivery.db``.

Kept in its own SQLite file beside the shard, so advancing a cursor never waits for the record writer's lock. A
cursor is the ``seq`` of the last record of the shard that the destination confirmed (or that went to dead letters);
everything after it is that destination's backlog.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.private import private_dirs
from collector.store.sqlite import STORE_DIRNAME, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    dlq_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    record_seq  INTEGER NOT NULL,
    record_id   TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    failed_ms   INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    status      INTEGER,
    attempts    INTEGER NOT NULL,
    body        BLOB NOT NULL,
    batch       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dead_letters_destination ON dead_letters(destination, dlq_id);
"""


def state_path(directory: str | Path, shard: int) -> Path:
    return Path(directory) / STORE_DIRNAME / f"shard-{shard}.delivery.db"


def _state_files(directory: str | Path) -> list[tuple[int, Path]]:
    base = Path(directory) / STORE_DIRNAME
    found = []
    for p in base.glob("shard-*.delivery.db"):
        idx = p.name.removeprefix("shard-").removesuffix(".delivery.db")
        if idx.isdigit():
            found.append((int(idx), p))
    return sorted(found)


def state_paths(directory: str | Path) -> list[Path]:
    return [p for _, p in _state_files(directory)]


def state_shards(directory: str | Path) -> list[int]:
    """Shards under a data directory that have delivery state (cursors or dead letters), in order."""
    return [i for i, _ in _state_files(directory)]


@dataclass(frozen=True)
class DeadLetter:
    dlq_id: int
    destination: str
    record_seq: int
    record_id: str
    time_ms: int
    failed_ms: int
    reason: str
    status: int | None
    attempts: int
    body: bytes
    shard_file: str = ""
    batch: str = ""


@dataclass(frozen=True)
class DeadLetterGroup:
    """Dead letters of one destination that failed together (one batch) for one reason."""

    destination: str
    batch: str
    reason: str
    status: int | None
    count: int
    first_id: int
    last_id: int
    first_failed_ms: int
    last_failed_ms: int


class DeliveryState:
    """Cursors and dead letters of one shard. Thread-compatible: one instance per event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dirs(self.path.parent)
        self.conn = connect(self.path)
        self.conn.executescript(_SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(dead_letters)")}
        if "batch" not in columns:  # a state file written before dead letters recorded their batch
            self.conn.execute("ALTER TABLE dead_letters ADD COLUMN batch TEXT NOT NULL DEFAULT ''")

    @classmethod
    def for_shard(cls, directory: str | Path, shard: int) -> DeliveryState:
        return cls(state_path(directory, shard))

    def close(self) -> None:
        self.conn.close()

    def cursor(self, destination: str, default: int = 0) -> int:
        row = self.conn.execute("SELECT seq FROM cursors WHERE destination = ?", (destination,)).fetchone()
        return int(row[0]) if row else default

    def set_cursor(self, destination: str, seq: int) -> None:
        self.conn.execute(
            "INSERT INTO cursors(destination, seq, updated_ms) VALUES (?, ?, ?) "
            "ON CONFLICT(destination) DO UPDATE SET seq = excluded.seq, updated_ms = excluded.updated_ms",
            (destination, seq, int(time.time() * 1000)),
        )

    def cursors(self) -> dict[str, int]:
        return {d: int(s) for d, s in self.conn.execute("SELECT destination, seq FROM cursors")}

    def dead_letter(
        self,
        destination: str,
        records: Sequence[tuple[int, str, int, bytes]],
        reason: str,
        status: int | None,
        attempts: int,
        advance_to: int | None = None,
    ) -> None:
        """Store ``(seq, id, time_ms, body)`` rows as dead letters (and optionally advance the cursor), atomically.

        The rows of one call are one batch, named by the record positions they span (``seq <first>-<last>``).
        """
        now = int(time.time() * 1000)
        batch = f"seq {records[0][0]}-{records[-1][0]}" if records else ""
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO dead_letters(destination, record_seq, record_id, time_ms, failed_ms, reason, status, "
                "attempts, body, batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (destination, seq, rid, t, now, reason, status, attempts, body, batch)
                    for seq, rid, t, body in records
                ],
            )
            if advance_to is not None:
                self.set_cursor(destination, advance_to)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def dead_letter_count(self, destination: str | None = None) -> int:
        if destination is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        return int(
            self.conn.execute("SELECT COUNT(*) FROM dead_letters WHERE destination = ?", (destination,)).fetchone()[0]
        )

    def dead_letters(
        self, destination: str | None = None, limit: int | None = None, after: int = 0
    ) -> list[DeadLetter]:
        """Entries in id order (of ``destination`` only, when given), those with an id above ``after``."""
        sql = "SELECT dlq_id, destination, record_seq, record_id, time_ms, failed_ms, reason, status, attempts, body, "
        sql += "batch FROM dead_letters WHERE dlq_id > ?"
        args: list[object] = [after]
        if destination is not None:
            sql += " AND destination = ?"
            args.append(destination)
        sql += " ORDER BY dlq_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            DeadLetter(*(row[:9]), body=bytes(row[9]), shard_file=self.path.name, batch=row[10])  # type: ignore[misc]
            for row in self.conn.execute(sql, args)
        ]

    def delete_dead_letters(self, dlq_ids: Sequence[int]) -> None:
        with self.transaction():
            self.conn.executemany("DELETE FROM dead_letters WHERE dlq_id = ?", [(i,) for i in dlq_ids])

    def fail_again(self, dlq_ids: Sequence[int], reason: str, status: int | None) -> None:
        """Entries a replay sent and the destination refused again: new reason and time, one more attempt."""
        now = int(time.time() * 1000)
        with self.transaction():
            self.conn.executemany(
                "UPDATE dead_letters SET reason = ?, status = ?, failed_ms = ?, attempts = attempts + 1 "
                "WHERE dlq_id = ?",
                [(reason, status, now, i) for i in dlq_ids],
            )

    def dead_letter_groups(self, destination: str | None = None) -> list[DeadLetterGroup]:
        """Dead letters grouped by destination, batch and reason, oldest group first."""
        sql = (
            "SELECT destination, batch, reason, MAX(status), COUNT(*), MIN(dlq_id), MAX(dlq_id), MIN(failed_ms), "
            "MAX(failed_ms) FROM dead_letters"
        )
        args: list[object] = []
        if destination is not None:
            sql += " WHERE destination = ?"
            args.append(destination)
        sql += " GROUP BY destination, batch, reason ORDER BY MIN(dlq_id)"
        return [DeadLetterGroup(*row) for row in self.conn.execute(sql, args)]

    def purge_dead_letters(
        self, destination: str | None = None, failed_before_ms: int | None = None
    ) -> list[DeadLetterGroup]:
        """Delete the dead letters of ``destination`` (all when None) that failed before ``failed_before_ms`` (any
        time when None); returns what was deleted, grouped as :meth:`dead_letter_groups`."""
        where: list[str] = []
        args: list[object] = []
        if destination is not None:
            where.append("destination = ?")
            args.append(destination)
        if failed_before_ms is not None:
            where.append("failed_ms < ?")
            args.append(failed_before_ms)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        with self.transaction():
            groups = [
                DeadLetterGroup(*row)
                for row in self.conn.execute(
                    "SELECT destination, batch, reason, MAX(status), COUNT(*), MIN(dlq_id), MAX(dlq_id), "
                    "MIN(failed_ms), MAX(failed_ms) FROM dead_letters" + cond + " GROUP BY destination, batch, reason "
                    "ORDER BY MIN(dlq_id)",
                    args,
                )
            ]
            self.conn.execute("DELETE FROM dead_letters" + cond, args)
        return groups


def open_all(directory: str | Path) -> list[DeliveryState]:
    """The delivery state of every shard that has one."""
    out = []
    for p in state_paths(directory):
        try:
            out.append(DeliveryState(p))
        except sqlite3.Error:
            continue
    return out
