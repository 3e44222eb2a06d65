"""The usage report's figures: pure functions from Analytics API rows and telemetry tallies to a JSON-shaped dict.

Inputs are the daily rows of the Analytics API history (:class:`DailyUsage`, one per actor, day, terminal and
customer type) and the tool decisions counted from the audit store (:class:`DecisionTallies`). Nothing here reads
files; :mod:`collector.reports.sources` loads, :mod:`collector.reports.render` formats. docs/reports.md explains
every figure for its readers; the definitions in short:

* *org* figures sum every actor (people and API keys); *developers* are the user actors (e-mails) active in the
  period; per-developer rates use the user actors' figures only.
* weeks = days in the period / 7; "per week" figures divide by it.
* cost per commit / PR = cost / commits (PRs), ``None`` without commits (PRs).
* acceptance rate = accepted / (accepted + rejected) over the edit tools (Analytics API ``tool_actions``);
  rejection rate = 1 - acceptance rate; ``None`` without decisions.
* tool decisions by tool come from ``tool_decision`` audit records (every tool, e.g. Bash, not only edits).
* model mix: each model's share of the estimated cost and of all tokens (input, output, cache read and creation).
* tiers: see :func:`classify_tier`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from collector.enrich.analytics_client import DailyUsage
from collector.reports.anomaly import RateCheck, find_anomalies
from collector.reports.config import ReportsConfig, TiersConfig

TIERS = ("autonomous", "conversational", "minimal")
USER_ACTOR = "user_actor"
API_ACTOR = "api_actor"


@dataclass(frozen=True)
class Period:
    """UTC days ``since..until``, both included."""

    since: date
    until: date

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def weeks(self) -> float:
        return self.days / 7

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.since <= day <= self.until

    def each_day(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range(self.days)]

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "days": self.days}


@dataclass
class ToolTally:
    accepted: int = 0
    rejected: int = 0

    def add(self, accepted: int, rejected: int) -> None:
        self.accepted += accepted
        self.rejected += rejected

    @property
    def total(self) -> int:
        return self.accepted + self.rejected

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.total if self.total else None

    @property
    def rejection_rate(self) -> float | None:
        return self.rejected / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "acceptance_rate": _rate(self.acceptance_rate),
            "rejection_rate": _rate(self.rejection_rate),
        }


@dataclass
class DecisionTallies:
    """``tool_decision`` audit records counted by user e-mail (``None``: no known e-mail) and tool name."""

    by_user: dict[str | None, dict[str, ToolTally]] = field(default_factory=dict)
    records: int = 0

    def add(self, email: str | None, tool: str, decision: str) -> None:
        """Count one decision (``accept``/``reject``; anything else is ignored)."""
        if decision not in ("accept", "reject"):
            return
        tally = self.by_user.setdefault(email, {}).setdefault(tool, ToolTally())
        tally.add(int(decision == "accept"), int(decision == "reject"))
        self.records += 1

    def by_tool(self, email: str | None = None, *, everyone: bool = False) -> dict[str, ToolTally]:
        """Tallies per tool of one user, or of everyone (``everyone=True``)."""
        if not everyone:
            return self.by_user.get(email, {})
        merged: dict[str, ToolTally] = {}
        for tools in self.by_user.values():
            for tool, tally in tools.items():
                merged.setdefault(tool, ToolTally()).add(tally.accepted, tally.rejected)
        return merged


@dataclass
class ModelTally:
    cost_cents: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens


@dataclass
class ActorTotals:
    """One actor's sums over a set of daily rows."""

    actor_type: str
    actor_id: str
    days: set[date] = field(default_factory=set)
    sessions: int = 0
    commits: int = 0
    pull_requests: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    cost_cents: Decimal = Decimal(0)
    edit_tools: dict[str, ToolTally] = field(default_factory=dict)
    models: dict[str, ModelTally] = field(default_factory=dict)

    def add(self, row: DailyUsage) -> None:
        self.days.add(row.day)
        self.sessions += row.num_sessions
        self.commits += row.commits
        self.pull_requests += row.pull_requests
        self.lines_added += row.lines_added
        self.lines_removed += row.lines_removed
        self.cost_cents += row.cost_cents
        for tool, counts in row.tool_actions.items():
            self.edit_tools.setdefault(tool, ToolTally()).add(counts.accepted, counts.rejected)
        for m in row.models:
            if m.cost_currency != "USD":
                continue
            tally = self.models.setdefault(m.model, ModelTally())
            tally.cost_cents += m.cost_cents
            tally.input_tokens += m.input_tokens
            tally.output_tokens += m.output_tokens
            tally.cache_read_tokens += m.cache_read_tokens
            tally.cache_creation_tokens += m.cache_creation_tokens

    def merge(self, other: ActorTotals) -> None:
        self.days |= other.days
        self.sessions += other.sessions
        self.commits += other.commits
        self.pull_requests += other.pull_requests
        self.lines_added += other.lines_added
        self.lines_removed += other.lines_removed
        self.cost_cents += other.cost_cents
        for tool, tally in other.edit_tools.items():
            self.edit_tools.setdefault(tool, ToolTally()).add(tally.accepted, tally.rejected)
        for model, mt in other.models.items():
            mine = self.models.setdefault(model, ModelTally())
            mine.cost_cents += mt.cost_cents
            mine.input_tokens += mt.input_tokens
            mine.output_tokens += mt.output_tokens
            mine.cache_read_tokens += mt.cache_read_tokens
            mine.cache_creation_tokens += mt.cache_creation_tokens

    @property
    def edit(self) -> ToolTally:
        total = ToolTally()
        for tally in self.edit_tools.values():
            total.add(tally.accepted, tally.rejected)
        return total

    @property
    def cost_usd(self) -> Decimal:
        return self.cost_cents / 100


