"""``ccbridge demo`` against a running bridge: its figures agree with each other, and the README's examples return
rows on what it sent."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections import defaultdict
from pathlib import Path

import pytest

from tests.collector.cli.cli_support import ccbridge

README = Path(__file__).resolve().parents[3] / "README.md"


async def run_demo(bridge, *args: str):
    r = await asyncio.to_thread(ccbridge, "demo", "--endpoint", bridge.http_url, *args)
    assert r.code == 0, r.err
    return r


async def test_cost_and_tokens_from_metrics_and_from_api_requests_describe_the_same_sessions(bridge):
    await run_demo(bridge, "--sessions", "3", "--prompts", "3")
    by_event: dict[str, float] = defaultdict(float)
    tokens_by_event: dict[str, float] = defaultdict(float)
    for rec in bridge.records(kinds=("api_request",)):
        by_event[rec["session"]["id"]] += rec["cost_usd"]
        tokens_by_event[rec["session"]["id"]] += rec["tokens"]["input"]
    by_metric: dict[str, float] = defaultdict(float)
    tokens_by_metric: dict[str, float] = defaultdict(float)
    for point in bridge.metric_points():
        session = (point.get("attributes") or {}).get("session.id")
        if point.get("name") == "claude_code.cost.usage":
            by_metric[session] += point["value"]
        if point.get("name") == "claude_code.token.usage" and point["attributes"].get("type") == "input":
            tokens_by_metric[session] += point["value"]
    assert len(by_event) == 3
    assert set(by_metric) == set(by_event)
    for session, cost in by_event.items():
        assert by_metric[session] == pytest.approx(cost, abs=1e-6), session
        assert tokens_by_metric[session] == tokens_by_event[session]


def readme_examples() -> list[list[str]]:
    """The README's local `audit export` / `approvals export` command lines (not the Splunk or redirect ones)."""
    out = []
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\.venv/bin/ccbridge ((?:audit|approvals) export[^#>\\]*)", line)
        if m:
            out.append(shlex.split(m.group(1)))
    return out


def test_the_readme_has_examples():
    assert len(readme_examples()) >= 5


async def test_the_readmes_examples_return_rows_after_the_demo(bridge):
    await run_demo(bridge)
    for argv in readme_examples():
        r = await asyncio.to_thread(ccbridge, *argv, "--data-dir", str(bridge.data_dir))
        assert r.code == 0, (argv, r.err)
        data_lines = [line for line in r.out.splitlines() if line.strip()]
        if "csv" in argv or argv[0] == "approvals":
            data_lines = data_lines[1:] if "jsonl" not in argv else data_lines
        assert data_lines, f"README example returns nothing after the demo: {' '.join(argv)}\n{r.err}"


async def test_report_works_from_telemetry_alone_after_the_demo(bridge):
    import json

    await run_demo(bridge, "--sessions", "2", "--prompts", "2")
    r = await asyncio.to_thread(ccbridge, "report", "--data-dir", str(bridge.data_dir), "--format", "json")
    assert r.code == 0, r.err  # no Analytics API history, no `analytics sync` needed
    doc = json.loads(r.out)
    records = bridge.records()
    cost = sum(rec["cost_usd"] for rec in records if rec["kind"] == "api_request")
    assert doc["org"]["developers"] == 2
    assert doc["org"]["sessions"] == 2
    assert doc["org"]["cost_usd"] == pytest.approx(cost, abs=0.01)
    assert doc["org"]["tool_decisions"]
    assert doc["sources"]["analytics_rows"] == 0 and doc["sources"]["telemetry_rows"] >= 2
    assert doc["sources"]["days_from_telemetry"] and doc["sources"]["days_from_analytics_api"] == []
    assert {u["source"] for u in doc["users"]} == {"telemetry"}
    assert {u["email"] for u in doc["users"]} == {"demo.user1@example.com", "demo.user2@example.com"}
    r = await asyncio.to_thread(ccbridge, "report", "--data-dir", str(bridge.data_dir))
    assert r.code == 0 and "Telemetry only: " in r.out and "Analytics API: none" in r.out
