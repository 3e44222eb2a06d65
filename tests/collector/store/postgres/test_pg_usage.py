"""The usage history in PostgreSQL answers exactly as the embedded one, given the same writes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector.enrich.analytics_client import DailyUsage
from collector.store.postgres.migrations import migrate
from collector.store.postgres.session import PgSession
from collector.store.postgres.usage import PgUsageStore
from collector.store.usage import UsageStore, UsageStoreError
from tests.collector.store.test_usage import DAY, LATE, fixture_records, with_changes
from tests.pg_support import PostgresTarget


@pytest.fixture
async def schema(postgres: PostgresTarget, pg_schema: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(postgres.dsn)
    await migrate(conn, pg_schema)
    await conn.close()
    yield pg_schema


def session_for(dsn: str) -> PgSession:
    async def _connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return PgSession(_connect)


@pytest.fixture
def stores(postgres: PostgresTarget, schema: str, tmp_path: Path) -> Iterator[tuple[UsageStore, PgUsageStore]]:
    lite = UsageStore.open(tmp_path)
    pg = PgUsageStore(session_for(postgres.dsn), schema, owns_session=True)
    yield lite, pg
    lite.close()
    pg.close()


def _plain(value: object) -> object:
    """DailyUsage compares by identity: compare its fields."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, DailyUsage):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def _both(stores: tuple[UsageStore, PgUsageStore], method: str, *args: object, **kw: object) -> object:
    lite, pg = stores
    a = getattr(lite, method)(*args, **kw)
    b = getattr(pg, method)(*args, **kw)
    assert _plain(a) == _plain(b), f"{method}: sqlite {a!r} != postgresql {b!r}"
    return b


def _write(stores: tuple[UsageStore, PgUsageStore], day: date, records: list[DailyUsage], fetched: datetime) -> None:
    for s in stores:
        assert s.write_day(day, records, pages=2, fetched_at=fetched) == len({r.key for r in records})


def test_same_answers_as_the_embedded_history(stores) -> None:
    records = fixture_records()
    assert records
    early = datetime(2025, 9, 8, 20, 0, tzinfo=UTC)  # not final yet
    _write(stores, DAY, records, early)
    changed = [with_changes(records[0], num_sessions=99), *records[1:]]
    _write(stores, DAY, changed, LATE)  # refetch: values replaced, the day final
    day2 = DAY + timedelta(days=1)
    _write(stores, day2, fixture_records(day2)[:2], LATE)
    _write(stores, DAY, records[:1], early)  # an older, partial refetch: the day stays final, rows are kept
    assert _both(stores, "count_rows") == len(records) + 2
    assert _both(stores, "count_rows", day2, day2) == 2
    assert _both(stores, "known_days") == [DAY, day2]
    assert _both(stores, "first_day") == DAY
    assert _both(stores, "latest_day") == day2
    assert _both(stores, "latest_day", DAY) == DAY
    states = _both(stores, "day_states")
    assert states[DAY].final and states[DAY].rows == 1  # type: ignore[index]
    _both(stores, "day_state", day2)
    rows = _both(stores, "rows", DAY, day2)
    assert len(rows) == len(records) + 2  # type: ignore[arg-type]
    _both(stores, "rows", DAY, DAY, actor_type="user_actor")
    _both(stores, "rows", DAY, day2, actor_type=records[0].actor_type, actor_id=records[0].actor_id)
    days = _both(stores, "actor_days", DAY, day2)
    assert any(isinstance(d.cost_cents, Decimal) for d in days)  # type: ignore[attr-defined]
    summaries = _both(stores, "latest_user_summaries")
    assert summaries
    _both(stores, "latest_user_summaries", DAY)
    seen = datetime(2025, 9, 9, tzinfo=UTC)
    mappings = [("user_id", "inst-1", "a@example.com"), ("account_uuid", "acc-1", "b@example.com")]
    for s in stores:
        assert s.save_identities(mappings, seen_at=seen) == 2
        s.save_identities([("user_id", "inst-1", "c@example.com")], seen_at=seen + timedelta(hours=1))
    assert _both(stores, "identities") == {
        ("user_id", "inst-1"): "c@example.com",
        ("account_uuid", "acc-1"): "b@example.com",
    }


def test_every_replica_reads_what_the_leader_wrote(postgres: PostgresTarget, schema: str) -> None:
    with PgUsageStore(session_for(postgres.dsn), schema, owns_session=True) as leader:
        marker = leader.data_marker()
        leader.write_day(DAY, fixture_records(), pages=1, fetched_at=LATE)
        assert leader.data_marker() != marker
        leader.save_identities([("user_id", "x", "x@example.com")], seen_at=LATE)
    with PgUsageStore(session_for(postgres.dsn), schema, owns_session=True) as other:
        assert other.count_rows() == len(fixture_records())
        assert other.identities() == {("user_id", "x"): "x@example.com"}
        with pytest.raises(ValueError, match="unknown identity kind"):
            other.save_identities([("email", "x", "y")], seen_at=LATE)


def test_database_errors_are_usage_store_errors(postgres: PostgresTarget, pg_schema: str) -> None:
    store = PgUsageStore(session_for(postgres.dsn), pg_schema, owns_session=True)  # schema never migrated
    with pytest.raises(UsageStoreError, match=pg_schema):
        store.count_rows()
    store.close()
    with pytest.raises(UsageStoreError, match="closed"):
        store.first_day()


async def test_every_replica_enriches_from_the_database(postgres: PostgresTarget, schema: str, tmp_path: Path) -> None:
    from collector.enrich.enricher import Enricher

    with PgUsageStore(session_for(postgres.dsn), schema, owns_session=True) as leader:
        leader.write_day(DAY, fixture_records(), pages=1, fetched_at=LATE)
    replicas = [
        Enricher(
            tmp_path / f"replica-{i}",
            open_history=lambda: PgUsageStore(session_for(postgres.dsn), schema, owns_session=True),  # type: ignore[arg-type,return-value]
        )
        for i in range(2)
    ]
    try:
        for e in replicas:
            await e.start()
        # replica 0 learns an installation id from a record with an e-mail; replica 1 backfills it from the database
        first = {"user": {"email": "alice@example.com", "id": "inst-9"}}
        replicas[0].enrich(first)
        assert first["usage"]["sessions"] == 7  # type: ignore[index]
        assert await replicas[0].flush() == 1
        await replicas[1].reload()
        second: dict[str, Any] = {"user": {"id": "inst-9"}}
        replicas[1].enrich(second)
        assert second["user"]["email"] == "alice@example.com" and second["user"]["identity_source"] == "backfill"
        assert second["usage"]["sessions"] == 7
    finally:
        for e in replicas:
            await e.stop()
    assert not (tmp_path / "replica-0" / "analytics.db").exists()  # nothing local
