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


async def test_only_the_leader_syncs_the_analytics_api_and_the_survivor_takes_over(
    postgres: PostgresTarget, pg_schema: str
) -> None:
    from collector.enrich.analytics_client import AnalyticsClient
    from collector.enrich.sync import UsageSyncScheduler
    from collector.store.postgres.migrations import migrate
    from collector.store.postgres.session import PgSession
    from collector.store.postgres.usage import PgUsageStore
    from tests.collector.enrich.test_sync import FAST, make_config, noon
    from tests.fakes.analytics_api import AnalyticsApiFake

    conn = await asyncpg.connect(postgres.dsn)
    await migrate(conn, pg_schema)
    await conn.close()
    async with AnalyticsApiFake(users=3, days=5) as fake:
        config = make_config(fake, lookback_days=1)
        replicas = []
        for name in ("a", "b"):
            client = AnalyticsClient(config, retry=FAST)
            store = PgUsageStore(PgSession(_connector(postgres.dsn)), pg_schema, owns_session=True)
            scheduler = UsageSyncScheduler(client, store, config, clock=noon(fake.today))
            leader = AdvisoryLeader(_connector(postgres.dsn), pg_schema)
            stop = asyncio.Event()
            replicas.append((name, client, store, scheduler, leader, stop))
        tasks = []
        try:
            for _name, _client, _store, scheduler, leader, stop in replicas:
                tasks.append(
                    asyncio.create_task(
                        run_while_leader(leader, scheduler.run_once, stop, interval=0.1, contend_interval=0.1)
                    )
                )
                await asyncio.sleep(0.3)  # a starts first and leads
            (_, _, _, sched_a, leader_a, _), (_, _, store_b, sched_b, leader_b, _) = replicas
            assert leader_a.leading and not leader_b.leading
            assert sched_a.cycles >= 1 and sched_b.cycles == 0
            assert store_b.count_rows() > 0  # b reads what the leader synced
            # the leader dies (kill -9: its database session ends, nothing is unlocked): b takes the sync over
            assert leader_a._conn is not None
            leader_a._conn.terminate()
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            for _ in range(60):
                if sched_b.cycles:
                    break
                await asyncio.sleep(0.05)
            assert leader_b.leading and sched_b.cycles >= 1 and sched_b.last_result is not None
            assert sched_b.last_result.ok
        finally:
            for *_, stop in replicas:
                stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _name, client, store, _scheduler, leader, _stop in replicas:
                await leader.resign()
                await client.close()
                await asyncio.to_thread(store.close)
