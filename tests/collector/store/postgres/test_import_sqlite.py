"""Import of an embedded store into a real PostgreSQL: chains verify, counts match, a second run copies nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest

from collector.config import StorageConfig
from collector.store import open_reader, open_store
from collector.store.chain import ChainReport, verify_links
from collector.store.delivery_state import DeliveryState
from collector.store.postgres.import_sqlite import import_sqlite
from collector.store.postgres.migrations import quote_ident
from collector.store.usage import UsageStore
from tests.collector.store.test_usage import DAY, LATE, fixture_records
from tests.pg_support import PostgresTarget


def _connector(dsn: str):  # type: ignore[no-untyped-def]
    async def _connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return _connect


@pytest.fixture
async def conn(postgres: PostgresTarget) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(postgres.dsn)
    yield c
    await c.close()


def _rows(shard: int, start: int, n: int, received_ms: int) -> list:  # type: ignore[type-arg]
    out = []
    for i in range(start, start + n):
        rid = f"rec-{shard}-{i}"
        body = orjson.dumps({"id": rid, "kind": "prompt", "n": i})
        out.append((rid, 1_700_000_000_000 + i, "prompt", "dev@example.com", "u1", f"sess-{i % 3}", received_ms, body))
    return out


async def _build(directory: Path) -> None:
    cfg = StorageConfig(directory=str(directory))
    now = int(time.time() * 1000)
    s0 = open_store(cfg, shard=0).open()
    s0.append_sync(
        _rows(0, 0, 30, now),
        metrics=[(now + i, f"k{i}", "claude_code.cost.usage", b'{"v": %d}' % i) for i in range(4)],
        spans=[("t1", f"s{i}", now, "claude_code.interaction", b'{"span": %d}' % i) for i in range(3)],
    )
    s0.close()
    s1 = open_store(cfg, shard=1).open()
    s1.append_sync(_rows(1, 0, 10, now - 10_000_000))  # old: retention takes 6 of them below
    s1.append_sync(_rows(1, 10, 5, now))
    assert await s1.delete_expired(now - 5_000_000, max_seq=6) == 6
    s1.close()
    st = DeliveryState.for_shard(directory, 0)
    st.set_cursor("splunk", 12)
    st.dead_letter("splunk", [(13, "rec-0-12", 1, b'{"id": "rec-0-12"}')], "400 bad event", 400, 1)
    st.close()
    with UsageStore.open(directory) as usage:
        usage.write_day(DAY, fixture_records(), pages=2, fetched_at=LATE)
        usage.save_identities([("user_id", "u1", "dev@example.com")], seen_at=datetime(2025, 9, 9, tzinfo=UTC))


async def _verify(conn: asyncpg.Connection, schema: str) -> ChainReport:
    """Every writer's chain from its anchor, as ``audit verify`` does on PostgreSQL."""
    q = quote_ident(schema)
    report = ChainReport()
    for (writer_id,) in await conn.fetch(f"SELECT writer_id FROM {q}.writers ORDER BY writer_id"):
        rows = await conn.fetch(
            f"SELECT writer_seq, id, time_ms, body, chain FROM {q}.records WHERE writer_id = $1 ORDER BY writer_seq",
            writer_id,
        )
        first = rows[0]["writer_seq"] if rows else 1
        anchor = await conn.fetchrow(
            f"SELECT writer_seq, link FROM {q}.chain_anchors WHERE writer_id = $1 AND writer_seq < $2 "
            "ORDER BY writer_seq DESC LIMIT 1",
            writer_id,
            first,
        )
        shard = int(
            await conn.fetchval(f"SELECT worker FROM {q}.writers WHERE writer_id = $1", writer_id)  # genesis name
        )
        ok = verify_links(
            report,
            shard,
            (anchor[0], bytes(anchor[1])) if anchor else None,
            [(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]) if r[4] is not None else None) for r in rows],
        )
        assert ok, report.broken
    return report