def totals_by_actor(rows: Iterable[DailyUsage]) -> dict[tuple[str, str], ActorTotals]:
    """Sum rows per ``(actor_type, actor_id)`` (over days, terminals and customer types)."""
    out: dict[tuple[str, str], ActorTotals] = {}
    for row in rows:
        key = (row.actor_type, row.actor_id)
        totals = out.get(key)
        if totals is None:
            totals = out[key] = ActorTotals(*key)
        totals.add(row)
    return out


def org_totals(actors: Iterable[ActorTotals]) -> ActorTotals:
    total = ActorTotals("organization", "*")
    for actor in actors:
        total.merge(actor)
    return total


class EditDecisions(Protocol):
    """What :func:`decision_series` needs of a row (:class:`DailyUsage` and ``ActorDay`` both have it)."""

    @property
    def day(self) -> date: ...
    @property
    def actor_type(self) -> str: ...
    @property
    def actor_id(self) -> str: ...
    @property
    def edit_accepted(self) -> int: ...
    @property
    def edit_rejected(self) -> int: ...


Series = dict[date, tuple[int, int]]


def decision_series(rows: Iterable[EditDecisions]) -> tuple[Series, dict[str, Series]]:
    """``{day: (accepted, rejected)}`` over the edit tools: for every actor together, and per user e-mail."""
    org: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    users: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in rows:
        accepted, rejected = row.edit_accepted, row.edit_rejected
        counts = org[row.day]
        counts[0] += accepted
        counts[1] += rejected
        if row.actor_type == USER_ACTOR:
            mine = users[row.actor_id][row.day]
            mine[0] += accepted
            mine[1] += rejected
    return (
        {d: (a, r) for d, (a, r) in org.items()},
        {user: {d: (a, r) for d, (a, r) in days.items()} for user, days in users.items()},
    )


def classify_tier(
    sessions_per_week: float, lines_added_per_week: float, acceptance_rate: float | None, tiers: TiersConfig
) -> str:
    """``autonomous`` when all three autonomous thresholds are met (no acceptance rate: not met), else
    ``conversational`` when both conversational thresholds are met, else ``minimal``."""
    auto = tiers.autonomous
    if (
        sessions_per_week >= auto.min_sessions_per_week
        and lines_added_per_week >= auto.min_lines_added_per_week
        and acceptance_rate is not None
        and acceptance_rate >= auto.min_acceptance_rate
    ):
        return "autonomous"
    conv = tiers.conversational
    if sessions_per_week >= conv.min_sessions_per_week and lines_added_per_week >= conv.min_lines_added_per_week:
        return "conversational"
    return "minimal"


def tier_of(actor: ActorTotals, weeks: float, tiers: TiersConfig) -> str:
    return classify_tier(actor.sessions / weeks, actor.lines_added / weeks, actor.edit.acceptance_rate, tiers)


