"""Delivery state on a real PostgreSQL: two replicas, leases with fencing, takeover after the TTL, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from collector.store.api import LeaseLost
from collector.store.postgres.delivery import PgDeliveryState, PgLeaseManager
from collector.store.postgres.migrations import migrate, quote_ident
from collector.store.postgres.session import PgSession
from collector.telemetry.selfmetrics import SelfMetrics
from tests.pg_support import PostgresTarget

TTL = 1.0


@pytest.fixture
async def schema(postgres: PostgresTarget, pg_schema: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(postgres.dsn)
    await migrate(conn, pg_schema)
    await conn.execute(
        f"INSERT INTO {quote_ident(pg_schema)}.writers (name, host, worker) VALUES ('a/0', 'a', 0), ('b/0', 'b', 0)"
    )
    await conn.close()
    yield pg_schema


def _session(postgres: PostgresTarget) -> PgSession:
    dsn = postgres.dsn

    async def _connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return PgSession(_connect)


@pytest.fixture
def sessions(postgres: PostgresTarget) -> Iterator[tuple[PgSession, PgSession]]:
    a, b = _session(postgres), _session(postgres)
    yield a, b
    a.close()
    b.close()


async def test_one_replica_claims_the_other_cannot(sessions, schema: str) -> None:
    a = PgLeaseManager(sessions[0], schema, ttl=30, owner="replica-a")
    ch = await a.refresh(["splunk"])
    assert ch.held == {("splunk", 1), ("splunk", 2)} and ch.acquired == ch.held and not ch.lost
    b = PgLeaseManager(sessions[1], schema, ttl=30, owner="replica-b")
    ch_b = await b.refresh(["splunk"])
    assert ch_b.held == frozenset()  # everything is leased and unexpired
    with pytest.raises(LeaseLost, match="splunk for shard 1"):
        b.delivery_state(1).set_cursor("splunk", 5)
    a.delivery_state(1).set_cursor("splunk", 5)
    assert b.delivery_state(1).cursor("splunk") == 5
    # with two live replicas, a hands over its share above half; b claims it
    ch = await a.refresh(["splunk"])
    assert ch.shed == {("splunk", 2)}
    await a.release(list(ch.shed))
    ch_b = await b.refresh(["splunk"])
    assert ch_b.held == {("splunk", 2)} and ch_b.acquired == {("splunk", 2)}
    assert b.takeovers == 0  # released, not taken over


async def test_takeover_after_ttl_continues_from_the_cursor_and_fences_the_old_holder(sessions, schema: str) -> None:
    metrics_b = SelfMetrics()
    a = PgLeaseManager(sessions[0], schema, ttl=TTL, owner="replica-a")
    b = PgLeaseManager(sessions[1], schema, ttl=TTL, owner="replica-b", metrics=metrics_b)
    await a.refresh(["hec"])
    state_a = a.delivery_state(1)
    state_a.set_cursor("hec", 42)
    assert (await b.refresh(["hec"])).held == frozenset()
    # a stops heartbeating (hung or dead); b renews its presence while the TTL runs out
    await asyncio.sleep(TTL + 0.3)
    ch = await b.refresh(["hec"])
    assert ch.held == {("hec", 1), ("hec", 2)} and b.takeovers == 2
    assert metrics_b.delivery_leases_held._value.get() == 2
    assert metrics_b.delivery_lease_takeovers._value.get() == 2
    state_b = b.delivery_state(1)
    assert state_b.cursor("hec") == 42  # continues from the persisted cursor
    # the old holder wakes up: its cursor update is fenced off, also through dead_letter(advance_to=...)
    with pytest.raises(LeaseLost, match="fenced update refused"):
        state_a.set_cursor("hec", 50)
    with pytest.raises(LeaseLost):
        state_a.dead_letter("hec", [(43, "r43", 1000, b"{}")], "bad", 400, 1, advance_to=43)
    assert state_b.dead_letter_count() == 0  # the refused advance stored nothing
    state_b.set_cursor("hec", 60)
    assert state_a.cursor("hec") == 60
    # and the old holder learns it lost them at its next heartbeat
    ch_a = await a.refresh(["hec"])
    assert ch_a.lost == {("hec", 1), ("hec", 2)} and ch_a.held == frozenset()


async def test_a_lease_lapsed_but_not_taken_is_renewed_by_its_holder(sessions, schema: str) -> None:
    a = PgLeaseManager(sessions[0], schema, ttl=TTL, owner="replica-a")
    await a.refresh(["hec"])
    await asyncio.sleep(TTL + 0.2)
    ch = await a.refresh(["hec"])  # expired, nobody took it: still ours, same epoch
    assert ch.held == {("hec", 1), ("hec", 2)} and not ch.lost
    a.delivery_state(2).set_cursor("hec", 3)
    assert a.delivery_state(2).cursor("hec") == 3


async def test_a_state_issued_before_the_lease_was_claimed_again_is_refused(sessions, schema: str) -> None:
    a = PgLeaseManager(sessions[0], schema, ttl=TTL, owner="replica-a")
    b = PgLeaseManager(sessions[1], schema, ttl=TTL, owner="replica-b")
    await a.refresh(["hec"])
    old = a.delivery_state(1)
    old.set_cursor("hec", 10)
    await asyncio.sleep(TTL + 0.2)  # a is paused; b takes over, moves on, then gives the work back
    await b.refresh(["hec"])
    b.delivery_state(1).set_cursor("hec", 20)
    await b.close()
    ch = await a.refresh(["hec"])  # a claims it again: a new epoch
    assert ("hec", 1) in ch.held and ("hec", 1) in ch.lost and ("hec", 1) in ch.acquired
    with pytest.raises(LeaseLost, match="claimed again"):
        old.set_cursor("hec", 11)  # the paused worker's view (cursor 10) must not overwrite 20
    fresh = a.delivery_state(1)
    assert fresh.cursor("hec") == 20
    fresh.set_cursor("hec", 21)


async def test_concurrent_claims_never_share_a_pair(postgres: PostgresTarget, schema: str) -> None:
    q = quote_ident(schema)
    conn = await asyncpg.connect(postgres.dsn)
    await conn.executemany(
        f"INSERT INTO {q}.writers (name, host, worker) VALUES ($1, 'h', 0)", [(f"w{i}",) for i in range(10)]
    )
    await conn.close()
    sessions = [_session(postgres) for _ in range(3)]
    try:
        managers = [PgLeaseManager(s, schema, ttl=30, owner=f"r{i}") for i, s in enumerate(sessions)]
        # every replica registers first, so each knows the others' share
        for m in managers:
            await m.refresh([])
        results = await asyncio.gather(*(m.refresh(["d1", "d2"]) for m in managers))
        held = [r.held for r in results]
        assert all(not (x & y) for i, x in enumerate(held) for y in held[i + 1 :])
        assert all(len(h) <= 8 for h in held)  # 24 pairs / 3 replicas
        # a second round covers everything
        results = await asyncio.gather(*(m.refresh(["d1", "d2"]) for m in managers))
        assert sum(len(r.held) for r in results) == 24
    finally:
        for s in sessions:
            s.close()


def _rows(n: int, start: int = 1) -> list[tuple[int, str, int, bytes]]:
    return [(s, f"id-{s}", 1000 + s, b'{"n": %d}' % s) for s in range(start, start + n)]


async def test_dead_letters_are_cluster_wide(sessions, schema: str) -> None:
    a = PgLeaseManager(sessions[0], schema, ttl=30, owner="replica-a")
    await a.refresh(["hec", "dd"])
    a.delivery_state(1).dead_letter("hec", _rows(3), "400 bad event", 400, 1, advance_to=3)
    a.delivery_state(2).dead_letter("dd", _rows(2), "413 too large", 413, 2)
    assert a.delivery_state(1).cursor("hec") == 3
    # another replica (no leases) sees them, per writer and cluster-wide
    everyone = PgDeliveryState(sessions[1], schema, None)
    assert everyone.dead_letter_count() == 5 and everyone.dead_letter_count("hec") == 3
    assert PgDeliveryState(sessions[1], schema, 2).dead_letter_count() == 2
    entries = everyone.dead_letters("hec")
    assert [(e.record_seq, e.record_id, e.time_ms, e.body) for e in entries] == [
        (s, i, t, b) for s, i, t, b in _rows(3)
    ]
    assert entries[0].shard_file == "writer-1" and entries[0].batch == "writer 1 seq 1-3"
    after = everyone.dead_letters(after=entries[1].dlq_id, limit=2)
    assert [e.dlq_id for e in after] == [entries[2].dlq_id, entries[2].dlq_id + 1]
    groups = everyone.dead_letter_groups()
    assert [(g.destination, g.batch, g.reason, g.status, g.count) for g in groups] == [
        ("hec", "writer 1 seq 1-3", "400 bad event", 400, 3),
        ("dd", "writer 2 seq 1-2", "413 too large", 413, 2),
    ]
    everyone.fail_again([entries[0].dlq_id], "400 still bad", 400)
    again = everyone.dead_letters("hec", limit=1)[0]
    assert (again.reason, again.attempts) == ("400 still bad", 2) and again.failed_ms >= entries[0].failed_ms
    everyone.delete_dead_letters([entries[1].dlq_id])
    assert a.delivery_state(1).dead_letter_count("hec") == 2
    with pytest.raises(LeaseLost):  # no lease, no cursor
        PgDeliveryState(sessions[1], schema, 1).set_cursor("hec", 9)


async def test_purge_by_destination_and_age(sessions, schema: str) -> None:
    a = PgLeaseManager(sessions[0], schema, ttl=30, owner="replica-a")
    await a.refresh(["hec", "dd"])
    a.delivery_state(1).dead_letter("hec", _rows(2), "old", 400, 1)
    conn_cutoff = PgDeliveryState(sessions[1], schema, None).dead_letters()[-1].failed_ms + 1
    await asyncio.sleep(0.01)
    a.delivery_state(1).dead_letter("hec", _rows(1, start=10), "new", 400, 1)
    a.delivery_state(2).dead_letter("dd", _rows(2), "dd", 500, 1)
    view = PgDeliveryState(sessions[1], schema, None)
    purged = view.purge_dead_letters("hec", failed_before_ms=conn_cutoff)
    assert [(g.destination, g.reason, g.count) for g in purged] == [("hec", "old", 2)]
    assert view.dead_letter_count("hec") == 1 and view.dead_letter_count("dd") == 2
    purged = view.purge_dead_letters("dd")
    assert [(g.destination, g.count) for g in purged] == [("dd", 2)]
    assert [e.reason for e in view.dead_letters()] == ["new"]
    # a writer's view purges only that writer's entries
    a.delivery_state(2).dead_letter("hec", _rows(1), "w2", 400, 1)
    assert [g.count for g in PgDeliveryState(sessions[1], schema, 2).purge_dead_letters()] == [1]
    assert [e.reason for e in view.dead_letters()] == ["new"]


async def test_a_dropped_connection_is_replaced_and_a_dead_server_is_a_storage_error(
    postgres: PostgresTarget, sessions, schema: str
) -> None:
    from collector.store.api import StorageError

    a = PgLeaseManager(sessions[0], schema, ttl=30, owner="replica-a")
    await a.refresh(["hec"])
    a.delivery_state(1).set_cursor("hec", 7)
    pid = sessions[0].run(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    conn = await asyncpg.connect(postgres.dsn)
    await conn.execute("SELECT pg_terminate_backend($1)", pid)
    await conn.close()
    await asyncio.sleep(0.1)
    assert a.delivery_state(1).cursor("hec") == 7  # a new connection
    assert sessions[0].run(lambda c: c.fetchval("SELECT pg_backend_pid()")) != pid

    async def _refused() -> asyncpg.Connection:
        raise OSError("connection refused")

    dead = PgSession(_refused)
    try:
        with pytest.raises(StorageError, match="not_ready"):
            PgDeliveryState(dead, schema, 1).cursor("hec")
    finally:
        dead.close()
