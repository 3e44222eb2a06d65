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
    body        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_destination ON dead_letters(destination, dlq_id);
"""


def state_path(directory: str | Path, shard: int) -> Path:
    return Path(directory) / STORE_DIRNAME / f"shard-{shard}.delivery.db"


def state_paths(directory: str | Path) -> list[Path]:
    base = Path(directory) / STORE_DIRNAME
    found = []
    for p in base.glob("shard-*.delivery.db"):
        idx = p.name.removeprefix("shard-").removesuffix(".delivery.db")
        if idx.isdigit():
            found.append((int(idx), p))
    return [p for _, p in sorted(found)]


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


class DeliveryState:
    """Cursors and dead letters of one shard. Thread-compatible: one instance per event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dirs(self.path.parent)
        self.conn = connect(self.path)
        self.conn.executescript(_SCHEMA)

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
        """Store ``(seq, id, time_ms, body)`` rows as dead letters (and optionally advance the cursor), atomically."""
        now = int(time.time() * 1000)
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO dead_letters(destination, record_seq, record_id, time_ms, failed_ms, reason, status, "
                "attempts, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(destination, seq, rid, t, now, reason, status, attempts, body) for seq, rid, t, body in records],
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

    def dead_letters(self, destination: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        sql = "SELECT dlq_id, destination, record_seq, record_id, time_ms, failed_ms, reason, status, attempts, body "
        sql += "FROM dead_letters"
        args: list[object] = []
        if destination is not None:
            sql += " WHERE destination = ?"
            args.append(destination)
        sql += " ORDER BY dlq_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            DeadLetter(*(row[:9]), body=bytes(row[9]), shard_file=self.path.name)  # type: ignore[misc]
            for row in self.conn.execute(sql, args)
        ]

    def delete_dead_letters(self, dlq_ids: Sequence[int]) -> None:
        with self.transaction():
            self.conn.executemany("DELETE FROM dead_letters WHERE dlq_id = ?", [(i,) for i in dlq_ids])


def open_all(directory: str | Path) -> list[DeliveryState]:
    """The delivery state of every shard that has one."""
    out = []
    for p in state_paths(directory):
        try:
            out.append(DeliveryState(p))
        except sqlite3.Error:
            continue
    return out
