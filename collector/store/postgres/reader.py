"""Cluster-wide reads of the PostgreSQL store: the :class:`~collector.store.api.StoreReader`, per-writer
:class:`~collector.store.api.ShardLog` / :class:`~collector.store.api.ShardView`, record queries and chain
verification over every writer's records.

A *writer* (replica x worker, table ``writers``) plays the role a shard plays in the embedded store: ``shards()``
returns writer ids, ``seq`` is the writer's ``writer_seq``. The callers are synchronous (they run in threads), so
the reader runs its asyncpg connection on a private event loop (:class:`~collector.store.postgres.runner.LoopThread`)
and every method blocks on it; one call at a time per reader, as the protocol says.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from collector.store.api import RecordQuery, StorageError
from collector.store.chain import ChainBreak, ChainReport, verify_links
from collector.store.postgres.connection import PostgresUnavailableError, connect
from collector.store.postgres.migrations import quote_ident
from collector.store.postgres.runner import LoopThread
from collector.store.postgres.writer import classify_pg_error
from collector.store.reader import CUMULATIVE_MARK, _with_chain

if TYPE_CHECKING:
    import asyncpg

    from collector.config import PostgresStorageConfig

T = TypeVar("T")
STREAM_BATCH = 2000


class PostgresStoreReader:
    """Every read of the cluster-wide store; safe beside running bridges (reads only)."""

    def __init__(self, settings: PostgresStorageConfig) -> None:
        self.settings = settings
        self.schema = quote_ident(settings.schema)
        self._runner: LoopThread | None = None
        self._conn: asyncpg.Connection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                runner.run(conn.close(timeout=5), timeout=10)
        runner.stop()

    def __enter__(self) -> PostgresStoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                self._conn = await connect(self.settings)
            except PostgresUnavailableError as exc:
                raise StorageError("unavailable", str(exc)) from None
        return self._conn

    def call(self, fn: Callable[[asyncpg.Connection], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn(connection)`` on the private loop and return its result (errors as :class:`StorageError`)."""
        with self._lock:
            if self._runner is None:
                self._runner = LoopThread("ccbridge-pg-reader")

            async def run() -> T:
                conn = await self._connection()
                try:
                    return await fn(conn)
                except StorageError:
                    raise
                except Exception as exc:
                    if conn.is_closed():
                        self._conn = None
                    raise classify_pg_error(exc) from None

            return self._runner.run(run())

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        return self.call(lambda c: c.fetch(sql, *args))

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self.call(lambda c: c.fetchval(sql, *args))

    # -- StoreReader -------------------------------------------------------------------------------------------

    def shards(self) -> list[int]:
        return [int(r[0]) for r in self.fetch(f"SELECT writer_id FROM {self.schema}.writers ORDER BY writer_id")]

    def has_shard(self, shard: int) -> bool:
        return self.fetchval(f"SELECT 1 FROM {self.schema}.writers WHERE writer_id = $1", shard) is not None

    def writer_names(self) -> dict[int, str]:
        return {int(r[0]): str(r[1]) for r in self.fetch(f"SELECT writer_id, name FROM {self.schema}.writers")}

    def shard_log(self, shard: int) -> PostgresShardLog:
        return PostgresShardLog(self, shard)

    def shard_view(self, shard: int) -> PostgresShardView:
        return PostgresShardView(self, shard)

    def iter_records(self, q: RecordQuery, batch_size: int = 1000) -> Iterator[bytes]:
        """Records (with their ``chain`` link) in ``(time_ms, id)`` order across every writer, each once (the
        primary key makes them unique cluster-wide), streamed by keyset pagination."""
        where: list[str] = []
        args: list[Any] = []

        def arg(v: Any) -> str:
            args.append(v)
            return f"${len(args)}"

        if q.since_ms is not None:
            where.append(f"time_ms >= {arg(q.since_ms)}")
        if q.until_ms is not None:
            where.append(f"time_ms < {arg(q.until_ms)}")
        if q.kinds:
            where.append(f"kind = ANY({arg(list(q.kinds))}::text[])")
        if q.user:
            p = arg(q.user)
            where.append(f'("user" = {p} OR user_id = {p})')
        if q.session:
            where.append(f"session = {arg(q.session)}")
        n = len(args)
        keyset = f"(time_ms, id) > (${n + 1}::bigint, ${n + 2}::text)"
        sql = (
            f"SELECT time_ms, id, body, writer_id, writer_seq, chain FROM {self.schema}.records "
            f"WHERE {' AND '.join([*where, keyset])} ORDER BY time_ms, id LIMIT ${n + 3}"
        )
        after: tuple[int, str] = (-(2**63), "")
        while True:
            rows = self.fetch(sql, *args, after[0], after[1], batch_size)
            for _t, _rid, body, writer, seq, link in rows:
                yield _with_chain(bytes(body), int(writer), int(seq), None if link is None else bytes(link))
            if len(rows) < batch_size:
                return
            after = (int(rows[-1][0]), str(rows[-1][1]))

    def _chain_rows(self, writer: int) -> Iterator[tuple[int, str, int, bytes, bytes | None]]:
        after = -1
        while True:
            rows = self.fetch(
                f"SELECT writer_seq, id, time_ms, body, chain FROM {self.schema}.records "
                "WHERE writer_id = $1 AND writer_seq > $2 ORDER BY writer_seq LIMIT $3",
                writer,
                after,
                STREAM_BATCH,
            )
            for seq, rid, t, body, link in rows:
                yield int(seq), str(rid), int(t), bytes(body), None if link is None else bytes(link)
            if len(rows) < STREAM_BATCH:
                return
            after = int(rows[-1][0])

    def verify_chain(self) -> ChainReport:
        """Walk every writer's chain in ``writer_seq`` order from its newest anchor; the first break is reported.

        A writer's records after the chain head it committed last are checked too (they would be a forgery: the
        writer updates its head in the same transaction as its records)."""
        report = ChainReport()
        for writer in self.shards():
            a = self.fetch(
                f"SELECT writer_seq, link FROM {self.schema}.chain_anchors WHERE writer_id = $1 "
                "ORDER BY writer_seq DESC LIMIT 1",
                writer,
            )
            anchor = (int(a[0][0]), bytes(a[0][1])) if a else None
            if not verify_links(report, writer, anchor, self._chain_rows(writer)):
                return report
            head = self.fetch(f"SELECT writer_seq, head FROM {self.schema}.chain_heads WHERE writer_id = $1", writer)
            if head and writer in report.head:
                seq, link = report.head[writer]
                if (int(head[0][0]), bytes(head[0][1]).hex()) != (seq, link) and seq >= int(head[0][0]):
                    report.broken = ChainBreak(
                        writer, seq, "", 0, "the writer's committed chain head does not match its records"
                    )
                    return report
                if seq < int(head[0][0]):
                    report.broken = ChainBreak(
                        writer, seq + 1, "", 0, f"records {seq + 1}..{int(head[0][0])} are missing at the chain's end"
                    )
                    return report
        return report

    def delivery_state(self, shard: int) -> Any:
        raise StorageError(
            "unsupported", "delivery state on PostgreSQL is not available in this version (storage.backend)"
        )

    def delivery_state_shards(self) -> list[int]:
        return []


