"""Renderers of the reports' JSON-shaped dicts: ``table`` (terminal), ``markdown`` (wiki), ``csv`` and ``json``.

Every format renders the same dict that ``--format json`` prints, so the figures agree across formats. ``csv``
holds the main table only (organization and users for the usage report, the gaps for completeness).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from collector import csvsafe

FORMATS = ("table", "markdown", "csv", "json")

Row = Sequence[object]


# -- cells ------------------------------------------------------------------------------------------------------


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _usd(value: object) -> str:
    return "-" if value is None else f"${float(value):,.2f}"  # type: ignore[arg-type]


def _pct(value: object, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value) * 100:.{digits}f}%"  # type: ignore[arg-type]


def _plain_pct(value: object) -> str:
    return "-" if value is None else f"{float(value):.1f}%"  # type: ignore[arg-type]


def _text_table(headers: Sequence[str], rows: Sequence[Row], right: Sequence[bool]) -> list[str]:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(parts).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Row], right: Sequence[bool]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _csv(headers: Sequence[str], rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csvsafe.writer(buf)
    writer.writerow(headers)
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def to_json(report: Mapping[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"


# -- usage report ------------------------------------------------------------------------------------------------

TIER_RULES = {
    "autonomous": "many sessions, high output and high edit acceptance",
    "conversational": "many sessions, moderate output",
    "minimal": "little use",
}


def _tier_rule(report: Mapping[str, Any], tier: str) -> str:
    t = report["thresholds"]["tiers"]
    if tier == "autonomous":
        a = t["autonomous"]
        return (
            f"≥ {_num(a['min_sessions_per_week'])} sessions/week, ≥ {_num(a['min_lines_added_per_week'])} lines "
            f"added/week, acceptance ≥ {_pct(a['min_acceptance_rate'], 0)}"
        )
    if tier == "conversational":
        c = t["conversational"]
        rule = f"≥ {_num(c['min_sessions_per_week'])} sessions/week"
        if c["min_lines_added_per_week"]:
            rule += f", ≥ {_num(c['min_lines_added_per_week'])} lines added/week"
        return rule
    return "everyone else"


def _summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    org = report["org"]
    return [
        ("Developers (active)", _num(org["developers"])),
        ("API keys (active)", _num(org["api_keys"])),
        ("Sessions", _num(org["sessions"])),
        ("Commits", _num(org["commits"])),
        ("Pull requests", _num(org["pull_requests"])),
        ("Commits per developer per week", _num(org["commits_per_developer_per_week"])),
        ("PRs per developer per week", _num(org["pull_requests_per_developer_per_week"])),
        ("Lines added / removed", f"{_num(org['lines_added'])} / {_num(org['lines_removed'])}"),
        ("Cost", _usd(org["cost_usd"])),
        ("Cost per commit", _usd(org["cost_per_commit_usd"])),
        ("Cost per PR", _usd(org["cost_per_pull_request_usd"])),
        ("Cost per developer", _usd(org["cost_per_developer_usd"])),
        ("Edit acceptance rate", _pct(org["acceptance_rate"])),
    ]


def _model_rows(report: Mapping[str, Any]) -> list[Row]:
    return [
        (m["model"], _usd(m["cost_usd"]), _pct(m["cost_share"]), _num(m["tokens"]), _pct(m["token_share"]))
        for m in report["org"]["model_mix"]
    ]


def _tool_rows(tools: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    return [
        (name, _num(t["accepted"]), _num(t["rejected"]), _pct(t["acceptance_rate"]), _pct(t["rejection_rate"]))
        for name, t in tools.items()
    ]


def _user_rows(report: Mapping[str, Any]) -> list[Row]:
    return [
        (
            u["email"],
            u["tier"],
            _num(u["sessions"]),
            _num(u["commits"]),
            _num(u["pull_requests"]),
            f"{_num(u['lines_added'])} / {_num(u['lines_removed'])}",
            _usd(u["cost_usd"]),
            _usd(u["cost_per_commit_usd"]),
            _pct(u["acceptance_rate"]),
        )
        for u in report["users"]
    ]


USER_HEADERS = ("User", "Tier", "Sessions", "Commits", "PRs", "Lines +/-", "Cost", "Cost/commit", "Acceptance")
USER_RIGHT = (False, False, True, True, True, True, True, True, True)
MODEL_HEADERS = ("Model", "Cost", "Cost share", "Tokens", "Token share")
MODEL_RIGHT = (False, True, True, True, True)
TOOL_HEADERS = ("Tool", "Accepted", "Rejected", "Acceptance", "Rejection")
TOOL_RIGHT = (False, True, True, True, True)
ANOMALY_HEADERS = ("Date", "Scope", "Rejection", "Baseline", "Threshold", "Decisions")
ANOMALY_RIGHT = (False, False, True, True, True, True)


def _anomaly_rows(report: Mapping[str, Any]) -> list[Row]:
    return [
        (
            a["date"],
            a.get("user", "organization"),
            _pct(a["rejection_rate"]),
            f"{_pct(a['baseline_mean'])} ± {_pct(a['baseline_stddev'])}",
            _pct(a["threshold"]),
            _num(a["decisions"]),
        )
        for a in report["anomalies"]
    ]


def _period_title(report: Mapping[str, Any]) -> str:
    p = report["period"]
    return f"{p['since']} .. {p['until']} ({_days(p['days'])})"


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def _source_lines(report: Mapping[str, Any]) -> list[str]:
    """Which days each source covers, and where each figure comes from."""
    src = report["sources"]
    api = ", ".join(src.get("days_from_analytics_api") or []) or "none"
    tel = ", ".join(src.get("days_from_telemetry") or []) or "none"
    lines = [f"Analytics API: {api}", f"Telemetry only: {tel}"]
    lines += [f"{what}: {where}" for what, where in (src.get("figures") or {}).items()]
    return lines


def usage_table(report: Mapping[str, Any]) -> str:
    out = [f"Claude Code usage {_period_title(report)}", "", "Sources"]
    out += [f"  {line}" for line in _source_lines(report)]
    out += ["", "Organization"]
    out += _text_table(("Figure", "Value"), _summary_rows(report), (False, True))
    tiers = report["tiers"]
    out += ["", "Adoption tiers"]
    out += _text_table(
        ("Tier", "Users", "Rule"),
        [(t, _num(tiers[t]), _tier_rule(report, t)) for t in TIER_RULES],
        (False, True, False),
    )
    sections: list[tuple[str, Sequence[str], list[Row], Sequence[bool]]] = [
        ("Model cost mix", MODEL_HEADERS, _model_rows(report), MODEL_RIGHT),
        ("Tool decisions (telemetry)", TOOL_HEADERS, _tool_rows(report["org"]["tool_decisions"]), TOOL_RIGHT),
        ("Edit tools (Analytics API)", TOOL_HEADERS, _tool_rows(report["org"]["edit_tools"]), TOOL_RIGHT),
        ("Users", USER_HEADERS, _user_rows(report), USER_RIGHT),
        ("Rejection-rate anomalies", ANOMALY_HEADERS, _anomaly_rows(report), ANOMALY_RIGHT),
    ]
    for title, headers, rows, right in sections:
        out += ["", title]
        out += _text_table(headers, rows, right) if rows else ["  (none)"]
    return "\n".join(out) + "\n"


def usage_markdown(report: Mapping[str, Any]) -> str:
    p = report["period"]
    out = [
        f"# Claude Code weekly report: {p['since']} to {p['until']}",
        "",
        f"_{_days(p['days'])} (UTC). Generated {report['generated_at']} by ccbridge from the Claude Code Analytics "
        "API history and the bridge's audit records._",
        "",
        "## Sources",
        "",
        *[f"- {line}" for line in _source_lines(report)],
        "",
        "## Summary",
        "",
    ]
    out += _md_table(("Figure", "Value"), _summary_rows(report), (False, True))
    tiers = report["tiers"]
    out += ["", "## Adoption tiers", ""]
    out += _md_table(
        ("Tier", "Developers", "Rule"),
        [(t, _num(tiers[t]), _tier_rule(report, t)) for t in TIER_RULES],
        (False, True, False),
    )
    out += ["", "## Rejection-rate anomalies", ""]
    if report["anomalies"]:
        for a in report["anomalies"]:
            who = f"`{a['user']}`" if "user" in a else "the organization"
            out.append(
                f"- **{a['date']}**, {who}: {_pct(a['rejection_rate'])} of {_num(a['decisions'])} edit decisions "
                f"rejected; trailing baseline {_pct(a['baseline_mean'])} ± {_pct(a['baseline_stddev'])} over "
                f"{a['baseline_days']} days, threshold {_pct(a['threshold'])}."
            )
    else:
        out.append("None: no day's rejection rate rose above its trailing baseline.")
    for title, headers, rows, right in (
        ("Model cost mix", MODEL_HEADERS, _model_rows(report), MODEL_RIGHT),
        ("Tool decisions (telemetry)", TOOL_HEADERS, _tool_rows(report["org"]["tool_decisions"]), TOOL_RIGHT),
        ("Edit tools (Analytics API)", TOOL_HEADERS, _tool_rows(report["org"]["edit_tools"]), TOOL_RIGHT),
        ("Developers", USER_HEADERS, _user_rows(report), USER_RIGHT),
    ):
        out += ["", f"## {title}", ""]
        out += _md_table(headers, rows, right) if rows else ["No data."]
    out += [
        "",
        "---",
        "",
        "Organization figures include API-key usage; per-developer figures count people (e-mail identities) only. "
        "Costs are the Analytics API's estimates. Definitions: docs/reports.md in the ccbridge repository.",
    ]
    return "\n".join(out) + "\n"


CSV_COLUMNS = (
    "email",
    "tier",
    "active_days",
    "sessions",
    "commits",
    "pull_requests",
    "lines_added",
    "lines_removed",
    "cost_usd",
    "cost_per_commit_usd",
    "cost_per_pull_request_usd",
    "commits_per_week",
    "pull_requests_per_week",
    "edit_accepted",
    "edit_rejected",
    "acceptance_rate",
    "rejection_rate",
)


def usage_csv(report: Mapping[str, Any]) -> str:
    """One row for the organization (``email`` = ``*``, per-week figures per developer), then one per user."""
    org = report["org"]
    org_row = {
        **org,
        "email": "*",
        "tier": "",
        "commits_per_week": org["commits_per_developer_per_week"],
        "pull_requests_per_week": org["pull_requests_per_developer_per_week"],
    }
    rows = [[doc.get(c) for c in CSV_COLUMNS] for doc in (org_row, *report["users"])]
    return _csv(CSV_COLUMNS, rows)


# -- completeness report -------------------------------------------------------------------------------------------

METRIC_LABELS = {
    "cost_usd": "Cost (USD)",
    "tokens": "Tokens",
    "lines_added": "Lines added",
    "lines_removed": "Lines removed",
    "commits": "Commits",
    "pull_requests": "Pull requests",
    "sessions": "Sessions",
}
GAP_HEADERS = ("User", "Date", "Metric", "Telemetry", "Analytics API", "Gap", "Gap %")
GAP_RIGHT = (False, False, False, True, True, True, True)
SUMMARY_HEADERS = ("Metric", "Telemetry", "Analytics API", "Gap", "Gap %")
SUMMARY_RIGHT = (False, True, True, True, True)


def _summary_table_rows(report: Mapping[str, Any]) -> list[Row]:
    return [
        (METRIC_LABELS[m], _num(s["telemetry"]), _num(s["analytics_api"]), _num(s["gap"]), _plain_pct(s["gap_pct"]))
        for m, s in report["summary"].items()
    ]


def _gap_rows(report: Mapping[str, Any]) -> list[Row]:
    return [
        (
            g["email"],
            g["date"] + ("" if g["final"] else " (partial)"),
            METRIC_LABELS[g["metric"]],
            _num(g["telemetry"]),
            _num(g["analytics_api"]),
            _num(g["gap"]),
            _plain_pct(g["gap_pct"]),
        )
        for g in report["gaps"]
    ]


def completeness_table(report: Mapping[str, Any]) -> str:
    out = [f"Telemetry completeness {_period_title(report)}: OTel telemetry vs Claude Code Analytics API", ""]
    if report["not_synced_days"]:
        out += [f"Not compared (no completed Analytics API fetch): {', '.join(report['not_synced_days'])}", ""]
    out += ["Totals over compared days"]
    out += _text_table(SUMMARY_HEADERS, _summary_table_rows(report), SUMMARY_RIGHT)
    loose = {k: v for k, v in report["unattributed_telemetry"].items() if v}
    if loose:
        out += ["", "Telemetry without a known e-mail: " + ", ".join(f"{k} {_num(v)}" for k, v in loose.items())]
    out += ["", f"Gaps ({len(report['gaps'])}), largest first"]
    out += _text_table(GAP_HEADERS, _gap_rows(report), GAP_RIGHT) if report["gaps"] else ["  (none)"]
    return "\n".join(out) + "\n"


def completeness_markdown(report: Mapping[str, Any]) -> str:
    p = report["period"]
    out = [
        f"# Telemetry completeness: {p['since']} to {p['until']}",
        "",
        f"_Generated {report['generated_at']} by ccbridge: the OTel telemetry the bridge received compared with the "
        "Claude Code Analytics API, per user and UTC day. Gap = Analytics API - telemetry._",
        "",
    ]
    if report["not_synced_days"]:
        out += [f"Not compared (no completed Analytics API fetch): {', '.join(report['not_synced_days'])}.", ""]
    out += ["## Totals", ""]
    out += _md_table(SUMMARY_HEADERS, _summary_table_rows(report), SUMMARY_RIGHT)
    out += ["", "## Gaps, largest first", ""]
    out += _md_table(GAP_HEADERS, _gap_rows(report), GAP_RIGHT) if report["gaps"] else ["No gaps."]
    return "\n".join(out) + "\n"


GAP_COLUMNS = ("email", "date", "metric", "telemetry", "analytics_api", "gap", "gap_pct", "final")


def completeness_csv(report: Mapping[str, Any]) -> str:
    return _csv(GAP_COLUMNS, [[g[c] for c in GAP_COLUMNS] for g in report["gaps"]])


RENDERERS: dict[str, dict[str, Callable[[Mapping[str, Any]], str]]] = {
    "usage": {"table": usage_table, "markdown": usage_markdown, "csv": usage_csv, "json": to_json},
    "completeness": {
        "table": completeness_table,
        "markdown": completeness_markdown,
        "csv": completeness_csv,
        "json": to_json,
    },
}


def render(report: Mapping[str, Any], fmt: str) -> str:
    """Render a report dict (its ``report`` key says which) in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    return RENDERERS[report["report"]][fmt](report)
