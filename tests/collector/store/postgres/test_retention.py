"""Retention on a real PostgreSQL: each writer's oldest prefix, in batches, anchored, never the newest record."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from collector.store.postgres.migrations import migrate, quote_ident
from collector.store.postgres.retention import (
    delete_expired_by_time,
    delete_expired_records,
    retention_lock_key,
)
from tests.pg_support import PostgresTarget


@pytest.fixture
async def db(postgres: PostgresTarget, pg_schema: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    conn = await asyncpg.connect(postgres.dsn)
    await migrate(conn, pg_schema)
    q = quote_ident(pg_schema)
    await conn.execute(f"INSERT INTO {q}.writers (name, host, worker) VALUES ('a/0', 'a', 0), ('b/0', 'b', 0)")
    yield conn, pg_schema
    await conn.close()


async def _records(conn: asyncpg.Connection, schema: str, writer_id: int, received: list[int]) -> None:
    rows = [
        (f"{writer_id}-{seq}", 10_000 + seq, r, writer_id, seq, f"link-{writer_id}-{seq}".encode())
        for seq, r in enumerate(received, start=1)
    ]
    await conn.executemany(
        f"INSERT INTO {quote_ident(schema)}.records (id, time_ms, kind, received_ms, writer_id, writer_seq, body, "
        "chain) VALUES ($1, $2, 'prompt', $3, $4, $5, '{}', $6)",
        rows,
    )


async def _seqs(conn: asyncpg.Connection, schema: str, writer_id: int) -> list[int]:
    rows = await conn.fetch(
        f"SELECT writer_seq FROM {quote_ident(schema)}.records WHERE writer_id = $1 ORDER BY writer_seq", writer_id
    )
    return [r[0] for r in rows]


async def _anchors(conn: asyncpg.Connection, schema: str, writer_id: int) -> list[tuple[int, bytes]]:
    rows = await conn.fetch(
        f"SELECT writer_seq, link FROM {quote_ident(schema)}.chain_anchors WHERE writer_id = $1 ORDER BY writer_seq",
        writer_id,
    )
    return [(r[0], bytes(r[1])) for r in rows]


async def test_deletes_the_expired_prefix_in_batches_and_anchors_the_chain(db) -> None:
    conn, schema = db
    await _records(conn, schema, 1, [100] * 10 + [900] * 3)
    await _records(conn, schema, 2, [100] * 4)
    result = await delete_expired_records(conn, schema, 1, cutoff_ms=500, batch=3)
    assert (result.deleted, result.batches, result.anchor_seq) == (10, 4, 10)
    assert await _seqs(conn, schema, 1) == [11, 12, 13]
    assert (await _anchors(conn, schema, 1))[-1] == (10, b"link-1-10")
    assert [s for s, _ in await _anchors(conn, schema, 1)] == [3, 6, 9, 10]
    assert await _seqs(conn, schema, 2) == [1, 2, 3, 4]  # other writers untouched
    again = await delete_expired_records(conn, schema, 1, cutoff_ms=500, batch=3)
    assert (again.deleted, again.batches) == (0, 0)


async def test_a_late_record_stays_with_its_chain(db) -> None:
    conn, schema = db
    # seq 3 was received after the cut-off; seq 4 and 5 before it (e.g. a retry): the prefix ends at seq 2
    await _records(conn, schema, 1, [100, 100, 900, 100, 100, 900])
    result = await delete_expired_records(conn, schema, 1, cutoff_ms=500)
    assert result.deleted == 2 and await _seqs(conn, schema, 1) == [3, 4, 5, 6]


async def test_undelivered_and_newest_records_are_kept(db) -> None:
    conn, schema = db
    await _records(conn, schema, 1, [100] * 6)
    result = await delete_expired_records(conn, schema, 1, cutoff_ms=500, max_seq=4)
    assert result.deleted == 4 and await _seqs(conn, schema, 1) == [5, 6]
    result = await delete_expired_records(conn, schema, 1, cutoff_ms=500)
    assert result.deleted == 1 and await _seqs(conn, schema, 1) == [6]  # the newest is never deleted


async def test_a_writer_under_retention_elsewhere_is_skipped(db, postgres: PostgresTarget) -> None:
    conn, schema = db
    await _records(conn, schema, 1, [100] * 5)
    other = await asyncpg.connect(postgres.dsn)
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock($1)", retention_lock_key(schema, 1))
            result = await delete_expired_records(conn, schema, 1, cutoff_ms=500)
        assert result.skipped and result.deleted == 0
    finally:
        await other.close()
    assert (await delete_expired_records(conn, schema, 1, cutoff_ms=500)).deleted == 4


async def test_metric_points_and_spans_expire_by_event_time(db) -> None:
    conn, schema = db
    q = quote_ident(schema)
    await conn.executemany(
        f"INSERT INTO {q}.metric_points (time_ms, key, name, writer_id, writer_seq, body) "
        "VALUES ($1, $2, 'm', 1, $3, '{}')",
        [(t, f"k{i}", i + 1) for i, t in enumerate([10, 20, 30, 40, 50])],
    )
    await conn.executemany(
        f"INSERT INTO {q}.spans (time_ms, trace_id, span_id, name, writer_id, writer_seq, body) "
        "VALUES ($1, $2, 's', 's', 1, $3, '{}')",
        [(t, f"t{i}", i + 1) for i, t in enumerate([10, 20, 30])],
    )
    assert await delete_expired_by_time(conn, schema, "metric_points", 35, batch=2) == 3
    assert await delete_expired_by_time(conn, schema, "spans", 25, batch=2) == 2
    assert [r[0] for r in await conn.fetch(f"SELECT time_ms FROM {q}.metric_points ORDER BY 1")] == [40, 50]
    assert [r[0] for r in await conn.fetch(f"SELECT time_ms FROM {q}.spans")] == [30]
    with pytest.raises(ValueError, match="no time-based retention"):
        await delete_expired_by_time(conn, schema, "records", 35)  # type: ignore[arg-type]
