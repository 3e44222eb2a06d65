"""The analytics leader on a real PostgreSQL: one of two contenders leads; when its session ends, the other does."""

from __future__ import annotations

import asyncio

import asyncpg

from collector.store.postgres.leader import AdvisoryLeader, leader_key, run_while_leader
from tests.pg_support import PostgresTarget


def _connector(dsn: str):  # type: ignore[no-untyped-def]
    async def _connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return _connect


async def test_one_leads_and_the_other_takes_over_when_its_connection_drops(
    postgres: PostgresTarget, pg_schema: str
) -> None:
    a = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    b = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    try:
        assert await a.try_lead() is True
        assert await b.try_lead() is False
        assert await a.try_lead() is True  # still leads (its session is alive)
        assert await b.try_lead() is False
        # the leader dies: its database session ends (here: the server terminates it, as after a crash)
        assert a._conn is not None
        pid = a._conn.get_server_pid()
        admin = await asyncpg.connect(postgres.dsn)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await admin.close()
        for _ in range(50):
            if await b.try_lead():
                break
            await asyncio.sleep(0.05)
        assert b.leading
        assert await a.try_lead() is False  # the old leader notices and does not lead
        assert a.leading is False
    finally:
        await a.resign()
        await b.resign()


async def test_a_leader_process_closing_its_connection_hands_over(postgres: PostgresTarget, pg_schema: str) -> None:
    a = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    b = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    assert await a.try_lead()
    assert a._conn is not None
    a._conn.terminate()  # the process went away without unlocking
    for _ in range(50):
        if await b.try_lead():
            break
        await asyncio.sleep(0.05)
    assert b.leading
    await b.resign()
    await a.resign()


async def test_leaders_of_different_schemas_do_not_exclude_each_other(postgres: PostgresTarget, pg_schema: str) -> None:
    assert leader_key(pg_schema, "analytics-sync") != leader_key(pg_schema + "x", "analytics-sync")
    a = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    b = AdvisoryLeader(_connector(postgres.dsn), pg_schema + "x")
    assert await a.try_lead() and await b.try_lead()
    await a.resign()
    await b.resign()


async def test_only_the_leader_runs_cycles_and_resigning_hands_over(postgres: PostgresTarget, pg_schema: str) -> None:
    runs = {"a": 0, "b": 0}
    stop_a, stop_b = asyncio.Event(), asyncio.Event()

    def cycle(name: str):  # type: ignore[no-untyped-def]
        async def _run() -> None:
            runs[name] += 1

        return _run

    a = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    b = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
    task_a = asyncio.create_task(run_while_leader(a, cycle("a"), stop_a, interval=0.05, contend_interval=0.05))
    await asyncio.sleep(0.2)
    task_b = asyncio.create_task(run_while_leader(b, cycle("b"), stop_b, interval=0.05, contend_interval=0.05))
    await asyncio.sleep(0.4)
    assert runs["a"] >= 3 and runs["b"] == 0
    stop_a.set()
    await task_a  # resigns: unlocks at once
    for _ in range(40):
        if runs["b"]:
            break
        await asyncio.sleep(0.05)
    assert runs["b"] >= 1
    stop_b.set()
    await task_b