# -- number formatting for the JSON form ------------------------------------------------------------------


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _usd(value: Decimal) -> float:
    return float(round(value, 4))


def _ratio(numerator: Decimal | float, denominator: float, digits: int = 4) -> float | None:
    return round(float(numerator) / denominator, digits) if denominator else None


def _model_mix(actor: ActorTotals) -> list[dict[str, Any]]:
    total_cost = sum((m.cost_cents for m in actor.models.values()), Decimal(0))
    total_tokens = sum(m.tokens for m in actor.models.values())
    mix = [
        {
            "model": name,
            "cost_usd": _usd(m.cost_cents / 100),
            "cost_share": _ratio(m.cost_cents, float(total_cost)),
            "tokens": m.tokens,
            "token_share": _ratio(m.tokens, total_tokens),
            "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens,
            "cache_read_tokens": m.cache_read_tokens,
            "cache_creation_tokens": m.cache_creation_tokens,
        }
        for name, m in actor.models.items()
    ]
    mix.sort(key=lambda item: (-item["cost_usd"], -item["tokens"], item["model"]))
    return mix


def _figures(actor: ActorTotals) -> dict[str, Any]:
    edit = actor.edit
    return {
        "active_days": len(actor.days),
        "sessions": actor.sessions,
        "commits": actor.commits,
        "pull_requests": actor.pull_requests,
        "lines_added": actor.lines_added,
        "lines_removed": actor.lines_removed,
        "cost_usd": _usd(actor.cost_usd),
        "cost_per_commit_usd": _ratio(actor.cost_usd, actor.commits),
        "cost_per_pull_request_usd": _ratio(actor.cost_usd, actor.pull_requests),
        "edit_accepted": edit.accepted,
        "edit_rejected": edit.rejected,
        "acceptance_rate": _rate(edit.acceptance_rate),
        "rejection_rate": _rate(edit.rejection_rate),
    }


def _tools(tallies: Mapping[str, ToolTally]) -> dict[str, dict[str, Any]]:
    ordered = sorted(tallies.items(), key=lambda kv: (-kv[1].total, kv[0]))
    return {name: tally.as_dict() for name, tally in ordered if tally.total}


def _check_dict(check: RateCheck, scope: str, user: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"scope": scope}
    if user is not None:
        doc["user"] = user
    doc.update(
        {
            "date": check.day.isoformat(),
            "rejection_rate": _rate(check.rate),
            "decisions": check.decisions,
            "rejected": check.rejected,
            "baseline_mean": _rate(check.baseline_mean),
            "baseline_stddev": _rate(check.baseline_stddev),
            "baseline_days": check.baseline_days,
            "threshold": _rate(check.threshold),
        }
    )
    return doc


TELEMETRY_SOURCE = "telemetry"
"""``terminal_type`` of daily rows made from telemetry (days the Analytics API does not cover)."""


def _source_of(rows: Iterable[DailyUsage]) -> str:
    kinds = {"telemetry" if r.terminal_type == TELEMETRY_SOURCE else "analytics_api" for r in rows}
    return "both" if len(kinds) > 1 else (kinds.pop() if kinds else "none")


def _spans(days: Sequence[date]) -> list[str]:
    """``2026-03-02..2026-03-04`` style ranges of consecutive days."""
    out: list[str] = []
    start = prev = None
    for d in sorted(days):
        if prev is not None and (d - prev).days == 1:
            prev = d
            continue
        if start is not None and prev is not None:
            out.append(start.isoformat() if start == prev else f"{start}..{prev}")
        start = prev = d
    if start is not None and prev is not None:
        out.append(start.isoformat() if start == prev else f"{start}..{prev}")
    return out


