"""Schema migrations against a real PostgreSQL: once across concurrent replicas, idempotent, newer refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from collector.store.postgres.migrations import (
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    check_compatible,
    latest_version,
    lock_key,
    migrate,
    quote_ident,
    schema_status,
)
from tests.pg_support import PostgresTarget

LATEST = latest_version()
# A second version that takes a while, so concurrent migrators really overlap inside the lock.
SLOW_V2 = Migration(
    LATEST + 1,
    "test: slow second version",
    ("SELECT pg_sleep(0.3)", "CREATE TABLE {schema}.extra (x integer PRIMARY KEY)"),
)


@pytest.fixture
async def conn(postgres: PostgresTarget) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(postgres.dsn)
    yield c
    await c.close()


async def _tables(conn: asyncpg.Connection, schema: str) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {r["tablename"] for r in rows}


async def test_fresh_schema_is_brought_to_the_latest_version(conn: asyncpg.Connection) -> None:
    schema = "ccb_fresh_" + str(abs(lock_key(str(id(conn)))) % 10**8)
    try:
        before = await schema_status(conn, schema)
        assert (before.exists, before.current, before.latest) == (False, 0, LATEST)
        assert [m.version for m in before.pending] == [m.version for m in MIGRATIONS]

        result = await migrate(conn, schema)
        assert (result.before, result.after, result.applied) == (0, LATEST, tuple(range(1, LATEST + 1)))

        after = await schema_status(conn, schema)
        assert after.up_to_date and not after.pending and not after.too_new and after.modified == ()
        assert [a.version for a in after.applied] == list(range(1, LATEST + 1))
        expected = {
            "meta", "schema_migrations", "writers", "records", "metric_points", "spans", "writer_sequences",
            "chain_heads", "chain_anchors", "delivery_progress", "dead_letters", "usage_daily", "usage_sync_state",
            "identity_map",
        }  # fmt: skip
        assert expected <= await _tables(conn, schema)
        version = await conn.fetchval(f"SELECT value FROM {quote_ident(schema)}.meta WHERE key = 'schema_version'")
        assert version == str(LATEST)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


async def test_rerun_applies_nothing(conn: asyncpg.Connection, pg_schema: str) -> None:
    first = await migrate(conn, pg_schema)
    second = await migrate(conn, pg_schema)
    assert first.applied == tuple(range(1, LATEST + 1))
    assert (second.before, second.after, second.applied) == (LATEST, LATEST, ())
    rows = await conn.fetchval(f"SELECT count(*) FROM {quote_ident(pg_schema)}.schema_migrations")
    assert rows == LATEST


async def test_concurrent_migrators_migrate_once(postgres: PostgresTarget, pg_schema: str) -> None:
    migrations = (*MIGRATIONS, SLOW_V2)
    conns = [await asyncpg.connect(postgres.dsn) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate(c, pg_schema, migrations) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [r.applied for r in results if r.applied]
    assert applied == [tuple(range(1, LATEST + 2))], f"expected exactly one migrator to apply, got {results}"
    assert all(r.after == LATEST + 1 for r in results)
    status = await _status(postgres.dsn, pg_schema, migrations)
    assert status.up_to_date and [a.version for a in status.applied] == list(range(1, LATEST + 2))


async def test_newer_schema_is_refused_naming_both_versions(conn: asyncpg.Connection, pg_schema: str) -> None:
    await migrate(conn, pg_schema, (*MIGRATIONS, SLOW_V2))
    with pytest.raises(SchemaTooNew) as exc:
        await migrate(conn, pg_schema)
    msg = str(exc.value)
    assert f"version {LATEST + 1}" in msg and f"version {LATEST})" in msg and repr(pg_schema) in msg
    assert (exc.value.current, exc.value.latest) == (LATEST + 1, LATEST)

    status = await schema_status(conn, pg_schema)
    assert status.too_new and status.current == LATEST + 1 and status.pending == ()
    with pytest.raises(SchemaTooNew, match=f"version {LATEST + 1}, newer than this ccbridge knows"):
        check_compatible(status)
    assert [a.checksum_matches for a in status.applied][-1] is None  # a version this code does not know


async def test_failed_migration_leaves_the_schema_as_it_was(conn: asyncpg.Connection, pg_schema: str) -> None:
    await migrate(conn, pg_schema)
    broken = Migration(LATEST + 1, "test: broken", ("CREATE TABLE {schema}.half (x int)", "SELECT no_such_function()"))
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(conn, pg_schema, (*MIGRATIONS, broken))
    status = await schema_status(conn, pg_schema)
    assert status.current == LATEST
    assert "half" not in await _tables(conn, pg_schema)


async def test_a_migration_edited_after_it_was_applied_is_reported(conn: asyncpg.Connection, pg_schema: str) -> None:
    await migrate(conn, pg_schema)
    edited = (Migration(1, MIGRATIONS[0].name, (*MIGRATIONS[0].statements, "SELECT 1")), *MIGRATIONS[1:])
    status = await schema_status(conn, pg_schema, edited)
    assert status.modified == (1,)
    assert (await schema_status(conn, pg_schema)).modified == ()


async def test_migrations_must_be_numbered_without_gaps(conn: asyncpg.Connection, pg_schema: str) -> None:
    with pytest.raises(ValueError, match="without gaps"):
        await migrate(conn, pg_schema, (*MIGRATIONS, Migration(LATEST + 2, "gap", ("SELECT 1",))))


async def test_an_existing_schema_without_bookkeeping_is_at_version_zero(
    conn: asyncpg.Connection, pg_schema: str
) -> None:
    status = await schema_status(conn, pg_schema)
    assert (status.exists, status.current) == (True, 0)
    assert (await migrate(conn, pg_schema)).applied == tuple(range(1, LATEST + 1))


async def test_records_are_deduplicated_cluster_wide_by_time_and_id(conn: asyncpg.Connection, pg_schema: str) -> None:
    await migrate(conn, pg_schema)
    q = quote_ident(pg_schema)
    await conn.execute(f"INSERT INTO {q}.writers (name, host, worker) VALUES ('a/0', 'a', 0), ('b/0', 'b', 0)")
    insert = (
        f'INSERT INTO {q}.records (id, time_ms, kind, "user", user_id, session, received_ms, writer_id, writer_seq, '
        "body, chain) VALUES ($1, $2, 'prompt', 'u', 'u1', 's', $2, $3, $4, '{}', NULL) ON CONFLICT DO NOTHING"
    )
    await conn.executemany(insert, [("a" * 32, 1000, 1, 1), ("b" * 32, 1001, 1, 2)])
    # the same request retried through the other replica: nothing new is stored
    await conn.executemany(insert, [("a" * 32, 1000, 2, 1), ("b" * 32, 1001, 2, 2), ("c" * 32, 1001, 2, 3)])
    rows = await conn.fetch(f"SELECT id, writer_id, writer_seq FROM {q}.records ORDER BY id")
    assert [tuple(r) for r in rows] == [("a" * 32, 1, 1), ("b" * 32, 1, 2), ("c" * 32, 2, 3)]
    with pytest.raises(asyncpg.UniqueViolationError):  # a writer's sequence has no duplicates
        await conn.execute(insert.replace(" ON CONFLICT DO NOTHING", ""), "d" * 32, 5, 1, 1)


async def _status(dsn: str, schema: str, migrations: tuple[Migration, ...]):
    c = await asyncpg.connect(dsn)
    try:
        return await schema_status(c, schema, migrations)
    finally:
        await c.close()


async def test_a_role_without_create_on_the_database_migrates_a_schema_made_for_it(
    postgres: PostgresTarget, pg_database: str
) -> None:
    role, password = f"ccb_owner_{abs(lock_key(pg_database)) % 10**6}", "Owner-pw-1"
    admin = await asyncpg.connect(pg_database)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f"CREATE SCHEMA audit AUTHORIZATION {role}")
        dsn = f"postgresql://{role}:{password}@" + pg_database.split("@", 1)[1]
        owner = await asyncpg.connect(dsn)
        try:
            assert not await owner.fetchval("SELECT has_database_privilege(current_database(), 'CREATE')")
            assert (await migrate(owner, "audit")).applied == tuple(range(1, LATEST + 1))
            assert (await migrate(owner, "audit")).applied == ()
        finally:
            await owner.close()
        await admin.execute("DROP SCHEMA audit CASCADE")
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
