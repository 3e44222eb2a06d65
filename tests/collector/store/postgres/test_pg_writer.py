"""The PostgreSQL AuditLog on a real throwaway server: durable group-committed appends, cluster-wide dedup,
collision flagging, a chain per writer, and recovery after the server restarts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator

import asyncpg
import orjson
import pytest

from collector.config import load_tree
from collector.store.api import StorageError
from collector.store.chain import chain_genesis, chain_link
from collector.store.postgres.migrations import migrate, quote_ident
from collector.store.postgres.reader import PostgresStoreReader
from collector.store.postgres.writer import PostgresAuditLog, classify_pg_error
from tests.pg_support import PostgresTarget


def _settings(dsn: str, schema: str):
    cfg = {"backend": "postgresql", "postgresql": {"dsn": dsn, "schema": schema, "connect_timeout": "3s"}}
    return load_tree({"storage": cfg}).storage.postgresql


def rec(i: int, *, t: int | None = None, extra: str = "", kind: str = "event", session: str | None = None) -> tuple:
    rid = f"{i:032x}"
    body = orjson.dumps({"id": rid, "kind": kind, "session": session, "x": extra})
    return (rid, t if t is not None else 1000 + i, kind, None, None, session, 5000 + i, body)


async def _sql(dsn: str, statement: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


@pytest.fixture
def settings(postgres: PostgresTarget, pg_schema: str):
    async def prepare() -> None:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            await migrate(conn, pg_schema)
        finally:
            await conn.close()

    asyncio.run(prepare())
    return _settings(postgres.dsn, pg_schema)


@pytest.fixture
def writer(settings) -> Iterator[PostgresAuditLog]:
    w = PostgresAuditLog(settings, shard=0, host="replica-a").open()
    yield w
    w.close()


def _run(coro):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _restart(postgres: PostgresTarget):
    """``pg_ctl restart`` (fast), logging to the server's log so no pipe stays open."""
    assert postgres.server is not None
    return postgres.server.pg_ctl("-l", str(postgres.server.log_path), "restart", "-m", "fast", "-w", "-t", "60")


def _count(settings, table: str = "records") -> int:
    rows = _run(_sql(settings.dsn.get(), f"SELECT count(*) FROM {quote_ident(settings.schema)}.{table}"))
    return int(rows[0][0])


def test_append_is_committed_when_it_returns_and_registers_the_writer(settings, writer) -> None:
    res = writer.append_sync([rec(1), rec(2)], metrics=[(1000, "k", "m", b"{}")], spans=[("t", "s", 1, "n", b"{}")])
    assert (res.records, res.new_records, res.metric_points, res.spans, res.collisions) == (2, 2, 1, 1, 0)
    # visible to another connection right away: the answer came after COMMIT
    assert _count(settings) == 2 and _count(settings, "metric_points") == 1 and _count(settings, "spans") == 1
    q = quote_ident(settings.schema)
    rows = _run(_sql(settings.dsn.get(), f"SELECT writer_id, name, host, worker FROM {q}.writers"))
    assert [(r["name"], r["host"], r["worker"]) for r in rows] == [("replica-a/0", "replica-a", 0)]
    assert writer.shard == rows[0]["writer_id"] and writer.healthy and writer.chain_seq == 2
    head = chain_link(chain_link(chain_genesis(writer.shard), rec(1)[7]), rec(2)[7])
    assert writer.chain_head == head


async def test_concurrent_appends_share_one_commit(settings, writer) -> None:
    commits: list[int] = []
    writer.on_commit_stats = lambda rows, _s: commits.append(rows)
    first = asyncio.ensure_future(writer.append([rec(0)]))
    await asyncio.sleep(0)  # the first group starts; the others queue behind it
    results = await asyncio.gather(first, *(writer.append([rec(i)]) for i in range(1, 41)))
    assert sum(r.new_records for r in results) == 41
    assert len(commits) < 41 and sum(commits) == 41  # grouped: fewer transactions than appends
    assert max(commits) > 1
    assert _count(settings) == 41