def build_usage_report(
    period: Period,
    rows: Sequence[DailyUsage],
    decisions: DecisionTallies,
    cfg: ReportsConfig,
    *,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The usage report as a JSON-shaped dict (the ``--format json`` output; other formats render it).

    ``rows`` may start before ``period`` (up to ``reports.anomaly.window_days`` earlier): those days only serve as
    the anomaly baseline. ``users`` lists the user actors active in the period, most expensive first.
    """
    in_period = [r for r in rows if r.day in period]
    analytics_days = {r.day for r in in_period if r.terminal_type != TELEMETRY_SOURCE}
    telemetry_days = {r.day for r in in_period if r.terminal_type == TELEMETRY_SOURCE}
    actors = totals_by_actor(in_period)
    users = sorted(
        (a for a in actors.values() if a.actor_type == USER_ACTOR), key=lambda a: (-a.cost_cents, a.actor_id)
    )
    keys = sorted((a for a in actors.values() if a.actor_type != USER_ACTOR), key=lambda a: (-a.cost_cents, a.actor_id))
    org = org_totals(actors.values())
    people = org_totals(users)
    weeks = period.weeks
    developers = len(users)

    org_doc: dict[str, Any] = {"developers": developers, "api_keys": len(keys), **_figures(org)}
    org_doc["commits_per_developer_per_week"] = _ratio(people.commits, developers * weeks, 2)
    org_doc["pull_requests_per_developer_per_week"] = _ratio(people.pull_requests, developers * weeks, 2)
    org_doc["sessions_per_developer_per_week"] = _ratio(people.sessions, developers * weeks, 2)
    org_doc["cost_per_developer_usd"] = _ratio(people.cost_usd, developers)
    org_doc["edit_tools"] = _tools(org.edit_tools)
    org_doc["tool_decisions"] = _tools(decisions.by_tool(everyone=True))
    org_doc["model_mix"] = _model_mix(org)

    user_docs = []
    rows_of: dict[str, list[DailyUsage]] = {}
    for r in in_period:
        rows_of.setdefault(r.actor_id, []).append(r)
    for user in users:
        doc: dict[str, Any] = {"email": user.actor_id, "tier": tier_of(user, weeks, cfg.tiers), **_figures(user)}
        doc["source"] = _source_of(rows_of.get(user.actor_id, []))
        doc["sessions_per_week"] = round(user.sessions / weeks, 2)
        doc["commits_per_week"] = round(user.commits / weeks, 2)
        doc["pull_requests_per_week"] = round(user.pull_requests / weeks, 2)
        doc["lines_added_per_week"] = round(user.lines_added / weeks, 2)
        doc["edit_tools"] = _tools(user.edit_tools)
        doc["tool_decisions"] = _tools(decisions.by_tool(user.actor_id))
        doc["model_mix"] = _model_mix(user)
        user_docs.append(doc)

    days = period.each_day()
    org_series, user_series = decision_series(rows)
    anomalies = [_check_dict(c, "org", None) for c in find_anomalies(org_series, days, cfg.anomaly)]
    for user in users:
        series = user_series.get(user.actor_id, {})
        anomalies += [_check_dict(c, "user", user.actor_id) for c in find_anomalies(series, days, cfg.anomaly)]
    anomalies.sort(key=lambda a: (a["date"], a["scope"] != "org", a.get("user", "")))

    return {
        "report": "usage",
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "period": {**period.as_dict(), "weeks": round(weeks, 4)},
        "sources": {
            "analytics_rows": sum(1 for r in in_period if r.terminal_type != TELEMETRY_SOURCE),
            "analytics_days": len(analytics_days),
            "telemetry_rows": sum(1 for r in in_period if r.terminal_type == TELEMETRY_SOURCE),
            "telemetry_days": len(telemetry_days),
            "tool_decision_records": decisions.records,
            # which figures come from where: the Analytics API where a day was synced, telemetry otherwise
            "days_from_analytics_api": _spans(sorted(analytics_days)),
            "days_from_telemetry": _spans(sorted(telemetry_days)),
            "figures": {
                "developers, sessions, cost, tokens, model mix, lines, commits, pull requests": (
                    "Analytics API on its days, telemetry (api_request records, metric points) on the others"
                ),
                "edit tools (acceptance rate)": "Analytics API only",
                "tool decisions": "telemetry (tool_decision records)",
                "anomalies": "Analytics API edit decisions",
            },
        },
        "org": org_doc,
        "tiers": {tier: sum(1 for u in user_docs if u["tier"] == tier) for tier in TIERS},
        "users": user_docs,
        "api_keys": [{"name": k.actor_id, **_figures(k)} for k in keys],
        "anomalies": anomalies,
        "thresholds": {"tiers": dataclasses.asdict(cfg.tiers), "anomaly": dataclasses.asdict(cfg.anomaly)},
    }


def is_empty(report: Mapping[str, Any]) -> bool:
    """No Analytics API rows, no telemetry figures and no tool decisions in the period."""
    sources = report["sources"]
    return not (sources["analytics_rows"] or sources.get("telemetry_rows") or sources["tool_decision_records"])
