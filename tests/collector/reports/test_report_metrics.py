"""The analytics gauges: figures of the latest synced day, the anomaly signal, registration, exposition."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.reports.config import ReportMetricsConfig, ReportsConfig
from collector.reports.metrics import AnalyticsGauges, compute_snapshot, families, unregister
from collector.store.usage import ActorDay, UsageStore
from collector.telemetry.server import scrape_registry
from tests.collector.reports.report_support import SONNET, row

LATEST = date(2026, 3, 9)
NOISE = [10, 12, 9, 11, 10, 13, 8]  # rejected of 100 on the 7 days before LATEST


def as_actor_days(rows: list) -> list[ActorDay]:
    return [
        ActorDay(
            r.day,
            r.actor_type,
            r.actor_id,
            r.num_sessions,
            r.lines_added,
            r.lines_removed,
            r.commits,
            r.pull_requests,
            r.edit_accepted,
            r.edit_rejected,
            r.cost_cents,
        )
        for r in rows
    ]


def history(latest_rejected: int) -> list:
    rows = []
    for i, rejected in enumerate([*NOISE, latest_rejected]):
        day = (LATEST - timedelta(days=7 - i)).isoformat()
        rows.append(
            row(
                day,
                "a@example.com",
                sessions=12,
                commits=2,
                prs=1,
                added=1500,
                tools={"edit_tool": (60 - rejected // 2, rejected // 2)},
                models=[(SONNET, 10, 10, 100)],
            )
        )
        rows.append(
            row(
                day,
                "b@example.com",
                sessions=1,
                tools={"edit_tool": (40 - (rejected - rejected // 2), rejected - rejected // 2)},
            )
        )
        rows.append(row(day, "ci", api_key=True, commits=1, models=[(SONNET, 10, 10, 50)]))
    return rows


def samples(metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}


def test_spike_on_the_latest_day_raises_the_anomaly_gauge():
    cfg = ReportsConfig()
    snap = compute_snapshot(as_actor_days(history(40)), LATEST, cfg, fetched_at=1234.5)
    got = samples(families(snap, cfg))
    assert got[("claude_code_tool_rejection_rate_anomaly", (("scope", "org"),))] == 1
    assert got[("claude_code_tool_rejection_rate", (("scope", "org"), ("window", "1d")))] == 0.40
    # the 7 days before: 73 rejected of 700
    assert got[("claude_code_tool_rejection_rate", (("scope", "org"), ("window", "7d")))] == pytest.approx(73 / 700)
    assert got[("claude_code_tool_rejection_rate_threshold", (("scope", "org"),))] == pytest.approx(0.73 / 7 + 0.05)
    # latest day: a costs $1.00 and commits 2 (1 PR, 12 sessions), b 1 session, ci $0.50 and 1 commit
    assert got[("claude_code_analytics_cost_usd", ())] == 1.5
    assert got[("claude_code_analytics_commits", ())] == 3
    assert got[("claude_code_analytics_pull_requests", ())] == 1
    assert got[("claude_code_analytics_sessions", ())] == 13
    # tiers over the 7 days ending on LATEST: a has 84 sessions, 10,500 lines, acceptance well above 80 %
    assert got[("claude_code_analytics_users", (("tier", "autonomous"),))] == 1
    assert got[("claude_code_analytics_users", (("tier", "conversational"),))] == 1  # b: 7 sessions/week
    assert got[("claude_code_analytics_users", (("tier", "minimal"),))] == 0
    assert got[("claude_code_analytics_report_timestamp_seconds", ())] == 1234.5
    assert not any("user" in dict(labels) for _, labels in got)  # no per-user labels by default


def test_normal_latest_day_keeps_the_gauge_at_zero():
    cfg = ReportsConfig()
    got = samples(families(compute_snapshot(as_actor_days(history(14)), LATEST, cfg), cfg))
    assert got[("claude_code_tool_rejection_rate_anomaly", (("scope", "org"),))] == 0
    assert got[("claude_code_tool_rejection_rate", (("scope", "org"), ("window", "1d")))] == 0.14


def test_no_history_exposes_only_a_quiet_anomaly_gauge():
    cfg = ReportsConfig()
    got = samples(families(compute_snapshot([], None, cfg), cfg))
    assert got == {("claude_code_tool_rejection_rate_anomaly", (("scope", "org"),)): 0}


def test_per_user_labels_when_configured():
    cfg = ReportsConfig(metrics=ReportMetricsConfig(per_user=True))
    got = samples(families(compute_snapshot(as_actor_days(history(40)), LATEST, cfg), cfg))
    assert got[("claude_code_tool_rejection_rate_anomaly", (("scope", "user"), ("user", "a@example.com")))] == 1
    assert (
        got[("claude_code_tool_rejection_rate", (("scope", "user"), ("user", "b@example.com"), ("window", "1d")))]
        == 0.5
    )


@pytest.fixture
def store(tmp_path):
    with UsageStore.open(tmp_path) as opened:
        yield opened


def fill(store: UsageStore, rows: list) -> None:
    for day in sorted({r.day for r in rows}):
        store.write_day(day, [r for r in rows if r.day == day], pages=1, fetched_at=datetime(2030, 1, 1, tzinfo=UTC))


def test_registered_collector_is_scraped_alone_and_merged(store, tmp_path, monkeypatch):
    fill(store, history(40))
    registry = CollectorRegistry(auto_describe=True)
    gauges = AnalyticsGauges(store, ReportsConfig())
    gauges.register(registry)
    assert registry._ccbridge_extra == [gauges]  # type: ignore[attr-defined]
    text = generate_latest(registry).decode()
    assert 'claude_code_tool_rejection_rate_anomaly{scope="org"} 0.0' in text  # nothing computed yet
    snap = gauges.refresh_now()
    assert snap.day == LATEST and snap.fetched_at == datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    parsed = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert parsed["claude_code_tool_rejection_rate_anomaly"].samples[0].value == 1
    assert parsed["claude_code_analytics_users"].type == "gauge"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mp"))
    (tmp_path / "mp").mkdir()
    merged = generate_latest(scrape_registry(registry)).decode()
    assert 'claude_code_tool_rejection_rate_anomaly{scope="org"} 1.0' in merged
    unregister(gauges, registry)
    assert registry._ccbridge_extra == []  # type: ignore[attr-defined]
    assert "claude_code_" not in generate_latest(registry).decode()


async def test_background_refresh_on_request(store):
    gauges = AnalyticsGauges(store, ReportsConfig(), refresh_interval=3600)
    await gauges.start()
    try:
        assert gauges.snapshot.day is None and gauges.refreshes == 1
        await asyncio.to_thread(fill, store, history(40))
        gauges.request_refresh()
        deadline = time.monotonic() + 10
        while gauges.snapshot.day is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert gauges.snapshot.day == LATEST and gauges.snapshot.org is not None and gauges.snapshot.org.anomalous
    finally:
        await gauges.stop()