def test_the_same_request_through_two_writers_is_stored_once(settings) -> None:
    a = PostgresAuditLog(settings, shard=0, host="replica-a").open()
    b = PostgresAuditLog(settings, shard=0, host="replica-b").open()
    try:
        assert a.shard != b.shard
        batch = [rec(i) for i in range(1, 11)]
        assert a.append_sync(batch).new_records == 10
        retry = b.append_sync(batch)
        assert (retry.records, retry.new_records, retry.collisions) == (10, 0, 0)
        assert b.chain_seq == 0  # nothing chained: a retry stored elsewhere adds no link
        # the same event with volatile fields changed (received on another transport) is still a retry
        again = orjson.loads(batch[0][7])
        again["received_time"] = "2026-12-08T00:00:00Z"
        assert b.append_sync([(*batch[0][:7], orjson.dumps(again))]).new_records == 0
        assert _count(settings) == 10
        # both writers appending the same new rows concurrently still store them once
        rows = [rec(i) for i in range(100, 160)]
        done: list[int] = []
        threads = [threading.Thread(target=lambda w=w: done.append(w.append_sync(rows).new_records)) for w in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(done)[1] + sorted(done)[0] == 60 and _count(settings) == 70
        with PostgresStoreReader(settings) as reader:
            report = reader.verify_chain()
        assert report.broken is None and report.records == 70
    finally:
        a.close()
        b.close()


def test_same_id_with_different_content_is_kept_and_flagged(settings, writer) -> None:
    writer.append_sync([rec(1, extra="first")])
    res = writer.append_sync([rec(1, extra="second"), rec(1, extra="second")])
    assert (res.new_records, res.collisions) == (1, 1)
    assert writer.append_sync([rec(1, extra="second")]).new_records == 0  # the collided record's retry
    q = quote_ident(settings.schema)
    rows = _run(_sql(settings.dsn.get(), f"SELECT id, body FROM {q}.records ORDER BY writer_seq"))
    assert len(rows) == 2
    flagged = orjson.loads(rows[1]["body"])
    assert flagged["id_collision"] == {"id": f"{1:032x}"} and flagged["id"] == rows[1]["id"] != f"{1:032x}"


def test_chain_per_writer_is_verified_and_tampering_found(settings) -> None:
    a = PostgresAuditLog(settings, shard=0, host="h").open()
    b = PostgresAuditLog(settings, shard=1, host="h").open()
    try:
        a.append_sync([rec(i) for i in range(1, 6)])
        b.append_sync([rec(i) for i in range(6, 9)])
        a.append_sync([rec(9)])
    finally:
        a.close()
        b.close()
    with PostgresStoreReader(settings) as reader:
        report = reader.verify_chain()
        assert report.broken is None and report.records == 9 and report.shards == 2
        assert report.head[a.shard][0] == 6 and report.head[b.shard][0] == 3
    q = quote_ident(settings.schema)
    _run(
        _sql(
            settings.dsn.get(),
            f"UPDATE {q}.records SET body = convert_to('{{\"id\":\"x\"}}', 'UTF8') WHERE writer_id = $1 "
            "AND writer_seq = 2",
            b.shard,
        )
    )
    with PostgresStoreReader(settings) as reader:
        broken = reader.verify_chain().broken
    assert broken is not None and (broken.shard, broken.seq) == (b.shard, 2)
    assert "modified" in broken.reason


def test_a_reopened_writer_continues_its_chain(settings) -> None:
    w = PostgresAuditLog(settings, shard=3, host="h").open()
    w.append_sync([rec(1), rec(2)])
    first_id = w.shard
    w.close()
    w = PostgresAuditLog(settings, shard=3, host="h").open()
    try:
        assert (w.shard, w.chain_seq) == (first_id, 2)
        w.append_sync([rec(3)])
    finally:
        w.close()
    with PostgresStoreReader(settings) as reader:
        assert reader.verify_chain().broken is None


def test_a_second_live_process_with_the_same_identity_is_refused(settings, writer) -> None:
    with pytest.raises(StorageError) as err:
        PostgresAuditLog(settings, shard=0, host="replica-a").open()
    assert err.value.reason == "locked" and "replica-a/0" in err.value.detail


def test_unreachable_database_is_unavailable(settings) -> None:
    bad = _settings("postgresql://nobody:secretpw@127.0.0.1:1/db", settings.schema)
    with pytest.raises(StorageError) as err:
        PostgresAuditLog(bad, shard=0, host="x").open()
    assert err.value.reason == "unavailable" and "secretpw" not in str(err.value)
    assert classify_pg_error(ConnectionResetError()).reason == "unavailable"


def test_restart_mid_append_fails_then_recovers_without_losing_acknowledged(postgres, settings, writer) -> None:
    if postgres.server is None:
        pytest.skip("needs the throwaway server (pg_ctl restart)")
    acked: list[str] = []
    errors: list[StorageError] = []
    stop = threading.Event()

    def load() -> None:
        i = 10_000
        while not stop.is_set():
            batch = [rec(i + k) for k in range(20)]
            i += 20
            try:
                writer.append_sync(batch)
            except StorageError as exc:
                errors.append(exc)
                time.sleep(0.05)
                continue
            acked.extend(r[0] for r in batch)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.5)
    res = _restart(postgres)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (errors and writer.healthy and len(acked) > 0):
        time.sleep(0.1)
    n_before = len(acked)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(acked) == n_before:
        time.sleep(0.1)
    stop.set()
    t.join(30)
    assert errors and {e.reason for e in errors} == {"unavailable"}
    assert len(acked) > n_before and writer.healthy  # recovered by itself
    q = quote_ident(settings.schema)
    stored = {r[0] for r in _run(_sql(settings.dsn.get(), f"SELECT id FROM {q}.records"))}
    assert set(acked) <= stored
    with PostgresStoreReader(settings) as reader:
        assert reader.verify_chain().broken is None


def test_probe_recovers_without_traffic(postgres, settings, writer, monkeypatch) -> None:
    if postgres.server is None:
        pytest.skip("needs the throwaway server (pg_ctl restart)")
    import collector.store.postgres.writer as mod

    monkeypatch.setattr(mod, "PROBE_INTERVAL_S", 0.2)
    server = postgres.server
    writer.append_sync([rec(1)])
    assert server.pg_ctl("stop", "-m", "fast", "-w", "-t", "60").returncode == 0
    try:
        with pytest.raises(StorageError) as err:
            writer.append_sync([rec(2)])
        assert err.value.reason == "unavailable"
        assert not writer.healthy and writer.last_error is not None
    finally:
        started = server.pg_ctl("-l", str(server.log_path), "-w", "-t", "60", "-o", f"-p {server.port}", "start")
    assert started.returncode == 0, started.stdout
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not writer.healthy:
        time.sleep(0.1)
    assert writer.healthy


async def test_delete_expired_keeps_the_chain_verifiable(settings, writer) -> None:
    await writer.append([rec(i) for i in range(1, 11)], metrics=[(1, "old", "m", b"{}"), (10**12, "new", "m", b"{}")])
    deleted = await writer.delete_expired(cutoff_ms=5006, max_seq=None, batch=2)
    assert deleted == 5  # received_ms 5001..5005
    assert _count(settings) == 5 and _count(settings, "metric_points") == 1
    await writer.append([rec(20)])
    with PostgresStoreReader(settings) as reader:
        report = await asyncio.to_thread(reader.verify_chain)
    assert report.broken is None and report.records == 6
