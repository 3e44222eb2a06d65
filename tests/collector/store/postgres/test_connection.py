"""Connecting from storage.postgresql settings: timeouts applied, one-line redacted errors, bounded wait at start."""

from __future__ import annotations

import logging

import pytest

from collector.config import load_tree
from collector.store.postgres.connection import (
    PostgresUnavailableError,
    connect,
    connect_waiting,
    describe_status,
    format_status,
    prepare_schema,
)
from collector.store.postgres.migrations import MIGRATIONS, Migration, SchemaTooNew, latest_version, migrate
from tests.conftest import free_port
from tests.pg_support import PostgresTarget


def _settings(dsn: str, **pg: object):
    return load_tree({"storage": {"backend": "postgresql", "postgresql": {"dsn": dsn, **pg}}}).storage.postgresql


def _password(dsn: str) -> str:
    return dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


async def test_connect_applies_the_settings(postgres: PostgresTarget) -> None:
    conn = await connect(_settings(postgres.dsn, statement_timeout="1500ms"))
    try:
        assert await conn.fetchval("SHOW statement_timeout") == "1500ms"
        assert await conn.fetchval("SHOW application_name") == "ccbridge"
    finally:
        await conn.close()


async def test_wrong_password_is_one_redacted_line(postgres: PostgresTarget) -> None:
    real = _password(postgres.dsn)
    wrong = "Wr0ng-" + real[::-1]
    dsn = postgres.dsn.replace(real, wrong)
    with pytest.raises(PostgresUnavailableError) as exc:
        await connect(_settings(dsn))
    msg = str(exc.value)
    assert msg.startswith("cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:")
    assert "password authentication failed" in msg
    assert wrong not in msg and real not in msg and "\n" not in msg


async def test_unreachable_without_wait_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    dsn = f"postgresql://app:S3cret-x@127.0.0.1:{free_port()}/audit"
    with pytest.raises(PostgresUnavailableError) as exc:
        await connect_waiting(_settings(dsn))
    assert "S3cret-x" not in str(exc.value) and "app:***@127.0.0.1" in str(exc.value)
    assert "gave up" not in str(exc.value) and not caplog.records


async def test_unreachable_with_wait_retries_with_progress_then_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    dsn = f"postgresql://app:S3cret-x@127.0.0.1:{free_port()}/audit"
    now = [0.0]
    pauses: list[float] = []

    async def sleep(s: float) -> None:
        pauses.append(s)
        now[0] += s

    caplog.set_level(logging.WARNING)
    with pytest.raises(PostgresUnavailableError, match=r"gave up after 6 attempts"):
        await connect_waiting(_settings(dsn, wait_at_start="10s"), sleep=sleep, clock=lambda: now[0])
    assert pauses == [0.5, 1.0, 2.0, 4.0, 2.5]  # capped backoff, cut to what is left of the wait
    assert len(caplog.records) == 5 and "retrying in 0.5s" in caplog.records[0].getMessage()
    assert all("S3cret-x" not in r.getMessage() for r in caplog.records)


async def test_wait_ends_as_soon_as_the_server_answers(postgres: PostgresTarget) -> None:
    good = _settings(postgres.dsn, wait_at_start="1m")
    conn = await connect_waiting(good)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


async def test_prepare_schema_migrates_then_status_reports_it(postgres: PostgresTarget, pg_schema: str) -> None:
    settings = _settings(postgres.dsn, schema=pg_schema)
    before = await describe_status(settings)
    assert before.current == 0 and "pending" in format_status(before)
    result = await prepare_schema(settings)
    assert result.applied == tuple(range(1, latest_version() + 1))
    assert (await prepare_schema(settings)).applied == ()
    text = format_status(await describe_status(settings))
    assert text.splitlines()[0] == f"schema {pg_schema}: version {latest_version()}, up to date"
    assert "applied     1" in text and "initial schema" in text


async def test_newer_schema_is_refused_by_prepare_and_flagged_by_status(
    postgres: PostgresTarget, pg_schema: str
) -> None:
    settings = _settings(postgres.dsn, schema=pg_schema)
    conn = await connect(settings)
    newer = Migration(latest_version() + 1, "from a newer ccbridge", ("SELECT 1",))
    try:
        await migrate(conn, pg_schema, (*MIGRATIONS, newer))
    finally:
        await conn.close()
    with pytest.raises(
        SchemaTooNew, match=f"version {latest_version() + 1}, newer .* \\(version {latest_version()}\\)"
    ):
        await prepare_schema(settings)
    status = await describe_status(settings)
    assert "NEWER than this ccbridge knows" in format_status(status) and "(unknown to this ccbridge)" in format_status(
        status
    )
    with pytest.raises(SchemaTooNew):
        await describe_status(settings, require_compatible=True)
