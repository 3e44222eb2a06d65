"""Usage enrichment and identity backfill through the real receivers, with recorded Claude Code bodies.

A bridge with ``enrichment.analytics_api`` pointing at the local Analytics API fake (where ``jdoe@example.com`` is a
user) syncs at start. Replaying the details run (whose records carry ``enduser.id=jdoe@example.com``) stores records
with ``usage``; replaying another run rewritten to the same installation id (``user.id``) but without any e-mail
stores records whose ``user.email`` was backfilled. The analytics gauges appear on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.store.usage import DB_FILENAME
from tests.contract.make_golden import FIXTURES, Replayer, recorded_requests, stdout_json
from tests.fakes.analytics_api import FAKE_ADMIN_KEY, AnalyticsApiFake

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "audit_record.v1.json").read_text())
JDOE = "jdoe@example.com"
DETAILS_RUN = "v2.1.332-http-json-details-traces"
DETAILS_UID = "5448c1186c797c02ca15e5490625490054db05759b7316e897d0504e3f296665"
OTHER_RUN = "v2.1.197-http-json-allow"
OTHER_UID = "d3cb88c51592b28c8849abe988b115bc9320845cc5c2ac515ffac19e03e151c6"


def expected_usage(data_dir: Path, email: str) -> dict[str, Any]:
    """``usage`` computed by hand from the raw rows the sync stored for the user's latest day."""
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        day = conn.execute("SELECT MAX(date) FROM usage_daily WHERE actor_id = ?", (email,)).fetchone()[0]
        raws = [
            json.loads(r)
            for (r,) in conn.execute("SELECT raw FROM usage_daily WHERE actor_id = ? AND date = ?", (email, day))
        ]
    finally:
        conn.close()
    accepted = sum(t["accepted"] for r in raws for t in r["tool_actions"].values())
    rejected = sum(t["rejected"] for r in raws for t in r["tool_actions"].values())
    return {
        "date": day,
        "sessions": sum(r["core_metrics"]["num_sessions"] for r in raws),
        "commits": sum(r["core_metrics"]["commits_by_claude_code"] for r in raws),
        "pull_requests": sum(r["core_metrics"]["pull_requests_by_claude_code"] for r in raws),
        "lines_added": sum(r["core_metrics"]["lines_of_code"]["added"] for r in raws),
        "lines_removed": sum(r["core_metrics"]["lines_of_code"]["removed"] for r in raws),
        "edit_acceptance_rate": round(accepted / (accepted + rejected), 4),
        "cost_usd": sum(m["estimated_cost"]["amount"] for r in raws for m in r["model_breakdown"]) / 100,
    }


def latest_day_totals(data_dir: Path) -> dict[str, float]:
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        day = conn.execute("SELECT MAX(date) FROM usage_daily").fetchone()[0]
        raws = [json.loads(r) for (r,) in conn.execute("SELECT raw FROM usage_daily WHERE date = ?", (day,))]
    finally:
        conn.close()
    accepted = sum(t["accepted"] for r in raws for t in r["tool_actions"].values())
    rejected = sum(t["rejected"] for r in raws for t in r["tool_actions"].values())
    return {
        "cost_usd": sum(m["estimated_cost"]["amount"] for r in raws for m in r["model_breakdown"]) / 100,
        "commits": sum(r["core_metrics"]["commits_by_claude_code"] for r in raws),
        "sessions": sum(r["core_metrics"]["num_sessions"] for r in raws),
        "rejection_rate": rejected / (accepted + rejected),
    }


async def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_usage_and_backfill_through_the_receivers(bridge_factory):
    async with AnalyticsApiFake(users=5, days=10, emails=(JDOE,), api_keys=1) as fake:
        bridge = await bridge_factory(
            overrides={
                "enrichment": {
                    "analytics_api": {"enabled": True, "base_url": fake.url, "admin_api_key": FAKE_ADMIN_KEY}
                }
            }
        )
        enricher = bridge.service.enricher
        assert enricher is not None  # on by default whenever the Analytics API sync is
        await wait_for(lambda: enricher.loads >= 2, "the enricher to reload after the first sync")

        details = recorded_requests(FIXTURES / DETAILS_RUN)
        async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
            for req in details:
                assert (await rp.send(req)).status == 200
        other = recorded_requests(FIXTURES / OTHER_RUN)
        async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
            for req in other:
                body = req.body.replace(OTHER_UID.encode(), DETAILS_UID.encode())
                assert body != req.body and b"jdoe" not in body
                result = await rp.post(req.path, body, content_type=req.content_type or "", chunked=req.chunked)
                assert result.status == 200

        usage = expected_usage(bridge.data_dir, JDOE)
        records = [r for r in bridge.records() if r["kind"] != "chain_head"]
        first_session = stdout_json(FIXTURES / DETAILS_RUN)["session_id"]
        second_session = stdout_json(FIXTURES / OTHER_RUN)["session_id"]
        first = [r for r in records if r["session"]["id"] == first_session]
        second = [r for r in records if r["session"]["id"] == second_session]
        assert len(first) == 19 + 2 and len(second) == 15  # the details run also derives 2 file_change records
        assert len(records) == len(first) + len(second)

        validator = jsonschema.Draft202012Validator(SCHEMA)
        for r in records:
            validator.validate(r)
            assert r["usage"] == usage
            assert r["user"]["email"] == JDOE and r["user"]["id"] == DETAILS_UID
        assert {r["user"]["identity_source"] for r in first} == {"enduser.id"}
        assert {r["user"]["identity_source"] for r in second} == {"backfill"}
        assert all("enduser_id" not in r["user"] for r in second)
        assert enricher.backfilled == len(second)

        metrics: dict[str, Any] = {}

        async def gauges_ready() -> bool:
            metrics.update(await asyncio.to_thread(scrape, bridge.telemetry_url))
            return "claude_code_analytics_cost_usd" in metrics

        deadline = time.monotonic() + 20
        while not await gauges_ready():
            assert time.monotonic() < deadline, "analytics gauges never appeared on /metrics"
            await asyncio.sleep(0.05)
        totals = latest_day_totals(bridge.data_dir)
        anomaly = metrics["claude_code_tool_rejection_rate_anomaly"].samples
        assert [(s.labels, s.value in (0.0, 1.0)) for s in anomaly] == [({"scope": "org"}, True)]
        rate = {s.labels["window"]: s.value for s in metrics["claude_code_tool_rejection_rate"].samples}
        assert rate["1d"] == pytest.approx(totals["rejection_rate"])
        assert metrics["claude_code_analytics_cost_usd"].samples[0].value == pytest.approx(totals["cost_usd"])
        assert metrics["claude_code_analytics_commits"].samples[0].value == totals["commits"]
        assert metrics["claude_code_analytics_sessions"].samples[0].value == totals["sessions"]
        tiers = {s.labels["tier"]: s.value for s in metrics["claude_code_analytics_users"].samples}
        assert set(tiers) == {"autonomous", "conversational", "minimal"} and sum(tiers.values()) == 5
        assert metrics["claude_code_analytics_report_timestamp_seconds"].samples[0].value > time.time() - 120
        assert "claude_code_analytics_pull_requests" in metrics
        for family in metrics.values():
            assert all("user" not in s.labels for s in family.samples)  # no per-user labels by default

        await bridge.stop()
    conn = sqlite3.connect(bridge.data_dir / DB_FILENAME)
    try:
        stored = conn.execute("SELECT kind, value, email FROM identity_map").fetchall()
    finally:
        conn.close()
    assert stored == [("user_id", DETAILS_UID, JDOE)]  # learned mappings are saved at stop