async def _count(conn: asyncpg.Connection, schema: str, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {quote_ident(schema)}.{table}"))


async def test_import_copies_everything_once_and_chains_verify(
    postgres: PostgresTarget, pg_schema: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await _build(tmp_path)
    source_report = open_reader(tmp_path).verify_chain()
    assert source_report.broken is None and source_report.records == 30 + 9
    result = await import_sqlite(_connector(postgres.dsn), pg_schema, tmp_path)
    assert [(s.shard, s.records, s.metric_points, s.spans, s.cursors, s.dead_letters) for s in result.shards] == [
        (0, 30, 4, 3, 1, 1),
        (1, 9, 0, 0, 0, 0),
    ]
    assert result.usage_days == 1 and result.usage_rows == len(fixture_records()) and result.identities == 1
    report = await _verify(conn, pg_schema)
    assert report.records == 39 and report.shards == 2
    # the chain heads are the source's
    assert sorted(v for v in report.head.values()) == sorted(source_report.head.values())
    q = quote_ident(pg_schema)
    w0 = result.shards[0].writer_id
    assert (
        await conn.fetchval(
            f"SELECT delivered_seq FROM {q}.delivery_progress WHERE writer_id = $1 AND destination = 'splunk'", w0
        )
        == 12
    )
    dl = await conn.fetchrow(f"SELECT record_seq, record_id, reason, status, writer_id FROM {q}.dead_letters")
    assert tuple(dl) == (13, "rec-0-12", "400 bad event", 400, w0)
    assert await _count(conn, pg_schema, "usage_daily") == len(fixture_records())
    assert await conn.fetchval(f"SELECT email FROM {q}.identity_map WHERE value = 'u1'") == "dev@example.com"
    bodies = {bytes(r[0]) for r in await conn.fetch(f"SELECT body FROM {q}.records")}
    assert orjson.dumps({"id": "rec-1-14", "kind": "prompt", "n": 14}) in bodies

    counts = {t: await _count(conn, pg_schema, t) for t in ("records", "metric_points", "spans", "dead_letters")}
    again = await import_sqlite(_connector(postgres.dsn), pg_schema, tmp_path)
    assert again.copied == 0 and [s.writer_id for s in again.shards] == [s.writer_id for s in result.shards]
    assert {t: await _count(conn, pg_schema, t) for t in counts} == counts
    assert await _count(conn, pg_schema, "usage_daily") == len(fixture_records())

    # the source keeps being written to: a later import brings only the rest, and the chain still verifies
    cfg = StorageConfig(directory=str(tmp_path))
    s0 = open_store(cfg, shard=0).open()
    s0.append_sync(_rows(0, 30, 5, int(time.time() * 1000)))
    s0.close()
    st = DeliveryState.for_shard(tmp_path, 0)
    st.set_cursor("splunk", 33)
    st.close()
    third = await import_sqlite(_connector(postgres.dsn), pg_schema, tmp_path)
    assert [s.records for s in third.shards] == [5, 0] and third.shards[0].dead_letters == 0
    assert (await _verify(conn, pg_schema)).records == 44
    assert (
        await conn.fetchval(
            f"SELECT delivered_seq FROM {q}.delivery_progress WHERE writer_id = $1 AND destination = 'splunk'", w0
        )
        == 33
    )


async def test_not_a_data_directory_is_refused(postgres: PostgresTarget, pg_schema: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no ccbridge data directory"):
        await import_sqlite(_connector(postgres.dsn), pg_schema, tmp_path / "nothing")


async def test_db_import_command(
    postgres: PostgresTarget, pg_schema: str, conn: asyncpg.Connection, tmp_path: Path, capsys
) -> None:
    import asyncio

    import yaml

    from collector import cli

    source = tmp_path / "data"
    await _build(source)
    config = tmp_path / "pg.yaml"
    config.write_text(
        yaml.safe_dump({"storage": {"backend": "postgresql", "postgresql": {"dsn": postgres.dsn, "schema": pg_schema}}})
    )
    argv = ["db", "import", "--config", str(config), "--from-sqlite", str(source)]
    assert await asyncio.to_thread(cli.main, argv) == 0
    out, err = capsys.readouterr()
    assert "shard 0 -> writer" in out and "30 records" in out and not err
    assert await _count(conn, pg_schema, "records") == 39
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert "0 records" in capsys.readouterr().out
    sqlite_cfg = tmp_path / "lite.yaml"
    sqlite_cfg.write_text(yaml.safe_dump({"storage": {"directory": str(tmp_path / "other")}}))
    assert (
        await asyncio.to_thread(cli.main, ["db", "import", "--config", str(sqlite_cfg), "--from-sqlite", str(source)])
        == 2
    )
    assert "storage.backend must be postgresql" in capsys.readouterr().err
    assert await asyncio.to_thread(cli.main, [*argv[:4], "--from-sqlite", str(tmp_path / "missing")]) == 1
    assert "no ccbridge data directory" in capsys.readouterr().err
