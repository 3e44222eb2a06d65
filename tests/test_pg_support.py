"""The PostgreSQL test harness itself: a throwaway server starts, takes connections, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import asyncpg
import pytest

from tests.pg_support import (
    DSN_ENV,
    PostgresTarget,
    ThrowawayPostgres,
    create_database,
    create_schema,
    drop_database,
    drop_schema,
    dsn_with,
    pg_bin_dir,
    postgres_for_tests,
)


def _fetchval(dsn: str, query: str) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(go())


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def own_server() -> ThrowawayPostgres:
    try:
        pg_bin_dir()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server = ThrowawayPostgres().start()
    yield server
    server.stop()


def test_throwaway_server_starts_and_takes_connections(own_server: ThrowawayPostgres) -> None:
    assert own_server.dsn.startswith("postgresql://postgres:")
    assert ":" + own_server.password + "@127.0.0.1:" in own_server.dsn
    assert str(_fetchval(own_server.dsn, "SHOW server_version")).split(".")[0].isdigit()
    assert _fetchval(own_server.dsn, "SELECT current_user") == "postgres"
    assert _fetchval(own_server.dsn, "SHOW listen_addresses") == "127.0.0.1"
    assert _fetchval(own_server.dsn, "SHOW unix_socket_directories") == str(own_server.socket_dir)


def test_server_runs_unprivileged(own_server: ThrowawayPostgres) -> None:
    owner = own_server.data_dir.stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0, "initdb refuses root; the data directory must belong to an unprivileged user"
    pid = int((own_server.data_dir / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid == owner


def test_tcp_connections_need_the_password(own_server: ThrowawayPostgres) -> None:
    wrong = own_server.dsn.replace(own_server.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        _fetchval(wrong, "SELECT 1")


def test_stop_removes_server_and_directory() -> None:
    server = ThrowawayPostgres().start()
    base, port = server.base, server.port
    assert base is not None and base.exists() and _port_open(port)
    server.stop()
    assert not Path(base).exists()
    assert not _port_open(port)
    server.stop()  # twice is fine


def test_session_server_and_fresh_schema(postgres: PostgresTarget, pg_schema: str) -> None:
    assert _fetchval(postgres.dsn, f"SELECT count(*) FROM pg_namespace WHERE nspname = '{pg_schema}'") == 1
    tables = f"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{pg_schema}'"
    assert _fetchval(postgres.dsn, tables) == 0


def test_schemas_are_unique_and_dropped_with_their_tables(postgres: PostgresTarget) -> None:
    a, b = create_schema(postgres.dsn), create_schema(postgres.dsn)
    assert a != b
    asyncio.run(_execute(postgres.dsn, f'CREATE TABLE "{a}".t (x int)'))
    drop_schema(postgres.dsn, a)
    drop_schema(postgres.dsn, b)
    assert _fetchval(postgres.dsn, f"SELECT count(*) FROM pg_namespace WHERE nspname IN ('{a}', '{b}')") == 0


def test_fresh_database_is_created_and_dropped(postgres: PostgresTarget) -> None:
    dsn = create_database(postgres.dsn)
    name = dsn.rsplit("/", 1)[1]
    assert _fetchval(dsn, "SELECT current_database()") == name
    drop_database(postgres.dsn, dsn)
    assert _fetchval(postgres.dsn, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == 0


def test_dsn_env_selects_an_external_server(postgres: PostgresTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    external = dsn_with(postgres.dsn, options="-c application_name=external")
    monkeypatch.setenv(DSN_ENV, external)
    with postgres_for_tests() as target:
        assert target.server is None
        assert target.dsn == external
        assert _fetchval(target.dsn, "SHOW application_name") == "external"


async def _execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
