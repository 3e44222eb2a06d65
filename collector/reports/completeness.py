"""Telemetry completeness: per user and day, what the OTel stream delivered against the Analytics API's totals.

Compared figures (telemetry source -> Analytics API field):

* ``cost_usd``: sum of ``cost_usd`` of ``api_request`` records -> sum of ``model_breakdown[].estimated_cost``;
* ``tokens``: input + output + cache read + cache creation of ``api_request`` records -> the same four token
  counts of ``model_breakdown``;
* ``lines_added`` / ``lines_removed``: ``claude_code.lines_of_code.count`` points (``type`` added/removed) ->
  ``core_metrics.lines_of_code``;
* ``commits`` / ``pull_requests``: ``claude_code.commit.count`` / ``claude_code.pull_request.count`` points ->
  ``core_metrics.commits_by_claude_code`` / ``pull_requests_by_claude_code``;
* ``sessions``: distinct ``session.id`` of the user's records, on the day of the session's first record ->
  ``core_metrics.num_sessions``.

``gap = analytics_api - telemetry`` (positive: the telemetry is missing something), ``gap_pct = gap /
analytics_api * 100`` (``None`` when the API says 0). Only days whose Analytics API fetch completed are compared
(other days are listed as not synced). A difference counts as a gap when it is at least one unit (one cent for
cost: the API rounds each model's cost to whole cents). Gaps are sorted by ``|gap_pct|`` (``None`` counts as
100 %), then ``|gap|``, largest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from collector.reports.compute import Period
from collector.reports.sources import DayFigures

METRICS = ("cost_usd", "tokens", "lines_added", "lines_removed", "commits", "pull_requests", "sessions")
COST_TOLERANCE_USD = 0.01


def _gap_pct(gap: float, api: float) -> float | None:
    return round(gap / api * 100, 2) if api else None


def _value(metric: str, value: float) -> float | int:
    return round(value, 4) if metric == "cost_usd" else round(value)


def _is_gap(metric: str, gap: float) -> bool:
    if metric == "cost_usd":
        return abs(gap) >= COST_TOLERANCE_USD - 1e-9
    return round(gap) != 0


def build_completeness_report(
    period: Period,
    telemetry: Mapping[tuple[str, date], DayFigures],
    analytics: Mapping[tuple[str, date], DayFigures],
    synced_days: set[date],
    *,
    unattributed: Mapping[date, DayFigures] | None = None,
    final_days: set[date] | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The completeness report as a JSON-shaped dict (see the module docstring)."""
    compared_days = sorted(d for d in synced_days if d in period)
    compared = set(compared_days)
    keys = sorted({k for k in (*telemetry, *analytics) if k[1] in compared})
    totals = {m: [0.0, 0.0] for m in METRICS}
    gaps: list[dict[str, Any]] = []
    empty = DayFigures()
    for email, day in keys:
        tel = telemetry.get((email, day), empty)
        api = analytics.get((email, day), empty)
        for metric in METRICS:
            t, a = tel.value(metric), api.value(metric)
            totals[metric][0] += t
            totals[metric][1] += a
            gap = a - t
            if not _is_gap(metric, gap):
                continue
            gaps.append(
                {
                    "email": email,
                    "date": day.isoformat(),
                    "metric": metric,
                    "telemetry": _value(metric, t),
                    "analytics_api": _value(metric, a),
                    "gap": _value(metric, gap),
                    "gap_pct": _gap_pct(gap, a),
                    "final": final_days is None or day in final_days,
                }
            )
    gaps.sort(
        key=lambda g: (
            -(abs(g["gap_pct"]) if g["gap_pct"] is not None else 100.0),
            -abs(g["gap"]),
            g["email"],
            g["date"],
            METRICS.index(g["metric"]),
        )
    )
    summary = {}
    for metric, (t, a) in totals.items():
        summary[metric] = {
            "telemetry": _value(metric, t),
            "analytics_api": _value(metric, a),
            "gap": _value(metric, a - t),
            "gap_pct": _gap_pct(a - t, a),
        }
    loose: dict[str, float | int] = dict.fromkeys(METRICS, 0)
    for day, figures in (unattributed or {}).items():
        if day in compared:
            for metric in METRICS:
                loose[metric] += figures.value(metric)
    return {
        "report": "completeness",
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "period": period.as_dict(),
        "compared_days": [d.isoformat() for d in compared_days],
        "not_synced_days": [d.isoformat() for d in period.each_day() if d not in compared],
        "users": len({email for email, _ in keys}),
        "summary": summary,
        "unattributed_telemetry": {m: _value(m, v) for m, v in loose.items()},
        "gaps": gaps,
    }


def is_empty(report: Mapping[str, Any]) -> bool:
    """Nothing to compare: no synced day in the period, or no figures on either side."""
    return not report["compared_days"] or (not report["users"] and not any(report["unattributed_telemetry"].values()))
