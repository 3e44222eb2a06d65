"""The PostgreSQL :class:`~collector.store.api.AuditLog`: one writer (replica x worker) appending to the shared
cluster-wide tables with group commit.

* **Identity.** A writer is registered in ``writers`` under a stable name, ``<host>/<worker>``: ``host`` is the
  pod/host name (``socket.gethostname()``, which is the pod name in Kubernetes and stays the same across restarts of
  a StatefulSet pod) unless given, ``worker`` the worker index. Its ``writer_id`` plays the role a shard number
  plays in the embedded store: the chain, ``writer_seq`` and delivery cursors are per writer. A session advisory
  lock on the writer id keeps two live processes from writing under the same name (the second gets
  ``StorageError('locked')``), since two of them would fork the chain.
* **Group commit.** Appends from any thread or loop are queued on a private event loop (:mod:`.runner`); every
  append waiting when a transaction starts joins it; callers are answered after ``COMMIT`` returned.
* **Cluster-wide dedup.** Records are keyed by ``(time_ms, id)`` in every writer's table: a retry that reaches
  another replica is not stored twice. Same id with different content is kept under a derived id and flagged
  ``id_collision`` exactly as in the embedded store (:func:`collector.store.sqlite.collided_row`). Because a
  concurrent writer may insert the same key between our duplicate check and our insert, the insert is
  ``ON CONFLICT DO NOTHING`` under a savepoint; if a row was skipped the savepoint is rolled back and the batch is
  re-chained without it, so ``writer_seq`` and the chain have no holes.
* **Failures.** Lost connections, a server shutting down or refusing connections become
  ``StorageError('unavailable')`` (receivers answer 503/UNAVAILABLE with Retry-After); disk full and read-only
  servers keep their own reasons. The writer reconnects on the next append and a probe retries every
  :data:`PROBE_INTERVAL_S` while unhealthy, so readiness recovers without traffic. On every (re)connect the chain
  head and sequences are reloaded from the database, so a commit whose answer was lost is never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collector.store.api import AppendResult, MetricRow, RecordRow, SpanRow, StorageError
from collector.store.chain import chain_genesis, chain_link
from collector.store.postgres.connection import PostgresUnavailableError, connect
from collector.store.postgres.migrations import quote_ident
from collector.store.postgres.retention import delete_expired_by_time, delete_expired_records
from collector.store.postgres.runner import LoopThread
from collector.store.sqlite import collided_row, same_content

if TYPE_CHECKING:
    import asyncpg

    from collector.config import PostgresStorageConfig

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
MAX_DEDUP_RETRIES = 5

# SQLSTATE classes/codes -> StorageError reasons (PostgreSQL manual, Appendix A "PostgreSQL Error Codes").
_REASON_BY_SQLSTATE = {
    "53100": "disk_full",
    "25006": "read_only",
    "57P01": "unavailable",  # admin_shutdown
    "57P02": "unavailable",  # crash_shutdown
    "57P03": "unavailable",  # cannot_connect_now
    "55P03": "locked",
    "40P01": "locked",
    "40001": "locked",
    "57014": "timeout",  # query_canceled (statement_timeout)
}


def classify_pg_error(exc: BaseException) -> StorageError:
    """A driver/OS error as a :class:`StorageError`; classified by SQLSTATE or exception type, never message words."""
    import asyncpg

    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        if state in _REASON_BY_SQLSTATE:
            return StorageError(_REASON_BY_SQLSTATE[state], _detail(exc))
        if state.startswith("08"):
            return StorageError("unavailable", _detail(exc))
        if state.startswith("53"):
            return StorageError("disk_full" if state == "53100" else "unavailable", _detail(exc))
        return StorageError("error", _detail(exc))
    if isinstance(
        exc,
        OSError | TimeoutError | asyncio.TimeoutError | asyncpg.InterfaceError | PostgresUnavailableError,
    ):
        return StorageError("unavailable", _detail(exc))
    return StorageError("error", _detail(exc))


def _client_state(exc: BaseException) -> bool:
    """asyncpg's own protocol-state errors (e.g. an operation cut off by a lost connection)."""
    import asyncpg

    return isinstance(exc, asyncpg.InternalClientError)


