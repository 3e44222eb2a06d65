"""Usage history store: WAL file of its own, idempotent day upserts, sync state, summaries, durability."""

from __future__ import annotations

import copy
import sqlite3
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from collector.enrich.analytics_client import DailyUsage, parse_record, parse_usage_page
from collector.store.usage import (
    _SCHEMA,
    DB_FILENAME,
    FINAL_AFTER,
    UsageStore,
    UsageStoreError,
    is_final,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "analytics-api"
DAY = date(2025, 9, 8)
LATE = datetime(2025, 9, 10, 6, 0, tzinfo=UTC)


def fixture_records(day: date = DAY) -> list[DailyUsage]:
    records = []
    for name in ("analytics_page1.json", "analytics_page2.json"):
        payload = orjson.loads((FIXTURES / name).read_bytes())
        for item in payload["data"]:
            item["date"] = day.isoformat()
        records.extend(parse_usage_page(payload, day).records)
    return records


def with_changes(record: DailyUsage, **core: int) -> DailyUsage:
    raw = copy.deepcopy(dict(record.raw))
    raw["core_metrics"].update(core)
    return parse_record(raw, record.day)


@pytest.fixture
def store(tmp_path):
    with UsageStore.open(tmp_path / "data") as opened:
        yield opened


def test_own_file_in_wal_mode(tmp_path, store):
    assert store.path == tmp_path / "data" / DB_FILENAME
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {"usage_daily", "sync_state", "identity_map"}


def test_round_trip_keeps_the_raw_record(store):
    records = fixture_records()
    raw = copy.deepcopy(dict(records[0].raw))
    raw["brand_new_field"] = [1, 2]
    records[0] = parse_record(raw, DAY)
    assert store.write_day(DAY, records, pages=2, fetched_at=LATE) == 5
    rows = store.rows(DAY, DAY)
    assert [r.key for r in rows] == sorted(r.key for r in records)
    by_key = {r.key: r for r in rows}
    for original in records:
        again = by_key[original.key]
        assert again.raw == original.raw
        assert (again.num_sessions, again.edit_accepted, again.cost_cents) == (
            original.num_sessions,
            original.edit_accepted,
            original.cost_cents,
        )
    assert by_key[records[0].key].extra == {"brand_new_field": [1, 2]}
    assert [r.actor_id for r in store.rows(DAY, DAY, actor_type="api_actor")] == ["ci-pipeline-key"]
    assert len(store.rows(DAY, DAY, actor_id="carol@example.com")) == 1
    assert store.rows(DAY + timedelta(days=1), DAY + timedelta(days=9)) == []


def test_rewriting_a_day_replaces_values_instead_of_adding(store):
    records = fixture_records()
    store.write_day(DAY, records, pages=2, fetched_at=LATE - timedelta(days=1))
    grown = [with_changes(r, num_sessions=r.num_sessions + 10) for r in records]
    store.write_day(DAY, grown, pages=2, fetched_at=LATE)
    store.write_day(DAY, grown, pages=2, fetched_at=LATE)
    rows = store.rows(DAY, DAY)
    assert len(rows) == 5 and store.count_rows() == 5
    assert sorted(r.num_sessions for r in rows) == sorted(r.num_sessions + 10 for r in records)


def test_actors_missing_from_a_refetch_are_kept(store):
    records = fixture_records()
    store.write_day(DAY, records, pages=2, fetched_at=LATE)
    store.write_day(DAY, records[:2], pages=1, fetched_at=LATE + timedelta(days=100))
    store.write_day(DAY, [], pages=1, fetched_at=LATE + timedelta(days=200))
    assert store.count_rows(DAY, DAY) == 5
    state = store.day_state(DAY)
    assert state is not None and state.rows == 0 and state.first_fetched_at == LATE


def test_sync_state_marks_complete_days_and_finality(store):
    records = fixture_records()
    day_end = datetime(2025, 9, 9, tzinfo=UTC)
    store.write_day(DAY, records, pages=2, fetched_at=day_end - timedelta(hours=5))
    state = store.day_state(DAY)
    assert state is not None and not state.final and (state.rows, state.pages) == (5, 2)
    store.write_day(DAY, records, pages=2, fetched_at=day_end + FINAL_AFTER)
    state = store.day_state(DAY)
    assert state is not None and state.final and state.fetched_at == day_end + FINAL_AFTER
    assert state.first_fetched_at == day_end - timedelta(hours=5)
    assert is_final(DAY, day_end + FINAL_AFTER) and not is_final(DAY, day_end + FINAL_AFTER - timedelta(seconds=1))
    assert store.day_state(DAY + timedelta(days=1)) is None


def test_a_failed_day_write_leaves_nothing_behind(store):
    records = fixture_records()
    broken = DailyUsage(DAY, "user_actor", None, "vscode", "api")  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.write_day(DAY, [*records[:3], broken, *records[3:]], pages=2, fetched_at=LATE)
    assert store.count_rows() == 0 and store.day_state(DAY) is None and store.known_days() == []
    store.write_day(DAY, records, pages=2, fetched_at=LATE)
    assert store.count_rows() == 5


def test_known_days_first_day_and_counts(store):
    for offset in (0, 1, 5):
        day = DAY + timedelta(days=offset)
        store.write_day(day, fixture_records(day), pages=2, fetched_at=LATE + timedelta(days=offset))
    store.write_day(DAY - timedelta(days=3), [], pages=1, fetched_at=LATE)
    assert store.known_days() == [DAY - timedelta(days=3), DAY, DAY + timedelta(days=1), DAY + timedelta(days=5)]
    assert store.first_day() == DAY - timedelta(days=3)
    assert store.count_rows() == 15 and store.count_rows(DAY + timedelta(days=1), DAY + timedelta(days=4)) == 5
    assert set(store.day_states(DAY, DAY + timedelta(days=2))) == {DAY, DAY + timedelta(days=1)}


def test_latest_summary_per_user_aggregates_terminals_and_converts_cents(store):
    first = fixture_records(DAY)
    store.write_day(DAY, first, pages=2, fetched_at=LATE)
    later = DAY + timedelta(days=2)
    alice = next(r for r in fixture_records(later) if r.actor_id == "alice@example.com")
    alice_raw = copy.deepcopy(dict(alice.raw))
    alice_raw["terminal_type"] = "tmux"
    alice_tmux = parse_record(alice_raw, later)
    store.write_day(later, [alice, alice_tmux], pages=1, fetched_at=LATE + timedelta(days=2))

    summaries = {s.email: s for s in store.latest_user_summaries()}
    assert set(summaries) == {"alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"}
    a = summaries["alice@example.com"]
    assert a.day == later and a.terminals == ("tmux", "vscode")
    assert (a.sessions, a.commits, a.pull_requests, a.lines_added, a.lines_removed) == (14, 10, 2, 2568, 632)
    assert (a.edit_accepted, a.edit_rejected) == (134, 10)
    assert a.acceptance_rate == pytest.approx(134 / 144)
    assert a.cost_usd == Decimal("3.10")
    b = summaries["bob@example.com"]
    assert b.day == DAY and b.cost_usd == Decimal("0.54") and b.acceptance_rate == pytest.approx(9 / 13)
    d = summaries["dave@example.com"]
    assert d.cost_usd == Decimal("0.11") and (d.edit_accepted, d.edit_rejected) == (2, 1)

    as_of = {s.email: s for s in store.latest_user_summaries(as_of=DAY + timedelta(days=1))}
    assert as_of["alice@example.com"].day == DAY and as_of["alice@example.com"].cost_usd == Decimal("1.55")


def test_summary_without_decisions_has_no_rate(store):
    record = parse_record({"actor": {"type": "user_actor", "email_address": "z@x"}}, DAY)
    store.write_day(DAY, [record], pages=1, fetched_at=LATE)
    (summary,) = store.latest_user_summaries()
    assert summary.acceptance_rate is None and summary.cost_usd == 0


def test_history_survives_reopen(tmp_path):
    with UsageStore.open(tmp_path) as first:
        first.write_day(DAY, fixture_records(), pages=2, fetched_at=LATE)
    with UsageStore.open(tmp_path) as second:
        assert second.count_rows() == 5 and second.day_state(DAY) is not None


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(UsageStoreError, match="schema 99"):
        UsageStore(path)


def test_closed_store_refuses_use(tmp_path):
    store = UsageStore.open(tmp_path)
    store.close()
    store.close()
    with pytest.raises(UsageStoreError, match="closed"):
        store.known_days()


def test_identity_map_upserts_latest_email(store):
    first = datetime(2026, 3, 1, tzinfo=UTC)
    assert (
        store.save_identities(
            [("user_id", "u1", "a@example.com"), ("account_uuid", "acc", "a@example.com")], seen_at=first
        )
        == 2
    )
    store.save_identities([("user_id", "u1", "b@example.com")], seen_at=first + timedelta(days=1))
    assert store.identities() == {("user_id", "u1"): "b@example.com", ("account_uuid", "acc"): "a@example.com"}
    row = (
        sqlite3.connect(store.path)
        .execute("SELECT first_seen, last_seen FROM identity_map WHERE value='u1'")
        .fetchone()
    )
    assert row[0].startswith("2026-03-01") and row[1].startswith("2026-03-02")
    assert store.save_identities([], seen_at=first) == 0
    with pytest.raises(ValueError, match="unknown identity kind"):
        store.save_identities([("email", "x", "y")], seen_at=first)


def test_schema_1_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    v1 = _SCHEMA[: _SCHEMA.index("CREATE TABLE IF NOT EXISTS identity_map")]
    conn.executescript(f"PRAGMA journal_mode=WAL;{v1}PRAGMA user_version=1;")
    conn.execute("INSERT INTO sync_state VALUES ('2026-03-01', 'x', 'x', 1, 0, 1)")
    conn.commit()
    conn.close()
    with UsageStore(path) as store:
        assert store.identities() == {} and store.first_day() == date(2026, 3, 1)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_latest_day(store):
    assert store.latest_day() is None
    store.write_day(DAY, fixture_records(), pages=2, fetched_at=LATE)
    store.write_day(DAY + timedelta(days=3), [], pages=1, fetched_at=LATE + timedelta(days=3))
    assert store.latest_day() == DAY + timedelta(days=3)
    assert store.latest_day(as_of=DAY + timedelta(days=2)) == DAY
    assert store.latest_day(as_of=DAY - timedelta(days=1)) is None


def test_actor_days_sum_terminals_without_parsing_raw(store):
    records = fixture_records()
    store.write_day(DAY, records, pages=2, fetched_at=LATE)
    days = {(d.actor_type, d.actor_id): d for d in store.actor_days(DAY, DAY)}
    for (actor_type, actor_id), got in days.items():
        mine = [r for r in records if (r.actor_type, r.actor_id) == (actor_type, actor_id)]
        assert got.sessions == sum(r.num_sessions for r in mine)
        assert (got.edit_accepted, got.edit_rejected) == (
            sum(r.edit_accepted for r in mine),
            sum(r.edit_rejected for r in mine),
        )
        assert got.cost_cents == sum((r.cost_cents for r in mine), Decimal(0))
    assert len(days) == len({(r.actor_type, r.actor_id) for r in records})
    assert store.actor_days(DAY + timedelta(days=1), DAY + timedelta(days=2)) == []


def test_data_marker_changes_when_a_day_is_written(store):
    empty = store.data_marker()
    store.write_day(DAY, fixture_records(), pages=2, fetched_at=LATE)
    first = store.data_marker()
    assert first != empty and store.data_marker() == first
    store.write_day(DAY, fixture_records(), pages=2, fetched_at=LATE + timedelta(hours=1))
    assert store.data_marker() != first
