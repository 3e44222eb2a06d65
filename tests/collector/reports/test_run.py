"""``ccbridge report``: formats, JSON keys, default period, empty data, bad options."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import date

import pytest

from collector.configtypes import ConfigError
from collector.reports.run import resolve_period, run_report
from tests.collector.reports.report_support import OPUS, SONNET, at, record, row, write_analytics, write_audit
from tests.conftest import PROJECT_ROOT

ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture
def data_dir(tmp_path):
    write_analytics(
        tmp_path,
        [
            row(
                "2026-03-02",
                ALICE,
                sessions=12,
                commits=4,
                prs=2,
                added=1200,
                removed=100,
                tools={"edit_tool": (85, 15)},
                models=[(SONNET, 10_000, 2_000, 800)],
            ),
            row(
                "2026-03-03",
                BOB,
                sessions=2,
                commits=0,
                added=10,
                tools={"edit_tool": (1, 1)},
                models=[(OPUS, 1_000, 1_000, 200)],
            ),
        ],
        identities=[("user_id", "uid-bob", BOB)],
    )
    write_audit(
        tmp_path,
        [
            record("tool_decision", at("2026-03-02", 10), email=ALICE, tool={"name": "Bash", "decision": "accept"}),
            record("tool_decision", at("2026-03-02", 11), email=ALICE, tool={"name": "Bash", "decision": "reject"}),
            record("tool_decision", at("2026-03-03", 11), uid="uid-bob", tool={"name": "Edit", "decision": "reject"}),
            record("tool_decision", at("2026-03-20", 11), email=ALICE, tool={"name": "Bash", "decision": "reject"}),
        ],
        [],
    )
    return tmp_path


def report(data_dir, *args: str, view: str | None = None, fmt: str = "json", today: date = date(2026, 3, 9)):
    out, err = io.StringIO(), io.StringIO()
    options = dict(zip(args[::2], args[1::2], strict=True))
    code = run_report(
        view=view,
        config_path=options.get("--config"),
        data_dir=str(data_dir),
        since=options.get("--since"),
        until=options.get("--until"),
        fmt=fmt,
        today=today,
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def test_json_has_the_documented_keys_and_figures(data_dir):
    code, out, err = report(data_dir, "--since", "2026-03-02", "--until", "2026-03-09")
    assert code == 0, err
    doc = json.loads(out)
    org = doc["org"]
    assert org["cost_usd"] == 10.0 and org["commits"] == 4
    assert org["cost_per_commit_usd"] == 2.5
    assert org["commits_per_developer_per_week"] == 2.0  # 4 commits / 2 developers / 1 week
    assert [m["model"] for m in org["model_mix"]] == [SONNET, OPUS]
    assert org["model_mix"][0]["cost_share"] == 0.8
    users = {u["email"]: u for u in doc["users"]}
    assert users[ALICE]["tier"] == "autonomous" and users[ALICE]["acceptance_rate"] == 0.85
    assert users[BOB]["tier"] == "minimal" and users[BOB]["acceptance_rate"] == 0.5
    assert doc["tiers"] == {"autonomous": 1, "conversational": 0, "minimal": 1}
    assert users[ALICE]["tool_decisions"]["Bash"]["rejected"] == 1  # the 2026-03-20 decision is outside
    assert users[BOB]["tool_decisions"]["Edit"]["rejected"] == 1  # attributed through identity_map


def test_markdown_is_a_weekly_wiki_page(data_dir):
    code, out, _ = report(data_dir, "--since", "2026-03-02", "--until", "2026-03-09", fmt="markdown")
    assert code == 0
    assert out.startswith("# Claude Code weekly report: 2026-03-02 to 2026-03-08\n")
    for heading in (
        "## Summary",
        "## Adoption tiers",
        "## Rejection-rate anomalies",
        "## Model cost mix",
        "## Tool decisions (telemetry)",
        "## Developers",
    ):
        assert f"\n{heading}\n" in out
    assert "| Cost | $10.00 |" in out and "| Cost per commit | $2.50 |" in out
    assert f"| {ALICE} | autonomous | 12 | 4 | 2 | 1,200 / 100 | $8.00 | $2.00 | 85.0% |" in out


def test_table_and_csv(data_dir):
    code, out, _ = report(data_dir, "--since", "2026-03-02", "--until", "2026-03-09", fmt="table")
    assert code == 0 and "Organization" in out and "Cost per commit" in out and ALICE in out
    code, out, _ = report(data_dir, "--since", "2026-03-02", "--until", "2026-03-09", fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["email"] for r in rows] == ["*", ALICE, BOB]
    assert rows[0]["cost_usd"] == "10.0" and rows[1]["tier"] == "autonomous" and rows[2]["acceptance_rate"] == "0.5"


def test_completeness_view(data_dir):
    code, out, err = report(data_dir, "--since", "2026-03-02", "--until", "2026-03-04", view="completeness")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["report"] == "completeness" and doc["compared_days"] == ["2026-03-02", "2026-03-03"]
    assert doc["gaps"][0]["gap_pct"] == 100.0  # no telemetry cost at all for these users
    code, out, _ = report(data_dir, "--since", "2026-03-02", "--until", "2026-03-04", view="completeness", fmt="csv")
    assert out.splitlines()[0] == "email,date,metric,telemetry,analytics_api,gap,gap_pct,final"


def test_empty_period_prints_a_message_and_succeeds(data_dir):
    for view in (None, "completeness"):
        code, out, err = report(data_dir, "--since", "2025-01-01", "--until", "2025-01-08", view=view)
        assert code == 0 and out == ""
        assert "2025-01-01..2025-01-07" in err and "ccbridge analytics sync" in err


def test_a_missing_store_is_reported_like_everywhere_else(tmp_path):
    code, out, err = report(tmp_path / "nothing-here")
    assert code == 1 and out == "" and f"no store under {tmp_path / 'nothing-here'}" in err
    assert "analytics sync" not in err
    assert not (tmp_path / "nothing-here").exists()  # a report creates nothing


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--since", "2026-13-01"), "--since: invalid time '2026-13-01': use RFC 3339"),
        (("--until", "tomorrow"), "--until: invalid time 'tomorrow'"),
        (("--since", "20260301"), "--since"),
        (("--since", "2026-03-05", "--until", "2026-03-01"), "--since 2026-03-05 is not before --until 2026-03-01"),
        (("--since", "1990-01-01", "--until", "2026-01-01"), "at most 3660 days"),
    ],
)
def test_bad_dates_are_usage_errors(data_dir, args, named):
    code, out, err = report(data_dir, *args)
    assert code == 2 and out == "" and named in err and err.startswith("ccbridge report: ")


def test_bad_format_and_config(data_dir, tmp_path):
    code, _, err = report(data_dir, fmt="xml")
    assert code == 2 and "--format" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("reports:\n  tiers:\n    autonomous:\n      min_acceptance_rate: 2\n")
    code, _, err = report(data_dir, "--config", str(bad))
    assert code == 2 and "reports.tiers.autonomous.min_acceptance_rate" in err


def test_default_period():
    today = date(2026, 3, 10)
    synced = date(2026, 3, 9)  # an Analytics API history up to yesterday
    assert resolve_period(None, None, today=today, latest=synced).since == date(2026, 3, 3)
    assert resolve_period(None, None, today=today, latest=synced).until == date(2026, 3, 9)
    # telemetry only: the week up to and including today (what the bridge received so far)
    assert resolve_period(None, None, today=today, latest=None).until == date(2026, 3, 10)
    stale = resolve_period(None, None, today=today, latest=date(2026, 2, 20))
    assert (stale.since, stale.until) == (date(2026, 2, 14), date(2026, 2, 20))
    assert resolve_period(None, None, today=today, latest=date(2026, 3, 10)).until == date(2026, 3, 9)
    recent = resolve_period("2026-03-10", None, today=today, latest=None)
    assert (recent.since, recent.until) == (date(2026, 3, 10), date(2026, 3, 10))
    assert resolve_period(None, "2026-03-01", today=today, latest=None).since == date(2026, 2, 22)
    with pytest.raises(ConfigError, match="--until"):
        resolve_period(None, "2026-02-30", today=today, latest=None)


def test_period_takes_the_one_time_grammar_and_until_is_exclusive():
    today = date(2026, 3, 10)
    week = resolve_period("7d", None, today=today, latest=None)
    assert week.since == date(2026, 3, 3)
    assert resolve_period("2026-03-02", "2026-03-09", today=today, latest=None).until == date(2026, 3, 8)
    assert resolve_period("2026-03-02", "today", today=today, latest=None).until == date(2026, 3, 9)
    assert resolve_period("yesterday", "today", today=today, latest=None) == resolve_period(
        "2026-03-09", "2026-03-10", today=today, latest=None
    )
    assert resolve_period("2026-03-02T00:00:00Z", "2026-03-03T12:00:00Z", today=today, latest=None).until == date(
        2026, 3, 3
    )


def test_command_line_entry_point(data_dir):
    cmd = [sys.executable, "-m", "collector.cli", "report", "--data-dir", str(data_dir)]
    done = subprocess.run(
        [*cmd, "--since", "2026-03-02", "--until", "2026-03-09", "--format", "json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["org"]["commits"] == 4
    done = subprocess.run(
        [*cmd, "completeness", "--format", "xml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--format" in done.stderr