class PostgresShardLog:
    """:class:`~collector.store.api.ShardLog` of one writer."""

    def __init__(self, reader: PostgresStoreReader, writer: int) -> None:
        self.r = reader
        self.writer = writer
        self.s = reader.schema

    def close(self) -> None:
        """Nothing of its own: the reader owns the connection."""

    def read_after(
        self, seq: int, max_records: int, max_bytes: int, make: Callable[[int, str, bytes, int], T]
    ) -> tuple[list[T], int]:
        rows = self.r.fetch(
            f"SELECT writer_seq, id, body, time_ms, received_ms FROM {self.s}.records "
            "WHERE writer_id = $1 AND writer_seq > $2 ORDER BY writer_seq LIMIT $3",
            self.writer,
            seq,
            max_records,
        )
        out: list[T] = []
        size = 0
        first_received = int(rows[0][4]) if rows else 0
        for wseq, rid, body, t, _ in rows:
            b = bytes(body)
            if out and size + len(b) > max_bytes:
                break
            size += len(b)
            out.append(make(int(wseq), str(rid), b, int(t)))
        return out, first_received

    def last_seq(self) -> int:
        v = self.r.fetchval(f"SELECT max(writer_seq) FROM {self.s}.records WHERE writer_id = $1", self.writer)
        return int(v or 0)

    def oldest_received_after(self, seq: int) -> int | None:
        v = self.r.fetchval(
            f"SELECT received_ms FROM {self.s}.records WHERE writer_id = $1 AND writer_seq > $2 "
            "ORDER BY writer_seq LIMIT 1",
            self.writer,
            seq,
        )
        return None if v is None else int(v)

    def average_size(self, sample: int = 200) -> float:
        v = self.r.fetchval(
            f"SELECT avg(length(body)) FROM (SELECT body FROM {self.s}.records WHERE writer_id = $1 "
            "ORDER BY writer_seq DESC LIMIT $2) AS x",
            self.writer,
            sample,
        )
        return float(v or 0.0)

    def end_positions(self) -> tuple[int, int]:
        rows = self.r.fetch(
            f"SELECT (SELECT coalesce(max(writer_seq), 0) FROM {self.s}.records WHERE writer_id = $1), "
            f"(SELECT coalesce(max(writer_seq), 0) FROM {self.s}.metric_points WHERE writer_id = $1)",
            self.writer,
        )
        return int(rows[0][0]), int(rows[0][1])

    def first_position(self, table: str, since_ms: int) -> int:
        if table not in ("records", "metric_points"):
            raise ValueError(f"unknown table {table}")
        v = self.r.fetchval(
            f"SELECT min(writer_seq) FROM {self.s}.{table} WHERE writer_id = $1 AND time_ms >= $2",
            self.writer,
            since_ms,
        )
        if v is None:
            end = self.end_positions()
            return end[0] if table == "records" else end[1]
        return int(v) - 1

    def records_after(self, seq: int, limit: int, min_time_ms: int | None = None) -> list[tuple[int, int, str, Any]]:
        rows = self.r.fetch(
            f"SELECT writer_seq, time_ms, kind, CASE WHEN $3::bigint IS NULL OR time_ms >= $3 THEN body END "
            f"FROM {self.s}.records WHERE writer_id = $1 AND writer_seq > $2 ORDER BY writer_seq LIMIT $4",
            self.writer,
            seq,
            min_time_ms,
            limit,
        )
        return [(int(a), int(t), str(k), None if b is None else bytes(b)) for a, t, k, b in rows]

    def points_after(self, seq: int, limit: int) -> list[tuple[int, Any]]:
        rows = self.r.fetch(
            f"SELECT writer_seq, body FROM {self.s}.metric_points WHERE writer_id = $1 AND writer_seq > $2 "
            "ORDER BY writer_seq LIMIT $3",
            self.writer,
            seq,
            limit,
        )
        return [(int(a), bytes(b)) for a, b in rows]

    def records_between(self, since_ms: int, upto_seq: int) -> Iterator[tuple[int, Any]]:
        after = -1
        while True:
            rows = self.r.fetch(
                f"SELECT writer_seq, time_ms, body FROM {self.s}.records WHERE writer_id = $1 AND writer_seq > $2 "
                "AND writer_seq <= $3 AND time_ms >= $4 ORDER BY writer_seq LIMIT $5",
                self.writer,
                after,
                upto_seq,
                since_ms,
                STREAM_BATCH,
            )
            for _, t, b in rows:
                yield int(t), bytes(b)
            if len(rows) < STREAM_BATCH:
                return
            after = int(rows[-1][0])

    def points_between(
        self, since_ms: int, upto_seq: int, *, cumulative_only: bool = False, newest: int | None = None
    ) -> Iterator[Any]:
        rows = self.r.fetch(
            f"SELECT writer_seq, body FROM {self.s}.metric_points WHERE writer_id = $1 AND writer_seq <= $2 "
            "AND time_ms >= $3 ORDER BY writer_seq",
            self.writer,
            upto_seq,
            since_ms,
        )
        bodies = [bytes(b) for _, b in rows]
        if cumulative_only:
            bodies = [b for b in bodies if _is_cumulative(b)]
        if newest is not None:
            bodies = bodies[-newest:] if newest > 0 else []
        yield from bodies


