"""Loading report inputs: the Analytics API history (``analytics.db``) and the audit store (records, metric points).

Everything is read-only except that opening ``analytics.db`` upgrades an older schema in place. Days are UTC
calendar days, like the Analytics API's; a record or metric point belongs to the day of its event time.

Identity: telemetry is matched to the Analytics API by e-mail. A record or point without ``user.email`` (or an
``enduser.id`` that is an e-mail) is attributed through the ``identity_map`` the enricher learned
(``user.account_uuid`` first, then ``user.id``); what still has no e-mail is counted as *unattributed*.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson

from collector.enrich.analytics_client import DailyUsage
from collector.reports import compute
from collector.reports.compute import DecisionTallies, Period
from collector.store import RecordQuery, StorageError, existing_usage_history, iter_records, open_reader
from collector.store.usage import DayState

LINES_METRIC = "claude_code.lines_of_code.count"
COMMIT_METRIC = "claude_code.commit.count"
PULL_REQUEST_METRIC = "claude_code.pull_request.count"
COUNTED_METRICS = (LINES_METRIC, COMMIT_METRIC, PULL_REQUEST_METRIC)


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, time.min, tzinfo=UTC).timestamp() * 1000)


def day_of_ms(time_ms: int) -> date:
    return datetime.fromtimestamp(time_ms / 1000, UTC).date()


def period_bounds_ms(period: Period) -> tuple[int, int]:
    """``[start of since, start of the day after until)`` in Unix milliseconds."""
    return day_start_ms(period.since), day_start_ms(period.until + timedelta(days=1))


@dataclass
class Identities:
    """``user.account_uuid`` / ``user.id`` -> e-mail, from ``analytics.db``'s ``identity_map``."""

    by_account: dict[str, str] = field(default_factory=dict)
    by_user_id: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_store(cls, mapping: Mapping[tuple[str, str], str]) -> Identities:
        ids = cls()
        for (kind, value), email in mapping.items():
            (ids.by_account if kind == "account_uuid" else ids.by_user_id)[value] = email
        return ids

    def lookup(self, account_uuid: object, user_id: object) -> str | None:
        if isinstance(account_uuid, str) and account_uuid in self.by_account:
            return self.by_account[account_uuid]
        if isinstance(user_id, str):
            return self.by_user_id.get(user_id)
        return None

    def of_record(self, rec: Mapping[str, Any]) -> str | None:
        """The e-mail of an audit record: ``user.email``, else learned from its account or installation id."""
        user = rec.get("user")
        if not isinstance(user, dict):
            return None
        email = user.get("email")
        if isinstance(email, str) and email:
            return email
        return self.lookup(user.get("account_uuid"), user.get("id"))

    def of_attributes(self, attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> str | None:
        """The e-mail of a metric point from its attributes (then resource): ``user.email``, ``enduser.id``, ids."""
        for source in (attrs, resource):
            email = source.get("user.email")
            if isinstance(email, str) and email:
                return email
        for source in (attrs, resource):
            enduser = source.get("enduser.id")
            if isinstance(enduser, str) and "@" in enduser:
                return enduser
        account = attrs.get("user.account_uuid") or resource.get("user.account_uuid")
        return self.lookup(account, attrs.get("user.id") or resource.get("user.id"))


@dataclass
class AnalyticsHistory:
    """What ``analytics.db`` holds for a range of days."""

    rows: list[DailyUsage] = field(default_factory=list)
    days: dict[date, DayState] = field(default_factory=dict)
    identities: Identities = field(default_factory=Identities)
    latest_day: date | None = None
    present: bool = False


def read_analytics(data_dir: str | Path, since: date, until: date) -> AnalyticsHistory:
    """Rows and completed fetches of ``since..until``; an empty history when ``analytics.db`` does not exist."""
    history = existing_usage_history(data_dir)
    if history is None:
        return AnalyticsHistory()
    with history as store:
        return AnalyticsHistory(
            rows=store.rows(since, until),
            days=store.day_states(since, until),
            identities=Identities.from_store(store.identities()),
            latest_day=store.latest_day(),
            present=True,
        )


def latest_analytics_day(data_dir: str | Path) -> date | None:
    history = existing_usage_history(data_dir)
    if history is None:
        return None
    with history as store:
        return store.latest_day()


def _records(data_dir: str | Path, query: RecordQuery) -> Iterator[dict[str, Any]]:
    try:
        for body in iter_records(data_dir, query):
            yield orjson.loads(body)
    except StorageError as exc:
        if exc.reason != "missing":
            raise


def load_tool_decisions(data_dir: str | Path, period: Period, identities: Identities) -> DecisionTallies:
    """Count ``tool_decision`` records of the period by user e-mail and tool name."""
    since_ms, until_ms = period_bounds_ms(period)
    tallies = DecisionTallies()
    for rec in _records(data_dir, RecordQuery(since_ms=since_ms, until_ms=until_ms, kinds=("tool_decision",))):
        tool = rec.get("tool")
        if not isinstance(tool, dict):
            continue
        name = tool.get("name")
        decision = tool.get("decision")
        tallies.add(
            identities.of_record(rec),
            name if isinstance(name, str) and name else "unknown",
            decision if isinstance(decision, str) else "",
        )
    return tallies


# -- completeness: what the telemetry delivered per user and day ---------------------------------------------


@dataclass
class DayFigures:
    """One user's (or the unattributed) telemetry or Analytics API figures for one day."""

    cost_usd: float = 0.0
    tokens: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    commits: int = 0
    pull_requests: int = 0
    sessions: int = 0

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


@dataclass
class TelemetryDaily:
    """Telemetry figures per ``(email, day)``, plus per-day figures without a known e-mail."""

    by_user_day: dict[tuple[str, date], DayFigures] = field(default_factory=dict)
    unattributed: dict[date, DayFigures] = field(default_factory=dict)

    def figures(self, email: str | None, day: date) -> DayFigures:
        if email is None:
            return self.unattributed.setdefault(day, DayFigures())
        return self.by_user_day.setdefault((email, day), DayFigures())


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _metric_points(data_dir: str | Path, since_ms: int, until_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """The counted metric points of the window over all shards, each once (a point stored twice is skipped)."""
    seen: set[tuple[int, str]] = set()
    rows: list[tuple[int, str, bytes]] = []
    reader = open_reader(data_dir)
    for shard in reader.shards():
        view = reader.shard_view(shard)
        try:
            rows.extend(view.metric_points_named(COUNTED_METRICS, since_ms, until_ms))
        finally:
            view.close()
    rows.sort(key=lambda r: r[0])
    for time_ms, key, body in rows:
        if (time_ms, key) in seen:
            continue
        seen.add((time_ms, key))
        yield time_ms, orjson.loads(body)


def _add_metric_points(out: TelemetryDaily, data_dir: str | Path, period: Period, identities: Identities) -> None:
    since_ms, until_ms = period_bounds_ms(period)
    previous: dict[bytes, float] = {}
    for time_ms, point in _metric_points(data_dir, since_ms, until_ms):
        attrs = point.get("attributes") if isinstance(point.get("attributes"), dict) else {}
        resource = point.get("resource") if isinstance(point.get("resource"), dict) else {}
        value = _number(point.get("value"))
        if point.get("temporality") == "cumulative":
            series = orjson.dumps(
                (point.get("name"), attrs, resource, point.get("start_time_unix_nano")), option=orjson.OPT_SORT_KEYS
            )
            last = previous.get(series, 0.0)
            previous[series] = value
            value = value - last if value >= last else value
        figures = out.figures(identities.of_attributes(attrs, resource), day_of_ms(time_ms))
        name = point.get("name")
        if name == LINES_METRIC:
            kind = attrs.get("type")
            if kind == "added":
                figures.lines_added += round(value)
            elif kind == "removed":
                figures.lines_removed += round(value)
        elif name == COMMIT_METRIC:
            figures.commits += round(value)
        elif name == PULL_REQUEST_METRIC:
            figures.pull_requests += round(value)


def _add_sessions(out: TelemetryDaily, data_dir: str | Path, period: Period, identities: Identities) -> None:
    """Each session counts once, on the day of its first record in the period, for its user."""
    since_ms, until_ms = period_bounds_ms(period)
    sessions: dict[str, tuple[int, str | None, str | None]] = {}
    reader = open_reader(data_dir)
    for shard in reader.shards():
        view = reader.shard_view(shard)
        try:
            for session, first_ms, email, user_id in view.session_starts(since_ms, until_ms):
                known = sessions.get(session)
                if known is None:
                    sessions[session] = (first_ms, email, user_id)
                else:
                    sessions[session] = (min(first_ms, known[0]), known[1] or email, known[2] or user_id)
        finally:
            view.close()
    for first_ms, email, user_id in sessions.values():
        who = email or identities.lookup(None, user_id)
        out.figures(who, day_of_ms(first_ms)).sessions += 1


def load_telemetry_daily(data_dir: str | Path, period: Period, identities: Identities) -> TelemetryDaily:
    """Cost and tokens from ``api_request`` records, lines/commits/PRs from metric points, sessions from records."""
    out = TelemetryDaily()
    since_ms, until_ms = period_bounds_ms(period)
    for rec in _records(data_dir, RecordQuery(since_ms=since_ms, until_ms=until_ms, kinds=("api_request",))):
        stamp = rec.get("time")
        try:
            day = date.fromisoformat(stamp[:10]) if isinstance(stamp, str) else None
        except ValueError:
            day = None
        if day is None:
            continue
        figures = out.figures(identities.of_record(rec), day)
        figures.cost_usd += _number(rec.get("cost_usd"))
        tokens = rec.get("tokens")
        if isinstance(tokens, dict):
            figures.tokens += round(sum(_number(v) for v in tokens.values()))
    _add_metric_points(out, data_dir, period, identities)
    _add_sessions(out, data_dir, period, identities)
    return out


def analytics_daily(rows: list[DailyUsage]) -> dict[tuple[str, date], DayFigures]:
    """The Analytics API's figures per ``(email, day)`` (user actors; summed over terminals)."""
    out: dict[tuple[str, date], DayFigures] = {}
    for row in rows:
        if row.actor_type != "user_actor":
            continue
        figures = out.setdefault((row.actor_id, row.day), DayFigures())
        figures.cost_usd += float(row.cost_usd)
        figures.tokens += sum(
            m.input_tokens + m.output_tokens + m.cache_read_tokens + m.cache_creation_tokens for m in row.models
        )
        figures.lines_added += row.lines_added
        figures.lines_removed += row.lines_removed
        figures.commits += row.commits
        figures.pull_requests += row.pull_requests
        figures.sessions += row.num_sessions
    return out


# -- the usage report without (or beyond) the Analytics API --------------------------------------------------------


TELEMETRY_TERMINAL = compute.TELEMETRY_SOURCE


def telemetry_usage_rows(
    data_dir: str | Path, period: Period, identities: Identities, skip_days: set[date]
) -> list[DailyUsage]:
    """Daily usage rows, in the Analytics API's shape, from what telemetry alone knows, for the days of ``period``
    not in ``skip_days`` (the days the Analytics API covers): per user and day, cost and tokens per model from
    ``api_request`` records, sessions from records, lines, commits and pull requests from metric points. Figures
    without a known e-mail are left out (the completeness view counts them)."""
    from decimal import Decimal

    from collector.enrich.analytics_client import ModelUsage

    models: dict[tuple[str, date], dict[str, list[float]]] = {}
    since_ms, until_ms = period_bounds_ms(period)
    for rec in _records(data_dir, RecordQuery(since_ms=since_ms, until_ms=until_ms, kinds=("api_request",))):
        stamp = rec.get("time")
        try:
            day = date.fromisoformat(stamp[:10]) if isinstance(stamp, str) else None
        except ValueError:
            day = None
        email = identities.of_record(rec)
        if day is None or day in skip_days or email is None:
            continue
        tally = models.setdefault((email, day), {}).setdefault(str(rec.get("model") or "unknown"), [0.0] * 5)
        tokens = rec.get("tokens") if isinstance(rec.get("tokens"), dict) else {}
        tally[0] += _number(rec.get("cost_usd"))
        for i, key in enumerate(("input", "output", "cache_read", "cache_creation"), 1):
            tally[i] += _number(tokens.get(key))
    daily = TelemetryDaily()
    _add_metric_points(daily, data_dir, period, identities)
    _add_sessions(daily, data_dir, period, identities)
    keys = {k for k in daily.by_user_day if k[1] not in skip_days} | set(models)
    rows = []
    for email, day in sorted(keys, key=lambda k: (k[1], k[0])):
        f = daily.by_user_day.get((email, day), DayFigures())
        per_model = models.get((email, day), {})
        rows.append(
            DailyUsage(
                day=day,
                actor_type="user_actor",
                actor_id=email,
                terminal_type=TELEMETRY_TERMINAL,
                customer_type=TELEMETRY_TERMINAL,
                num_sessions=f.sessions,
                lines_added=f.lines_added,
                lines_removed=f.lines_removed,
                commits=f.commits,
                pull_requests=f.pull_requests,
                models=tuple(
                    ModelUsage(
                        model=name,
                        input_tokens=round(t[1]),
                        output_tokens=round(t[2]),
                        cache_read_tokens=round(t[3]),
                        cache_creation_tokens=round(t[4]),
                        cost_cents=Decimal(str(round(t[0] * 100, 6))),
                    )
                    for name, t in sorted(per_model.items())
                ),
            )
        )
    return rows
