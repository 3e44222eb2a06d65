"""Enricher: usage on records of known users, identity learning and backfill, persistence, refresh, lifecycle."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from collector.config import Config, load_text
from collector.enrich.analytics_client import parse_record
from collector.enrich.enricher import Enricher, create_enricher, usage_doc
from collector.store.usage import DB_FILENAME, UsageStore, UserDailySummary

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "audit_record.v1.json").read_text())
DAY = date(2026, 3, 2)
ALICE = UserDailySummary("Alice@Example.com", DAY, 4, 2, 1, 300, 40, 45, 5, Decimal("12.34"), ("vscode",))
BOB = UserDailySummary("bob@example.com", DAY, 1, 0, 0, 0, 0, 0, 0, Decimal(0), ("tmux",))


def rec(**user: str) -> dict:
    return {"kind": "tool_decision", "user": dict(user)} if user else {"kind": "event"}


@pytest.fixture
def enricher(tmp_path):
    e = Enricher(tmp_path)
    e.install([ALICE, BOB], {})
    return e


def test_usage_object_matches_the_schema():
    doc = usage_doc(ALICE)
    assert doc == {
        "date": "2026-03-02",
        "sessions": 4,
        "commits": 2,
        "pull_requests": 1,
        "lines_added": 300,
        "lines_removed": 40,
        "edit_acceptance_rate": 0.9,
        "cost_usd": 12.34,
    }
    jsonschema.validate(doc, SCHEMA["properties"]["usage"])
    assert "edit_acceptance_rate" not in usage_doc(BOB)  # no decisions: omitted, never null
    jsonschema.validate(usage_doc(BOB), SCHEMA["properties"]["usage"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "surprise": 1}, SCHEMA["properties"]["usage"])


def test_known_user_gets_usage_case_insensitively(enricher):
    exact, lower, unknown, anonymous = (
        rec(email="Alice@Example.com"),
        rec(email="alice@example.com"),
        rec(email="zed@example.com"),
        rec(),
    )
    for r in (exact, lower, unknown, anonymous):
        enricher.enrich(r)
    assert exact["usage"] == lower["usage"] == usage_doc(ALICE)
    assert "usage" not in unknown and "usage" not in anonymous
    assert enricher.enriched == 2


def test_backfill_from_installation_id_and_account(enricher):
    enricher.enrich(rec(email="bob@example.com", id="uid-1"))
    enricher.enrich(rec(email="alice@example.com", id="uid-2", account_uuid="acc-a"))
    later = rec(id="uid-1")
    enricher.enrich(later)
    assert later["user"] == {"id": "uid-1", "email": "bob@example.com", "identity_source": "backfill"}
    assert later["usage"] == usage_doc(BOB)
    # the account wins over a shared installation id
    shared = rec(id="uid-1", account_uuid="acc-a")
    enricher.enrich(shared)
    assert shared["user"]["email"] == "alice@example.com"
    stranger = rec(id="uid-9")
    enricher.enrich(stranger)
    assert stranger["user"] == {"id": "uid-9"} and "usage" not in stranger
    assert enricher.backfilled == 2


def test_the_latest_email_of_an_id_wins(enricher):
    enricher.enrich(rec(email="bob@example.com", id="uid-1"))
    enricher.enrich(rec(email="alice@example.com", id="uid-1"))
    r = rec(id="uid-1")
    enricher.enrich(r)
    assert r["user"]["email"] == "alice@example.com"


def test_backfill_can_be_switched_off(tmp_path):
    e = Enricher(tmp_path, identity_backfill=False)
    e.install([BOB], {})
    e.enrich(rec(email="bob@example.com", id="uid-1"))
    r = rec(id="uid-1")
    e.enrich(r)
    assert r["user"] == {"id": "uid-1"} and e._pending == {}


async def test_learned_ids_survive_a_restart(tmp_path, enricher):
    enricher.enrich(rec(email="bob@example.com", id="uid-1", account_uuid="acc-b"))
    assert await enricher.flush() == 2
    assert await enricher.flush() == 0
    await enricher.stop()
    with UsageStore.open(tmp_path) as store:
        assert store.identities() == {
            ("user_id", "uid-1"): "bob@example.com",
            ("account_uuid", "acc-b"): "bob@example.com",
        }
    fresh = Enricher(tmp_path)
    fresh.load()
    r = rec(account_uuid="acc-b")
    fresh.enrich(r)
    assert r["user"]["email"] == "bob@example.com" and r["user"]["identity_source"] == "backfill"
    await fresh.stop()


def test_mappings_learned_here_win_over_stored_ones(tmp_path, enricher):
    enricher.enrich(rec(email="alice@example.com", id="uid-1"))
    enricher.install([ALICE], {("user_id", "uid-1"): "old@example.com", ("user_id", "uid-2"): "bob@example.com"})
    a, b = rec(id="uid-1"), rec(id="uid-2")
    enricher.enrich(a)
    enricher.enrich(b)
    assert (a["user"]["email"], b["user"]["email"]) == ("alice@example.com", "bob@example.com")
    assert "usage" not in b  # bob's summary is gone after the reload


async def test_background_task_flushes_and_refreshes(tmp_path):
    e = Enricher(tmp_path, refresh_interval=3600, flush_interval=0.05)
    await e.start()
    try:
        assert e.loads == 1
        e.enrich(rec(email="bob@example.com", id="uid-1"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with UsageStore.open(tmp_path) as store:
                if store.identities():
                    break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("learned mapping was not flushed")
        with UsageStore.open(tmp_path) as store:
            row = parse_record(
                {
                    "actor": {"type": "user_actor", "email_address": "bob@example.com"},
                    "core_metrics": {"num_sessions": 3},
                },
                DAY,
            )
            store.write_day(DAY, [row], pages=1, fetched_at=datetime(2030, 1, 1, tzinfo=UTC))
        e.request_refresh()
        deadline = time.monotonic() + 10
        while e.loads < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        r = rec(email="bob@example.com")
        e.enrich(r)
        assert r["usage"]["sessions"] == 3 and r["usage"]["date"] == "2026-03-02"
    finally:
        await e.stop()


async def test_unreadable_history_does_not_stop_ingestion(tmp_path, caplog):
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    e = Enricher(tmp_path, refresh_interval=3600)
    await e.start()
    try:
        r = rec(email="bob@example.com", id="uid-1")
        e.enrich(r)
        assert "usage" not in r
        assert "cannot read" in caplog.text
    finally:
        await e.stop()


def test_enrichment_follows_the_analytics_switch_unless_set():
    assert create_enricher(Config()) is None
    on = load_text("enrichment:\n  analytics_api:\n    enabled: true\n    admin_api_key: sk-ant-admin01-x\n")
    assert isinstance(create_enricher(on), Enricher)
    off = load_text(
        "enrichment:\n  usage: {enabled: false}\n"
        "  analytics_api:\n    enabled: true\n    admin_api_key: sk-ant-admin01-x\n"
    )
    assert create_enricher(off) is None
    forced = load_text("enrichment:\n  usage: {enabled: true, refresh_interval: 10s, identity_backfill: false}\n")
    made = create_enricher(forced)
    assert made is not None and made.refresh_interval == 10.0 and made.identity_backfill is False