def _detail(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


def writer_name(host: str | None, worker: int) -> tuple[str, str]:
    """``(name, host)`` of the writer for ``worker`` on ``host`` (default: this machine's host name)."""
    h = host or socket.gethostname() or "localhost"
    return f"{h}/{worker}", h


@dataclass
class _Pending:
    records: Sequence[RecordRow]
    metrics: Sequence[MetricRow]
    spans: Sequence[SpanRow]
    future: asyncio.Future[AppendResult]


class PostgresAuditLog:
    """:class:`~collector.store.api.AuditLog` on PostgreSQL for one writer (``shard`` = worker index)."""

    def __init__(
        self,
        settings: PostgresStorageConfig,
        *,
        shard: int = 0,
        host: str | None = None,
        max_commit_records: int = 20000,
    ) -> None:
        self.settings = settings
        self.worker = shard
        self.name, self.host = writer_name(host, shard)
        self.max_commit_records = max_commit_records
        self.schema = quote_ident(settings.schema)
        self.writer_id = 0
        self.shard = 0  # the writer id once open
        self.chain_head = b""
        self.chain_seq = 0
        self._metric_seq = 0
        self._span_seq = 0
        self.on_commit: Callable[[], None] | None = None
        self.on_commit_stats: Callable[[int, float], None] | None = None
        self.last_error: StorageError | None = None
        self.last_error_time = 0.0
        self.commits = 0
        self.committed_rows = 0
        self._conn: asyncpg.Connection | None = None
        self._runner: LoopThread | None = None
        self._queue: list[_Pending] = []
        self._flushing = False
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def open(self) -> PostgresAuditLog:
        """Connect, register the writer and load its chain head. Raises :class:`StorageError` if unusable."""
        self._runner = LoopThread(f"ccbridge-pg-writer-{self.worker}")
        try:
            self._runner.run(self._connect())
        except StorageError:
            self._runner.stop()
            self._runner = None
            raise
        return self

    def close(self) -> None:
        runner = self._runner
        if runner is None or self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            runner.run(self._shutdown(), timeout=30)
        runner.stop()

    async def _shutdown(self) -> None:
        while self._flushing or self._queue:
            await asyncio.sleep(0.01)
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=5)
            self._conn = None

    @property
    def healthy(self) -> bool:
        return self.last_error is None and not self._closed

    async def _connect(self) -> asyncpg.Connection:
        """The connection, (re)opened with the writer registered, locked and its state reloaded."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        try:
            conn = await connect(self.settings)
        except PostgresUnavailableError as exc:
            raise StorageError("unavailable", str(exc)) from None
        try:
            await self._load_state(conn)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            if isinstance(exc, StorageError):
                raise
            raise classify_pg_error(exc) from None
        self._conn = conn
        return conn

    async def _load_state(self, conn: asyncpg.Connection) -> None:
        s = self.schema
        writer_id = await conn.fetchval(
            f"INSERT INTO {s}.writers (name, host, worker) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET heartbeat_at = now() RETURNING writer_id",
            self.name,
            self.host,
            self.worker,
        )
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", _LOCK_CLASS, writer_id):
            raise StorageError("locked", f"writer {self.name!r} is in use by another live process")
        await conn.execute(
            f"INSERT INTO {s}.writer_sequences (writer_id, stream) "
            "SELECT $1, unnest(ARRAY['records', 'metric_points', 'spans']) ON CONFLICT DO NOTHING",
            writer_id,
        )
        seqs = dict(
            await conn.fetch(f"SELECT stream, last_seq FROM {s}.writer_sequences WHERE writer_id = $1", writer_id)
        )
        head = await conn.fetchrow(f"SELECT writer_seq, head FROM {s}.chain_heads WHERE writer_id = $1", writer_id)
        self.writer_id = self.shard = int(writer_id)
        if head is None:
            anchor = await conn.fetchrow(
                f"SELECT writer_seq, link FROM {s}.chain_anchors WHERE writer_id = $1 ORDER BY writer_seq DESC LIMIT 1",
                writer_id,
            )
            self.chain_head, self.chain_seq = (
                (bytes(anchor["link"]), int(anchor["writer_seq"])) if anchor else (chain_genesis(self.writer_id), 0)
            )
        else:
            self.chain_head, self.chain_seq = bytes(head["head"]), int(head["writer_seq"])
        self._metric_seq = int(seqs.get("metric_points", 0))
        self._span_seq = int(seqs.get("spans", 0))

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    # -- appends -----------------------------------------------------------------------------------------------

    async def append(
        self, records: Sequence[RecordRow] = (), metrics: Sequence[MetricRow] = (), spans: Sequence[SpanRow] = ()
    ) -> AppendResult:
        """Store the rows; returns after the transaction holding them committed (raises :class:`StorageError`)."""
        runner = self._check_open()
        return await runner.submit(self._enqueue(records, metrics, spans))

    def append_sync(
        self, records: Sequence[RecordRow] = (), metrics: Sequence[MetricRow] = (), spans: Sequence[SpanRow] = ()
    ) -> AppendResult:
        """Blocking variant of :meth:`append` for threads without an event loop."""
        runner = self._check_open()
        return runner.run(self._enqueue(records, metrics, spans))

    def _check_open(self) -> LoopThread:
        if self._closed or self._runner is None:
            raise StorageError("closed", "the store is shutting down" if self._closed else "the store is not open")
        return self._runner

    async def _enqueue(
        self, records: Sequence[RecordRow], metrics: Sequence[MetricRow], spans: Sequence[SpanRow]
    ) -> AppendResult:
        p = _Pending(records, metrics, spans, asyncio.get_running_loop().create_future())
        self._queue.append(p)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await asyncio.shield(p.future)

    async def _flush(self) -> None:
        """Commit everything queued, one transaction per group, until the queue is empty."""
        try:
            while self._queue:
                batch: list[_Pending] = []
                rows = 0
                while self._queue and (not batch or rows < self.max_commit_records):
                    p = self._queue.pop(0)
                    batch.append(p)
                    rows += len(p.records) + len(p.metrics) + len(p.spans)
                await self._commit(batch)
        finally:
            self._flushing = False

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        state = (self.chain_head, self.chain_seq, self._metric_seq, self._span_seq)
        try:
            conn = await self._connect()
            async with conn.transaction():
                results = [await self._insert(conn, p) for p in batch]
                await self._save_state(conn)
        except BaseException as exc:
            self.chain_head, self.chain_seq, self._metric_seq, self._span_seq = state
            error = exc if isinstance(exc, StorageError) else classify_pg_error(exc)
            if error.reason == "error" and (self._conn is None or self._conn.is_closed() or _client_state(exc)):
                # the connection broke under the statement (the driver may report it as a protocol-state error)
                error = StorageError("unavailable", error.detail)
            if error.reason in ("unavailable", "locked", "timeout") or not isinstance(exc, StorageError):
                # the outcome of a COMMIT cut off is unknown: reconnect and reload the state from the database
                self._drop_connection()
            self._failed(batch, error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._succeeded(batch, results, started)

    def _failed(self, batch: list[_Pending], error: StorageError) -> None:
        if self.last_error is None or self.last_error.reason != error.reason:
            log.error("storage write failed: %s", error)
        self.last_error = error
        self.last_error_time = time.time()
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)
        if self._probe_task is None and not self._closed:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    def _succeeded(self, batch: list[_Pending], results: list[AppendResult], started: float) -> None:
        if self.last_error is not None:
            log.warning("storage recovered after: %s", self.last_error.reason)
        self.last_error = None
        self.commits += 1
        rows = sum(r.records + r.metric_points + r.spans for r in results)
        self.committed_rows += rows
        if self.on_commit_stats is not None:
            self.on_commit_stats(rows, time.perf_counter() - started)
        if self.on_commit is not None:
            self.on_commit()
        for p, r in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(r)

    async def _probe_loop(self) -> None:
        """While unhealthy, reconnect and run a trivial statement every :data:`PROBE_INTERVAL_S`."""
        try:
            while self.last_error is not None and not self._closed:
                await asyncio.sleep(PROBE_INTERVAL_S)
                if self._flushing:
                    continue
                try:
                    conn = await self._connect()
                    await conn.fetchval("SELECT 1")
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    self._drop_connection()
                    self.last_error = exc if isinstance(exc, StorageError) else classify_pg_error(exc)
                    continue
                log.warning("storage recovered after: %s", self.last_error.reason if self.last_error else "error")
                self.last_error = None
        finally:
            self._probe_task = None

    async def _save_state(self, conn: asyncpg.Connection) -> None:
        s = self.schema
        await conn.execute(
            f"UPDATE {s}.writer_sequences AS w SET last_seq = v.seq FROM "
            "(SELECT unnest($2::text[]) AS stream, unnest($3::bigint[]) AS seq) AS v "
            "WHERE w.writer_id = $1 AND w.stream = v.stream",
            self.writer_id,
            ["records", "metric_points", "spans"],
            [self.chain_seq, self._metric_seq, self._span_seq],
        )
        if self.chain_seq:
            await conn.execute(
                f"INSERT INTO {s}.chain_heads (writer_id, writer_seq, head) VALUES ($1, $2, $3) "
                "ON CONFLICT (writer_id) DO UPDATE SET writer_seq = excluded.writer_seq, head = excluded.head, "
                "updated_at = now()",
                self.writer_id,
                self.chain_seq,
                self.chain_head,
            )

    async def _insert(self, conn: asyncpg.Connection, p: _Pending) -> AppendResult:
        new, collisions = await self._insert_records(conn, p.records)
        metrics = spans = 0
        if p.metrics:
            base = self._metric_seq
            stored = await conn.fetch(
                f"INSERT INTO {self.schema}.metric_points (time_ms, key, name, writer_id, writer_seq, body) "
                "SELECT t, k, n, $1, $2 + o, b FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bytea[]) "
                "WITH ORDINALITY AS v(t, k, n, b, o) ON CONFLICT DO NOTHING RETURNING writer_seq",
                self.writer_id,
                base,
                [m[0] for m in p.metrics],
                [m[1] for m in p.metrics],
                [m[2] for m in p.metrics],
                [m[3] for m in p.metrics],
            )
            self._metric_seq = base + len(p.metrics)
            metrics = len(stored)
        if p.spans:
            base = self._span_seq
            await conn.execute(
                f"INSERT INTO {self.schema}.spans (trace_id, span_id, time_ms, name, writer_id, writer_seq, body) "
                "SELECT tr, sp, t, n, $1, $2 + o, b "
                "FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[], $7::bytea[]) "
                "WITH ORDINALITY AS v(tr, sp, t, n, b, o) ON CONFLICT DO NOTHING",
                self.writer_id,
                base,
                [s[0] for s in p.spans],
                [s[1] for s in p.spans],
                [s[2] for s in p.spans],
                [s[3] for s in p.spans],
                [s[4] for s in p.spans],
            )
            self._span_seq = base + len(p.spans)
            spans = len(p.spans)
        del metrics  # metric points offered are what the result reports (as in the embedded store)
        return AppendResult(len(p.records), new, len(p.metrics), spans, collisions)

    async def _insert_records(self, conn: asyncpg.Connection, rows: Sequence[RecordRow]) -> tuple[int, int]:
        """Insert ``rows`` chained after this writer's head; returns (records stored, collisions)."""
        if not rows:
            return 0, 0
        for _ in range(MAX_DEDUP_RETRIES):
            chained, collisions = await self._chain(conn, rows)
            if not chained:
                return 0, collisions
            tr = conn.transaction()  # a savepoint inside the commit transaction
            await tr.start()
            stored = await conn.fetchval(
                f"WITH ins AS (INSERT INTO {self.schema}.records "
                '(id, time_ms, kind, "user", user_id, session, received_ms, writer_id, writer_seq, body, chain) '
                "SELECT i, t, k, u, ui, se, r, $1, q, b, c FROM unnest($2::text[], $3::bigint[], $4::text[], "
                "$5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bytea[], $11::bytea[]) "
                "AS v(i, t, k, u, ui, se, r, q, b, c) ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins",
                self.writer_id,
                *[list(col) for col in zip(*chained, strict=True)],
            )
            if stored == len(chained):
                await tr.commit()
                last = chained[-1]
                self.chain_seq, self.chain_head = int(last[7]), bytes(last[9])
                return len(chained), collisions
            # another writer stored one of these keys since we looked: redo without it
            await tr.rollback()
        raise StorageError("locked", "records kept colliding with concurrent writers; retry")

    async def _chain(self, conn: asyncpg.Connection, rows: Sequence[RecordRow]) -> tuple[list[tuple[Any, ...]], int]:
        """New rows only, as insert tuples ``(id, time, kind, user, user_id, session, received, seq, body, link)``."""
        existing = {
            (int(r[0]), str(r[1])): bytes(r[2])
            for r in await conn.fetch(
                f"SELECT r.time_ms, r.id, r.body FROM {self.schema}.records AS r "
                "JOIN unnest($1::bigint[], $2::text[]) AS v(t, i) ON r.time_ms = v.t AND r.id = v.i",
                [r[1] for r in rows],
                [r[0] for r in rows],
            )
        }
        seen: dict[tuple[int, str], bytes] = {}
        out: list[tuple[Any, ...]] = []
        head, seq, collisions = self.chain_head, self.chain_seq, 0
        for row in rows:
            key = (row[1], row[0])
            prior = seen.get(key, existing.get(key))
            if prior is not None:
                if same_content(prior, row[7]):
                    continue
                row = collided_row(row)
                key = (row[1], row[0])
                if key in seen:
                    continue
                if key not in existing:
                    found = await conn.fetchval(
                        f"SELECT 1 FROM {self.schema}.records WHERE time_ms = $1 AND id = $2", key[0], key[1]
                    )
                    if found is not None:
                        continue
                collisions += 1
            seen[key] = row[7]
            head = chain_link(head, row[7])
            seq += 1
            out.append((row[0], row[1], row[2], row[3], row[4], row[5], row[6], seq, row[7], head))
        return out, collisions

    # -- retention ---------------------------------------------------------------------------------------------

    async def delete_expired(self, cutoff_ms: int, max_seq: int | None, batch: int = 10_000) -> int:
        """Delete this writer's oldest records received before ``cutoff_ms`` (``writer_seq <= max_seq``), keeping
        the chain anchor; metric points and spans before the cutoff too."""
        runner = self._check_open()

        async def run() -> int:
            conn = await self._retention_connection()
            try:
                result = await delete_expired_records(
                    conn, self.settings.schema, self.writer_id, cutoff_ms, max_seq=max_seq, batch=batch
                )
                await delete_expired_by_time(conn, self.settings.schema, "metric_points", cutoff_ms, batch=batch)
                await delete_expired_by_time(conn, self.settings.schema, "spans", cutoff_ms, batch=batch)
            except StorageError:
                raise
            except Exception as exc:
                raise classify_pg_error(exc) from None
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)
            return result.deleted

        return await runner.submit(run())

    async def _retention_connection(self) -> asyncpg.Connection:
        # its own connection: long deletes must not hold up group commits
        try:
            return await connect(self.settings)
        except PostgresUnavailableError as exc:
            raise StorageError("unavailable", str(exc)) from None


_LOCK_CLASS = 0x43434257  # 'CCBW': the advisory-lock class of writer identities (second key: writer_id)
