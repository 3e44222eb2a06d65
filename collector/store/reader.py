"""Reads of the embedded (SQLite) store: by ``seq`` for delivery and metric tailers, by query for exports and reports.

Every connection here is read-only; WAL lets readers run beside the writers of a live bridge. SQLite errors are
raised as :class:`~collector.store.api.StorageError` (reason ``not_ready`` while a shard's file exists but a worker
is still creating its tables).
"""

from __future__ import annotations

import contextlib
import heapq
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from collector.store.api import RecordQuery, StorageError
from collector.store.chain import ChainReport, verify_links
from collector.store.delivery_state import DeliveryState, state_shards
from collector.store.sqlite import as_bytes, classify_sqlite_error, connect, shard_path, shard_paths

T = TypeVar("T")

CUMULATIVE_MARK = b'"temporality":"cumulative"'
"""How a cumulative metric point's stored JSON says so (the pipeline writes compact JSON)."""
_TABLES = ("records", "metric_points")


def storage_error(exc: BaseException) -> StorageError:
    """A read failure as :class:`StorageError` (``not_ready`` when the tables are not there yet)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table"):
        return StorageError("not_ready", str(exc))
    return classify_sqlite_error(exc)


def shard_numbers(directory: str | Path) -> list[int]:
    """Shards that exist under a data directory, in order."""
    return [int(p.stem.removeprefix("shard-")) for p in shard_paths(directory)]


class ShardReader:
    """Read-only access to one shard by ``seq`` (:class:`~collector.store.api.ShardLog`); thread-safe, serialised."""

    def __init__(self, path: Path, shard: int | None = None) -> None:
        self.path = path
        self.shard = shard if shard is not None else int(path.stem.removeprefix("shard-"))
        self.name = f"shard {self.shard}"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, readonly=True)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self.conn().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                if self._conn is not None:  # reopen on the next call (a shard being created, a transient error)
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.close()
                    self._conn = None
                raise storage_error(exc) from None

    # -- delivery ----------------------------------------------------------------------------------------------

    def read_after(
        self, seq: int, max_records: int, max_bytes: int, make: Callable[[int, str, bytes, int], T]
    ) -> tuple[list[T], int]:
        """Up to ``max_records`` records after ``seq`` within ``max_bytes`` (at least one); first one's arrival."""
        rows = self._fetch(
            "SELECT seq, id, body, time_ms, received_ms FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, max_records),
        )
        out: list[T] = []
        total = 0
        oldest = 0
        for s, rid, body, t, received in rows:
            b = as_bytes(body)
            if out and total + len(b) > max_bytes:
                break
            total += len(b)
            out.append(make(s, rid, b, t))
            if not oldest:
                oldest = received
        return out, oldest

    def last_seq(self) -> int:
        return int(self._fetch("SELECT MAX(seq) FROM records")[0][0] or 0)

    def oldest_received_after(self, seq: int) -> int | None:
        rows = self._fetch("SELECT received_ms FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (seq,))
        return int(rows[0][0]) if rows else None

    def average_size(self, sample: int = 200) -> float:
        rows = self._fetch(
            "SELECT AVG(length(body)) FROM (SELECT body FROM records ORDER BY seq DESC LIMIT ?)", (sample,)
        )
        return float(rows[0][0] or 0.0)

    # -- metric tailers ----------------------------------------------------------------------------------------

    def end_positions(self) -> tuple[int, int]:
        records = self._fetch("SELECT COALESCE(MAX(seq), 0) FROM records")[0][0]
        points = self._fetch("SELECT COALESCE(MAX(seq), 0) FROM metric_points")[0][0]
        return int(records), int(points)

    def first_position(self, table: str, since_ms: int) -> int:
        if table not in _TABLES:
            raise ValueError(f"unknown table {table}")
        first = self._fetch(f"SELECT MIN(seq) FROM {table} WHERE time_ms >= ?", (since_ms,))[0][0]
        if first is not None:
            return int(first) - 1
        return int(self._fetch(f"SELECT MAX(seq) FROM {table}")[0][0] or 0)

    def records_after(self, seq: int, limit: int, min_time_ms: int | None = None) -> list[tuple[int, int, str, Any]]:
        if min_time_ms is None:
            return self._fetch(
                "SELECT seq, time_ms, kind, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            )
        return self._fetch(
            "SELECT seq, time_ms, kind, CASE WHEN time_ms >= ? THEN body END FROM records WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (min_time_ms, seq, limit),
        )

    def points_after(self, seq: int, limit: int) -> list[tuple[int, Any]]:
        return self._fetch("SELECT seq, body FROM metric_points WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))

    def _stream(self, sql: str, args: Sequence[Any], batch: int = 2000) -> Iterator[Any]:
        """Rows of a long read on a connection of its own (the shared one stays free), in bounded memory."""
        try:
            conn = connect(self.path, readonly=True)
        except sqlite3.Error as exc:
            raise storage_error(exc) from None
        with contextlib.closing(conn):
            try:
                cur = conn.execute(sql, args)
                while rows := cur.fetchmany(batch):
                    yield from rows
            except sqlite3.Error as exc:
                raise storage_error(exc) from None

    def records_between(self, since_ms: int, upto_seq: int) -> Iterator[tuple[int, Any]]:
        yield from self._stream(
            "SELECT time_ms, body FROM records WHERE time_ms >= ? AND seq <= ? ORDER BY seq", (since_ms, upto_seq)
        )

    def points_between(
        self, since_ms: int, upto_seq: int, *, cumulative_only: bool = False, newest: int | None = None
    ) -> Iterator[Any]:
        sql = "SELECT body FROM metric_points WHERE time_ms >= ? AND seq <= ?"
        args: list[Any] = [since_ms, upto_seq]
        if cumulative_only:
            sql += " AND instr(body, ?) > 0"
            args.append(CUMULATIVE_MARK)
        if newest is None:
            return (b for (b,) in self._stream(sql + " ORDER BY seq", args))
        rows = self._fetch(sql + " ORDER BY seq DESC LIMIT ?", [*args, newest])
        return (b for (b,) in reversed(rows))


class ShardQuery:
    """Query-shaped reads of one shard (:class:`~collector.store.api.ShardView`), one read connection."""

    def __init__(self, path: Path) -> None:
        try:
            self.conn = connect(path, readonly=True)
            self.has_chain = any(r[1] == "chain" for r in self.conn.execute("PRAGMA table_info(records)"))
        except sqlite3.Error as exc:
            raise StorageError("error", f"cannot open the store: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def _stream(self, sql: str, args: Sequence[Any], batch: int = 1000) -> Iterator[Any]:
        try:
            cur = self.conn.execute(sql, args)
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    return
                yield from rows
        except sqlite3.Error as exc:
            raise StorageError("error", f"cannot read the store: {exc}") from None

    def sessions_with(self, kind: str, since_ms: int, until_ms: int, user: str | None) -> Iterator[str | None]:
        sql = "SELECT DISTINCT session FROM records WHERE kind = ? AND time_ms >= ? AND time_ms < ?"
        args: list[Any] = [kind, since_ms, until_ms]
        if user is not None:
            sql += " AND (user = ? COLLATE NOCASE OR user_id = ? COLLATE NOCASE)"
            args += [user, user]
        for (s,) in self._stream(sql + " ORDER BY session", args):
            yield s

    def session_records(
        self, session: str | None, windows: Sequence[tuple[str, int, int]]
    ) -> Iterator[tuple[int, str, bytes, bytes | None]]:
        where = "session IS NULL" if session is None else "session = ?"
        args: list[Any] = [] if session is None else [session]
        ors = []
        for kind, since_ms, until_ms in windows:
            ors.append("(kind = ? AND time_ms >= ? AND time_ms < ?)")
            args += [kind, since_ms, until_ms]
        sql = (
            f"SELECT time_ms, id, body, {'chain' if self.has_chain else 'NULL'} FROM records WHERE {where} AND ("
            f"{' OR '.join(ors)}) ORDER BY time_ms, id"
        )
        for t, rid, body, link in self._stream(sql, args):
            yield t, rid, as_bytes(body), None if link is None else as_bytes(link)

    def spans(self, trace_id: str, name: str) -> Iterator[bytes]:
        for (body,) in self._stream("SELECT body FROM spans WHERE trace_id = ? AND name = ?", (trace_id, name)):
            yield as_bytes(body)

    def metric_points_named(self, names: Sequence[str], since_ms: int, until_ms: int) -> list[tuple[int, str, bytes]]:
        marks = ",".join("?" * len(names))
        sql = (
            f"SELECT time_ms, key, body FROM metric_points WHERE time_ms >= ? AND time_ms < ? AND name IN ({marks}) "
            "ORDER BY time_ms, seq"
        )
        return list(self._stream(sql, (since_ms, until_ms, *names)))

    def session_starts(self, since_ms: int, until_ms: int) -> Iterator[tuple[str, int, str | None, str | None]]:
        sql = (
            "SELECT session, MIN(time_ms), MAX(CASE WHEN user IS NOT user_id THEN user END), MAX(user_id) "
            "FROM records WHERE time_ms >= ? AND time_ms < ? AND session IS NOT NULL GROUP BY session"
        )
        yield from self._stream(sql, (since_ms, until_ms))


def _with_chain(body: bytes, shard: int, seq: int, link: bytes | None) -> bytes:
    """The record's JSON with its tamper-evidence link added as ``chain`` (the stored bytes stay as hashed)."""
    if link is None or not body.endswith(b"}"):
        return body
    return body[:-1] + b',"chain":{"hash":"%s","seq":%d,"shard":%d}}' % (as_bytes(link).hex().encode(), seq, shard)


def _iter_shard(db: Path, sql: str, args: list[Any], batch_size: int) -> Iterator[tuple[int, str, bytes]]:
    shard = int(db.stem.removeprefix("shard-"))
    with contextlib.closing(connect(db, readonly=True)) as conn:
        cur = conn.execute(sql, args)
        while True:
            rows = cur.fetchmany(batch_size)
            if not rows:
                return
            for time_ms, rid, body, seq, link in rows:
                yield time_ms, rid, _with_chain(as_bytes(body), shard, seq, link)


def iter_records(directory: str | Path, q: RecordQuery, batch_size: int = 1000) -> Iterator[bytes]:
    """Stream stored records (JSON bytes, with their ``chain`` link) in time order across shards, in bounded memory.

    A record stored in two shards (a client retried on a connection that reached the other worker) has the same
    time and id in both, so the merged stream drops the second copy.
    """
    dbs = shard_paths(directory)
    if not dbs:
        raise StorageError("missing", f"no store under {directory}")
    where: list[str] = []
    args: list[Any] = []
    if q.since_ms is not None:
        where.append("time_ms >= ?")
        args.append(q.since_ms)
    if q.until_ms is not None:
        where.append("time_ms < ?")
        args.append(q.until_ms)
    if q.kinds:
        where.append(f"kind IN ({','.join('?' * len(q.kinds))})")
        args.extend(q.kinds)
    if q.user:
        where.append("(user = ? OR user_id = ?)")
        args.extend((q.user, q.user))
    if q.session:
        where.append("session = ?")
        args.append(q.session)
    sql = "SELECT time_ms, id, body, seq, chain FROM records"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time_ms, id"
    streams = [_iter_shard(db, sql, args, batch_size) for db in dbs]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda r: (r[0], r[1]))
    last: tuple[int, str] | None = None
    for time_ms, rid, body in merged:
        key = (time_ms, rid)
        if key == last:
            continue
        last = key
        yield body


def _chain_rows(conn: sqlite3.Connection) -> Iterator[tuple[int, str, int, bytes, bytes | None]]:
    cur = conn.execute("SELECT seq, id, time_ms, body, chain FROM records ORDER BY seq")
    while True:
        rows = cur.fetchmany(2000)
        if not rows:
            return
        for seq, rid, t, body, link in rows:
            yield seq, rid, t, as_bytes(body), None if link is None else as_bytes(link)


def verify_chain(directory: str | Path) -> ChainReport:
    """Walk every shard's chain in ``seq`` order and report the first break (modified, removed or reordered)."""
    report = ChainReport()
    for db in shard_paths(directory):
        shard = int(db.stem.removeprefix("shard-"))
        with contextlib.closing(connect(db, readonly=True)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'chain_anchor'").fetchone()
            anchor = None
            if row is not None:
                aseq, _, ahex = str(row[0]).partition(":")
                anchor = (int(aseq), bytes.fromhex(ahex))
            if not verify_links(report, shard, anchor, _chain_rows(conn)):
                return report
    return report


class SqliteStoreReader:
    """The embedded backend's :class:`~collector.store.api.StoreReader` for one data directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def shards(self) -> list[int]:
        return shard_numbers(self.directory)

    def has_shard(self, shard: int) -> bool:
        return shard_path(self.directory, shard).exists()

    def shard_log(self, shard: int) -> ShardReader:
        return ShardReader(shard_path(self.directory, shard), shard)

    def shard_view(self, shard: int) -> ShardQuery:
        return ShardQuery(shard_path(self.directory, shard))

    def iter_records(self, q: RecordQuery, batch_size: int = 1000) -> Iterator[bytes]:
        return iter_records(self.directory, q, batch_size)

    def verify_chain(self) -> ChainReport:
        return verify_chain(self.directory)

    def delivery_state(self, shard: int) -> DeliveryState:
        return DeliveryState.for_shard(self.directory, shard)

    def delivery_state_shards(self) -> list[int]:
        return state_shards(self.directory)
