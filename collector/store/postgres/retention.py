"""Retention in the PostgreSQL store: batched, index-driven deletes that keep every chain one unbroken run.

Records expire per writer, oldest first in the writer's sequence (its commit and chain order), like the embedded
store: a batch is the writer's oldest ``batch`` rows read through the ``(writer_id, writer_seq)`` index, cut at the
first row that is still needed (received at or after the cut-off, not yet delivered everywhere, or the writer's
newest record, which is never deleted). The link of the last deleted record becomes an anchor in ``chain_anchors``,
in the same transaction, so ``audit verify`` starts the remaining chain from it. A late event (old event time,
recent receipt) is kept with its neighbours rather than cut out of the chain.

Each batch is its own short transaction: concurrent ingest is never blocked for long, and replicas running
retention together do not collide (a writer's retention is serialised by an advisory lock that the others skip).
Metric points and spans have no chain; they expire by event time, in batches through their time index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from collector.store.postgres.migrations import quote_ident

if TYPE_CHECKING:
    import asyncpg

__all__ = ["DEFAULT_BATCH", "RetentionResult", "delete_expired_by_time", "delete_expired_records", "retention_lock_key"]

DEFAULT_BATCH = 10_000


@dataclass(frozen=True)
class RetentionResult:
    deleted: int
    batches: int
    anchor_seq: int | None  # the writer_seq of the newest anchor written, if any
    skipped: bool = False  # another process held this writer's retention lock


def retention_lock_key(schema: str, writer_id: int) -> int:
    digest = hashlib.sha256(f"ccbridge.retention\x1f{schema}\x1f{writer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _delete_batch(
    conn: asyncpg.Connection, schema: str, writer_id: int, cutoff_ms: int, max_seq: int | None, batch: int
) -> tuple[int, int | None, bool]:
    """One batch in one transaction: (rows deleted, anchor seq, lock was free)."""
    q = quote_ident(schema)
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", retention_lock_key(schema, writer_id)):
            return 0, None, False
        newest = await conn.fetchval(f"SELECT max(writer_seq) FROM {q}.records WHERE writer_id = $1", writer_id)
        if newest is None:
            return 0, None, True
        rows = await conn.fetch(
            f"SELECT writer_seq, received_ms FROM {q}.records WHERE writer_id = $1 ORDER BY writer_seq LIMIT $2",
            writer_id,
            batch,
        )
        upto: int | None = None
        for seq, received_ms in rows:
            if received_ms >= cutoff_ms or seq >= newest or (max_seq is not None and seq > max_seq):
                break
            upto = seq
        if upto is None:
            return 0, None, True
        link = await conn.fetchval(
            f"SELECT chain FROM {q}.records WHERE writer_id = $1 AND writer_seq = $2", writer_id, upto
        )
        status = await conn.execute(
            f"DELETE FROM {q}.records WHERE writer_id = $1 AND writer_seq <= $2", writer_id, upto
        )
        if link is not None:
            await conn.execute(
                f"INSERT INTO {q}.chain_anchors (writer_id, writer_seq, link, reason) VALUES ($1, $2, $3, 'retention') "
                "ON CONFLICT (writer_id, writer_seq) DO NOTHING",
                writer_id,
                upto,
                link,
            )
        return int(status.rsplit(" ", 1)[1]), upto if link is not None else None, True


async def delete_expired_records(
    conn: asyncpg.Connection,
    schema: str,
    writer_id: int,
    cutoff_ms: int,
    *,
    max_seq: int | None = None,
    batch: int = DEFAULT_BATCH,
) -> RetentionResult:
    """Delete ``writer_id``'s oldest records received before ``cutoff_ms`` (and, with ``max_seq``, delivered to
    every destination: ``writer_seq <= max_seq``), ``batch`` rows per transaction, until the prefix ends."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    deleted = batches = 0
    anchor: int | None = None
    while True:
        n, seq, free = await _delete_batch(conn, schema, writer_id, cutoff_ms, max_seq, batch)
        if not free:
            return RetentionResult(deleted, batches, anchor, skipped=True)
        if n == 0:
            return RetentionResult(deleted, batches, anchor)
        deleted += n
        batches += 1
        anchor = seq if seq is not None else anchor
        if n < batch:
            return RetentionResult(deleted, batches, anchor)


async def delete_expired_by_time(
    conn: asyncpg.Connection,
    schema: str,
    table: Literal["metric_points", "spans"],
    cutoff_ms: int,
    *,
    batch: int = DEFAULT_BATCH,
) -> int:
    """Delete ``table`` rows with event time before ``cutoff_ms``, oldest first, ``batch`` rows per transaction."""
    if table not in ("metric_points", "spans"):
        raise ValueError(f"no time-based retention for {table!r}")
    q = quote_ident(schema)
    statement = (
        f"DELETE FROM {q}.{table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {q}.{table} WHERE time_ms < $1 ORDER BY time_ms LIMIT $2))"
    )
    total = 0
    while True:
        status = await conn.execute(statement, cutoff_ms, batch)
        n = int(status.rsplit(" ", 1)[1])
        total += n
        if n < batch:
            return total
