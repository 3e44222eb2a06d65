"""Usage report figures against numbers computed by hand from small explicit fixture days."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from collector.reports.compute import DecisionTallies, Period, build_usage_report, classify_tier
from collector.reports.config import AutonomousTier, ConversationalTier, ReportsConfig, TiersConfig
from tests.collector.reports.report_support import HAIKU, OPUS, SONNET, row

WEEK = Period(date(2026, 3, 2), date(2026, 3, 8))


ROWS = [
    # outside the period: must not count (it may only serve as anomaly baseline)
    row("2026-03-01", "alice@example.com", sessions=50, commits=50, models=[(SONNET, 1, 1, 9999)]),
    row(
        "2026-03-02",
        "alice@example.com",
        sessions=6,
        commits=4,
        prs=1,
        added=1000,
        removed=200,
        tools={"edit_tool": (90, 10), "write_tool": (30, 0)},
        models=[(SONNET, 100_000, 20_000, 600)],
    ),
    row(
        "2026-03-03",
        "alice@example.com",
        sessions=6,
        commits=2,
        prs=1,
        added=500,
        removed=100,
        tools={"edit_tool": (40, 10)},
        models=[(OPUS, 10_000, 10_000, 300)],
    ),
    row("2026-03-03", "alice@example.com", sessions=1, terminal="tmux", models=[(SONNET, 1_000, 0, 5)]),
    row(
        "2026-03-04",
        "bob@example.com",
        sessions=5,
        commits=1,
        added=100,
        removed=50,
        tools={"edit_tool": (5, 5)},
        models=[(SONNET, 5_000, 1_000, 100)],
    ),
    row("2026-03-05", "carol@example.com", sessions=1, models=[(HAIKU, 1_000, 1_000, 10)]),
    row(
        "2026-03-06",
        "ci-deploy",
        api_key=True,
        sessions=2,
        commits=3,
        prs=2,
        added=300,
        models=[(SONNET, 50_000, 0, 150)],
    ),
]


def decisions() -> DecisionTallies:
    tallies = DecisionTallies()
    for _ in range(3):
        tallies.add("alice@example.com", "Bash", "accept")
    tallies.add("alice@example.com", "Bash", "reject")
    tallies.add(None, "Write", "reject")
    tallies.add("alice@example.com", "Bash", "ask")  # not a decision: ignored
    return tallies


@pytest.fixture
def report():
    return build_usage_report(WEEK, ROWS, decisions(), ReportsConfig())


def test_org_figures_match_hand_computation(report):
    org = report["org"]
    assert report["period"] == {"since": "2026-03-02", "until": "2026-03-08", "days": 7, "weeks": 1.0}
    assert org["developers"] == 3 and org["api_keys"] == 1
    assert org["sessions"] == 6 + 6 + 1 + 5 + 1 + 2 == 21
    assert org["commits"] == 4 + 2 + 1 + 3 == 10
    assert org["pull_requests"] == 1 + 1 + 2 == 4
    assert org["lines_added"] == 1000 + 500 + 100 + 300 == 1900
    assert org["lines_removed"] == 200 + 100 + 50 == 350
    assert org["cost_usd"] == pytest.approx((600 + 300 + 5 + 100 + 10 + 150) / 100) == 11.65
    assert org["cost_per_commit_usd"] == pytest.approx(11.65 / 10)
    assert org["cost_per_pull_request_usd"] == pytest.approx(11.65 / 4)
    # per developer: people only (alice 6 + bob 1 + carol 0 commits, alice 2 PRs), 3 developers, 1 week
    assert org["commits_per_developer_per_week"] == pytest.approx(round(7 / 3, 2))
    assert org["pull_requests_per_developer_per_week"] == pytest.approx(round(2 / 3, 2))
    assert org["cost_per_developer_usd"] == pytest.approx((905 + 100 + 10) / 100 / 3, abs=1e-4)
    # edit tools: accepted 90+30+40+5 = 165, rejected 10+0+10+5 = 25
    assert (org["edit_accepted"], org["edit_rejected"]) == (165, 25)
    assert org["acceptance_rate"] == pytest.approx(165 / 190, abs=1e-4)
    assert org["rejection_rate"] == pytest.approx(25 / 190, abs=1e-4)
    assert org["edit_tools"]["edit_tool"] == {
        "accepted": 135,
        "rejected": 25,
        "acceptance_rate": pytest.approx(135 / 160, abs=1e-4),
        "rejection_rate": pytest.approx(25 / 160, abs=1e-4),
    }
    assert "multi_edit_tool" not in org["edit_tools"]  # no decisions: not listed


def test_model_mix_shares_match_hand_computation(report):
    mix = {m["model"]: m for m in report["org"]["model_mix"]}
    assert [m["model"] for m in report["org"]["model_mix"]] == [SONNET, OPUS, HAIKU]  # most expensive first
    total_cents, total_tokens = 1165, 120_000 + 1_000 + 6_000 + 50_000 + 20_000 + 2_000
    assert mix[SONNET]["cost_usd"] == pytest.approx(8.55)
    assert mix[SONNET]["tokens"] == 177_000
    assert mix[SONNET]["cost_share"] == pytest.approx(855 / total_cents, abs=1e-4)
    assert mix[SONNET]["token_share"] == pytest.approx(177_000 / total_tokens, abs=1e-4)
    assert mix[OPUS]["cost_share"] == pytest.approx(300 / total_cents, abs=1e-4)
    assert mix[OPUS]["token_share"] == pytest.approx(20_000 / total_tokens, abs=1e-4)
    assert mix[HAIKU]["cost_share"] == pytest.approx(10 / total_cents, abs=1e-4)
    assert sum(m["cost_share"] for m in mix.values()) == pytest.approx(1.0, abs=1e-3)


def test_users_and_tiers_match_hand_computation(report):
    users = {u["email"]: u for u in report["users"]}
    assert [u["email"] for u in report["users"]] == ["alice@example.com", "bob@example.com", "carol@example.com"]
    alice = users["alice@example.com"]
    assert (alice["sessions"], alice["commits"], alice["pull_requests"]) == (13, 6, 2)
    assert (alice["lines_added"], alice["lines_removed"], alice["active_days"]) == (1500, 300, 2)
    assert alice["cost_usd"] == pytest.approx(9.05)
    assert alice["cost_per_commit_usd"] == pytest.approx(9.05 / 6, abs=1e-4)
    assert alice["cost_per_pull_request_usd"] == pytest.approx(9.05 / 2)
    assert alice["acceptance_rate"] == pytest.approx(160 / 180, abs=1e-4)
    assert alice["commits_per_week"] == 6.0
    assert alice["tier"] == "autonomous"  # 13 sessions >= 10, 1500 lines >= 1000, 0.889 >= 0.8
    bob = users["bob@example.com"]
    assert bob["acceptance_rate"] == 0.5 and bob["tier"] == "conversational"  # 5 sessions, low acceptance
    carol = users["carol@example.com"]
    assert carol["acceptance_rate"] is None and carol["cost_per_commit_usd"] is None
    assert carol["tier"] == "minimal"
    assert report["tiers"] == {"autonomous": 1, "conversational": 1, "minimal": 1}
    assert report["api_keys"][0]["name"] == "ci-deploy" and report["api_keys"][0]["commits"] == 3


def test_tool_decisions_from_telemetry(report):
    bash = report["org"]["tool_decisions"]["Bash"]
    assert (bash["accepted"], bash["rejected"]) == (3, 1)
    assert bash["rejection_rate"] == 0.25 and bash["acceptance_rate"] == 0.75
    assert report["org"]["tool_decisions"]["Write"]["rejected"] == 1  # unattributed still counts for the org
    users = {u["email"]: u for u in report["users"]}
    assert users["alice@example.com"]["tool_decisions"] == {"Bash": bash}
    assert users["bob@example.com"]["tool_decisions"] == {}
    assert report["sources"]["tool_decision_records"] == 5


def test_two_week_period_halves_weekly_figures():
    period = Period(date(2026, 3, 2), date(2026, 3, 15))
    report = build_usage_report(period, ROWS, DecisionTallies(), ReportsConfig())
    assert report["period"]["weeks"] == 2.0
    assert report["org"]["commits_per_developer_per_week"] == pytest.approx(round(7 / 3 / 2, 2))
    users = {u["email"]: u for u in report["users"]}
    # alice: 6.5 sessions/week < 10 -> no longer autonomous, but >= 5 -> conversational; bob 2.5/week -> minimal
    assert users["alice@example.com"]["sessions_per_week"] == 6.5
    assert users["alice@example.com"]["tier"] == "conversational"
    assert users["bob@example.com"]["tier"] == "minimal"


def test_empty_period():
    report = build_usage_report(Period(date(2025, 1, 1), date(2025, 1, 7)), ROWS, DecisionTallies(), ReportsConfig())
    assert report["users"] == [] and report["org"]["cost_usd"] == 0.0
    assert report["org"]["cost_per_commit_usd"] is None
    assert report["org"]["commits_per_developer_per_week"] is None
    assert report["sources"]["analytics_rows"] == 0


@pytest.mark.parametrize(
    ("sessions", "lines", "acceptance", "expected"),
    [
        (10, 1000, 0.8, "autonomous"),  # every threshold met exactly
        (9.99, 1000, 0.8, "conversational"),
        (10, 999, 0.8, "conversational"),
        (10, 1000, 0.79, "conversational"),
        (10, 1000, None, "conversational"),  # no decisions: cannot be autonomous
        (5, 0, None, "conversational"),
        (4.99, 5000, 0.99, "minimal"),
        (0, 0, None, "minimal"),
    ],
)
def test_tier_thresholds_defaults(sessions, lines, acceptance, expected):
    assert classify_tier(sessions, lines, acceptance, TiersConfig()) == expected


def test_tier_thresholds_from_config():
    tiers = TiersConfig(
        autonomous=AutonomousTier(min_sessions_per_week=3, min_lines_added_per_week=100, min_acceptance_rate=0.5),
        conversational=ConversationalTier(min_sessions_per_week=2, min_lines_added_per_week=50),
    )
    assert classify_tier(3, 100, 0.5, tiers) == "autonomous"
    assert classify_tier(2, 50, 0.1, tiers) == "conversational"
    assert classify_tier(2, 49, 0.1, tiers) == "minimal"
    cfg = dataclasses.replace(ReportsConfig(), tiers=tiers)
    report = build_usage_report(WEEK, ROWS, DecisionTallies(), cfg)
    # alice and bob (5 sessions, 100 lines, acceptance 0.5) meet the lowered bar; carol (1 session) does not
    assert report["tiers"] == {"autonomous": 2, "conversational": 0, "minimal": 1}
    assert {u["email"]: u["tier"] for u in report["users"]}["bob@example.com"] == "autonomous"
    assert report["thresholds"]["tiers"]["autonomous"]["min_sessions_per_week"] == 3
