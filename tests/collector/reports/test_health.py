"""Telemetry health: a session with a gap, a version with missing attributes, a silent user and a version sending
less each show up in the report and in the Prometheus metrics; a complete session shows none."""

from __future__ import annotations

import io
import json
from datetime import date
from typing import Any

from collector.reports.health import HealthTracker, is_healthy
from collector.reports.run import run_report
from exporters.prometheus.accumulator import Accumulator
from tests.collector.reports.report_support import at, point, record, write_audit

MON, TUE, WED = "2026-03-02", "2026-03-03", "2026-03-04"
THU = "2026-03-05"  # --until is exclusive: the period Monday to Wednesday
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def session(
    sid: str, day: str, version: str, email: str, sequences: range | list[int], *, cost: bool = True
) -> list[dict[str, Any]]:
    """A session's records: a decision, then API requests (with or without cost)."""
    out = []
    for seq in sequences:
        if seq == 0:
            fields: dict[str, Any] = {"tool": {"name": "Bash", "use_id": f"tu-{sid}", "decision_source": "config"}}
            kind = "tool_decision"
        else:
            kind = "api_request"
            fields = {"model": "m", **({"cost_usd": 0.01} if cost else {})}
        rec = record(kind, at(day, 10, seq), email=email, session=sid, app={"version": version}, sequence=seq, **fields)
        out.append(rec)
    return out


def complete() -> list[dict[str, Any]]:
    return session("s-ok", TUE, "2.1.332", ALICE, range(6)) + session("s-ok2", WED, "2.1.332", ALICE, range(6))


def broken() -> list[dict[str, Any]]:
    return [
        *complete(),
        *session("s-gap", WED, "2.1.332", ALICE, [0, 1, 2, 6, 7]),  # 3, 4, 5 lost
        *session("s-nocost", WED, "2.1.337", CAROL, range(4), cost=False),  # 2.1.337 stopped sending cost
        *session("s-bob", MON, "2.1.332", BOB, range(3)),  # bob sent on Monday, nothing since
    ]


def tracked(records: list[dict[str, Any]]) -> HealthTracker:
    t = HealthTracker()
    for r in records:
        t.observe(r)
    return t


def test_a_complete_session_shows_nothing() -> None:
    report = tracked(complete()).report(date(2026, 3, 4))
    assert is_healthy(report)
    assert report["versions"] == [
        {"version": "2.1.332", "sessions": 2, "events": 12, "metric_points": 0, "sessions_with_gaps": 0,
         "lost_estimate": 0}
    ]  # fmt: skip


def test_gap_missing_attribute_silent_user_and_version_drop() -> None:
    report = tracked(broken()).report(date(2026, 3, 4))
    assert report["session_gaps"] == [
        {"session": "s-gap", "version": "2.1.332", "sender": ALICE, "lost_estimate": 3, "highest_sequence": 7}
    ]
    assert report["missing_attributes"] == [
        {"version": "2.1.337", "kind": "api_request", "attribute": "cost_usd", "missing": 3, "events": 3, "share": 1.0}
    ]
    assert [s["sender"] for s in report["silent_senders"]] == [BOB]
    assert report["version_drops"] == []  # 4 events per session against 5.0: not below half


def test_a_late_event_closes_the_gap() -> None:
    recs = session("s", WED, "2.1.332", ALICE, [0, 2, 1])
    t = HealthTracker()
    t.observe(recs[0])
    t.observe(recs[1])
    assert t.versions["2.1.332"].gaps == 1 and t.versions["2.1.332"].lost == 1
    t.observe(recs[2])
    assert t.versions["2.1.332"].gaps == 0 and t.versions["2.1.332"].lost == 0


def test_version_drop_of_events_and_metric_points() -> None:
    recs = session("a", WED, "2.1.197", ALICE, range(10)) + session("b", WED, "2.1.332", ALICE, range(3))
    t = tracked(recs)
    for _ in range(8):
        t.observe_point({"resource": {"service.version": "2.1.197"}, "attributes": {}})
    drops = t.version_drops()
    assert {(d["version"], d["figure"]) for d in drops} == {
        ("2.1.332", "events_per_session"),
        ("2.1.332", "metric_points_per_session"),
    }


def test_report_telemetry_health_command(tmp_path) -> None:
    write_audit(
        tmp_path,
        broken(),
        [point("claude_code.session.count", at(WED, 9), 1.0, attrs={"session.id": "s-ok2"})],
        shard=0,
    )
    out, err = io.StringIO(), io.StringIO()
    code = run_report(
        view="telemetry-health", config_path=None, data_dir=str(tmp_path), since=MON, until=THU, fmt="json",
        today=date(2026, 3, 5), out=out, err=err,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    report = json.loads(out.getvalue())
    assert report["report"] == "telemetry-health"
    assert [g["session"] for g in report["session_gaps"]] == ["s-gap"]
    assert [(m["version"], m["attribute"]) for m in report["missing_attributes"]] == [("2.1.337", "cost_usd")]
    assert [s["sender"] for s in report["silent_senders"]] == [BOB]
    text = io.StringIO()
    assert run_report(
        view="telemetry-health", config_path=None, data_dir=str(tmp_path), since=MON, until=THU, fmt="table",
        today=date(2026, 3, 5), out=text, err=err,
    ) == 0  # fmt: skip
    assert "Sessions with sequence gaps" in text.getvalue() and "s-gap" in text.getvalue()


def test_complete_sessions_report_no_finding(tmp_path) -> None:
    write_audit(tmp_path, complete(), [], shard=0)
    out, err = io.StringIO(), io.StringIO()
    code = run_report(
        view="telemetry-health", config_path=None, data_dir=str(tmp_path), since=TUE, until=THU, fmt="json",
        today=date(2026, 3, 5), out=out, err=err,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    assert is_healthy(json.loads(out.getvalue()))


def test_prometheus_health_metrics() -> None:
    acc = Accumulator()
    for r in broken():
        acc.add_record(r)
    assert acc.value("claude_code_telemetry_sessions_with_gaps", version="2.1.332") == 1
    assert acc.value("claude_code_telemetry_events_lost", version="2.1.332") == 3
    missing = "claude_code_telemetry_missing_attributes_total"
    assert acc.value(missing, version="2.1.337", kind="api_request", attribute="cost_usd") == 3
    assert acc.value(missing, version="2.1.332", kind="api_request", attribute="cost_usd") is None
    assert acc.value("claude_code_telemetry_sessions_total", version="2.1.332") == 4
    assert acc.value("claude_code_telemetry_events_total", version="2.1.337", kind="api_request") == 3
    healthy = Accumulator()
    for r in complete():
        healthy.add_record(r)
    assert healthy.value("claude_code_telemetry_sessions_with_gaps", version="2.1.332") is None
    assert healthy.value("claude_code_telemetry_missing_attributes_total", version="2.1.332", kind="api_request",
                         attribute="cost_usd") is None  # fmt: skip