def _is_cumulative(body: bytes) -> bool:
    return CUMULATIVE_MARK in body


class PostgresShardView:
    """:class:`~collector.store.api.ShardView` of one writer (compliance exports, reports)."""

    def __init__(self, reader: PostgresStoreReader, writer: int) -> None:
        self.r = reader
        self.writer = writer
        self.s = reader.schema

    def close(self) -> None:
        """Nothing of its own: the reader owns the connection."""

    def sessions_with(self, kind: str, since_ms: int, until_ms: int, user: str | None) -> Iterator[str | None]:
        rows = self.r.fetch(
            f'SELECT DISTINCT session COLLATE "C" FROM {self.s}.records WHERE writer_id = $1 AND kind = $2 '
            "AND time_ms >= $3 "
            'AND time_ms < $4 AND ($5::text IS NULL OR "user" = $5 OR user_id = $5) '
            "ORDER BY 1 NULLS FIRST",
            self.writer,
            kind,
            since_ms,
            until_ms,
            user,
        )
        yield from (r[0] for r in rows)

    def session_records(
        self, session: str | None, windows: Sequence[tuple[str, int, int]]
    ) -> Iterator[tuple[int, str, bytes, bytes | None]]:
        if not windows:
            return
        rows = self.r.fetch(
            f"SELECT r.time_ms, r.id, r.body, r.chain FROM {self.s}.records AS r "
            "JOIN unnest($3::text[], $4::bigint[], $5::bigint[]) AS w(k, lo, hi) "
            "ON r.kind = w.k AND r.time_ms >= w.lo AND r.time_ms < w.hi "
            "WHERE r.writer_id = $1 AND r.session IS NOT DISTINCT FROM $2 ORDER BY r.time_ms, r.id",
            self.writer,
            session,
            [w[0] for w in windows],
            [w[1] for w in windows],
            [w[2] for w in windows],
        )
        last = None
        for t, rid, body, link in rows:
            if (t, rid) == last:
                continue
            last = (t, rid)
            yield int(t), str(rid), bytes(body), None if link is None else bytes(link)

    def spans(self, trace_id: str, name: str) -> Iterator[bytes]:
        rows = self.r.fetch(
            f"SELECT body FROM {self.s}.spans WHERE writer_id = $1 AND trace_id = $2 AND name = $3 "
            "ORDER BY time_ms, span_id",
            self.writer,
            trace_id,
            name,
        )
        yield from (bytes(r[0]) for r in rows)

    def metric_points_named(self, names: Sequence[str], since_ms: int, until_ms: int) -> list[tuple[int, str, bytes]]:
        rows = self.r.fetch(
            f"SELECT time_ms, key, body FROM {self.s}.metric_points WHERE writer_id = $1 AND name = ANY($2::text[]) "
            "AND time_ms >= $3 AND time_ms < $4 ORDER BY time_ms, key",
            self.writer,
            list(names),
            since_ms,
            until_ms,
        )
        return [(int(t), str(k), bytes(b)) for t, k, b in rows]

    def session_starts(self, since_ms: int, until_ms: int) -> Iterator[tuple[str, int, str | None, str | None]]:
        rows = self.r.fetch(
            'SELECT session, min(time_ms), max(CASE WHEN "user" IS DISTINCT FROM user_id THEN "user" END), '
            "max(user_id) "
            f"FROM {self.s}.records WHERE writer_id = $1 AND session IS NOT NULL AND time_ms >= $2 AND time_ms < $3 "
            "GROUP BY session",
            self.writer,
            since_ms,
            until_ms,
        )
        for sess, t, email, uid in rows:
            yield str(sess), int(t), email, uid
