"""Completeness: telemetry from the audit store against the Analytics API, per user and day, gaps by hand."""

from __future__ import annotations

from datetime import date

import pytest

from collector.reports.completeness import build_completeness_report, is_empty
from collector.reports.compute import Period
from collector.reports.run import build_completeness
from collector.reports.sources import DayFigures
from tests.collector.reports.report_support import SONNET, at, point, record, row, write_analytics, write_audit

D1, D2, D3 = "2026-03-02", "2026-03-03", "2026-03-04"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
LINES, COMMITS, PRS = "claude_code.lines_of_code.count", "claude_code.commit.count", "claude_code.pull_request.count"


def api_request(day: str, minute: int, cost: float, tokens: dict[str, int], **who: str) -> dict:
    return record("api_request", at(day, 12, minute), cost_usd=cost, tokens=tokens, model=SONNET, **who)


@pytest.fixture
def data_dir(tmp_path):
    write_analytics(
        tmp_path,
        [
            row(D1, ALICE, sessions=2, commits=3, prs=1, added=100, removed=20, models=[(SONNET, 1000, 500, 120)]),
            row(D2, ALICE, sessions=1, added=10, models=[(SONNET, 100, 0, 10)]),
            row(D1, BOB, sessions=1, commits=1, added=50, removed=5, models=[(SONNET, 2000, 0, 300)]),
        ],
        identities=[("user_id", "uid-bob", BOB)],
    )
    alice = {"email": ALICE, "uid": "uid-alice"}
    records = [
        # alice D1: cost 0.70 + 0.50 = 1.20, tokens 600+300 + 400+200 = 1500, sessions s1 and s2
        api_request(D1, 1, 0.70, {"input": 600, "output": 300}, session="s1", **alice),
        api_request(D1, 2, 0.50, {"input": 400, "output": 200}, session="s2", **alice),
        record("user_prompt", at(D1, 11), session="s1", **alice),
        # alice D2: 0.10 and 100 tokens, session s3 (its first record is on D2)
        api_request(D2, 1, 0.10, {"input": 100}, session="s3", **alice),
        # bob D1 without an e-mail, known through identity_map: cost 1.50 (API says 3.00), 2000 tokens
        api_request(D1, 3, 1.50, {"input": 2000}, uid="uid-bob", session="s4"),
        # nobody knows uid-zed: unattributed
        api_request(D1, 4, 0.25, {"input": 10}, uid="uid-zed", session="s5"),
        # carol only in the telemetry
        api_request(D2, 5, 0.30, {"input": 50}, email=CAROL, session="s6"),
        # D3 has no completed Analytics API fetch: not compared
        api_request(D3, 1, 9.99, {"input": 1}, session="s7", **alice),
    ]
    alice_attrs = {"user.email": ALICE, "user.id": "uid-alice", "session.id": "s1"}
    points = [
        point(LINES, at(D1, 12), 60.0, attrs={**alice_attrs, "type": "added"}),
        point(LINES, at(D1, 13), 40.0, attrs={**alice_attrs, "type": "added"}),
        point(LINES, at(D1, 13), 20.0, attrs={**alice_attrs, "type": "removed"}),
        point(COMMITS, at(D1, 13), 2.0, attrs=alice_attrs),  # the API says 3
        point(PRS, at(D1, 13), 1.0, attrs=alice_attrs),
        # alice D2 cumulative: 4 then 10 since the same start -> 10 lines
        point(
            LINES, at(D2, 9), 4.0, attrs={**alice_attrs, "type": "added"}, temporality="cumulative", start_ns=at(D2, 8)
        ),
        point(
            LINES,
            at(D2, 10),
            10.0,
            attrs={**alice_attrs, "type": "added"},
            temporality="cumulative",
            start_ns=at(D2, 8),
        ),
        # bob's points carry only user.id
        point(LINES, at(D1, 14), 50.0, attrs={"user.id": "uid-bob", "type": "added"}),
        point(LINES, at(D1, 14), 5.0, attrs={"user.id": "uid-bob", "type": "removed"}),
        point(COMMITS, at(D1, 14), 1.0, attrs={"user.id": "uid-bob"}),
    ]
    write_audit(tmp_path, records, points, shard=0)
    # the same commit point and one record also reached a second worker: counted once
    write_audit(tmp_path, records[:1], [points[3]], shard=1)
    return tmp_path


def test_gaps_and_totals_by_hand(data_dir):
    report = build_completeness(data_dir, Period(date.fromisoformat(D1), date.fromisoformat(D3)))
    assert report["compared_days"] == [D1, D2] and report["not_synced_days"] == [D3]
    assert report["users"] == 3
    gaps = [
        (g["email"], g["date"], g["metric"], g["telemetry"], g["analytics_api"], g["gap"], g["gap_pct"])
        for g in report["gaps"]
    ]
    assert gaps == [
        (CAROL, D2, "tokens", 50, 0, -50, None),  # telemetry only: no percentage, sorts as 100 %
        (CAROL, D2, "sessions", 1, 0, -1, None),
        (CAROL, D2, "cost_usd", 0.3, 0.0, -0.3, None),
        (BOB, D1, "cost_usd", 1.5, 3.0, 1.5, 50.0),
        (ALICE, D1, "commits", 2, 3, 1, 33.33),
    ]
    summary = report["summary"]
    assert summary["cost_usd"] == {
        "telemetry": pytest.approx(1.20 + 0.10 + 1.50 + 0.30),
        "analytics_api": pytest.approx(1.20 + 0.10 + 3.00),
        "gap": pytest.approx(1.20),
        "gap_pct": pytest.approx(round(1.20 / 4.30 * 100, 2)),
    }
    assert summary["sessions"] == {"telemetry": 5, "analytics_api": 4, "gap": -1, "gap_pct": -25.0}
    assert summary["commits"] == {"telemetry": 3, "analytics_api": 4, "gap": 1, "gap_pct": 25.0}
    assert summary["lines_added"] == {"telemetry": 160, "analytics_api": 160, "gap": 0, "gap_pct": 0.0}
    assert summary["tokens"]["telemetry"] == 1500 + 100 + 2000 + 50
    assert report["unattributed_telemetry"]["cost_usd"] == 0.25
    assert report["unattributed_telemetry"]["sessions"] == 1
    assert all(g["final"] for g in report["gaps"])


def test_nothing_to_compare_without_synced_days(tmp_path):
    write_audit(tmp_path, [api_request(D1, 1, 1.0, {"input": 1}, email=ALICE, session="s1")], [])
    report = build_completeness(tmp_path, Period(date.fromisoformat(D1), date.fromisoformat(D1)))
    assert is_empty(report) and report["not_synced_days"] == [D1]


def test_pure_report_sorts_by_relative_then_absolute_gap():
    day = date(2026, 3, 2)
    report = build_completeness_report(
        Period(day, day),
        telemetry={("a", day): DayFigures(commits=90, sessions=1), ("b", day): DayFigures(commits=1)},
        analytics={("a", day): DayFigures(commits=100, sessions=2), ("b", day): DayFigures(commits=2)},
        synced_days={day},
    )
    assert [(g["email"], g["metric"], g["gap_pct"]) for g in report["gaps"]] == [
        ("a", "sessions", 50.0),
        ("b", "commits", 50.0),
        ("a", "commits", 10.0),
    ]
    exact = build_completeness_report(
        Period(day, day),
        telemetry={("a", day): DayFigures(cost_usd=1.004)},
        analytics={("a", day): DayFigures(cost_usd=1.00)},
        synced_days={day},
    )
    assert exact["gaps"] == []  # within a cent: the API rounds to whole cents
