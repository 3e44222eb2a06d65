"""Prometheus gauges from the Analytics API history, for dashboards and alerting (primary worker only).

A custom collector: figures are computed in the background (after each sync and every ``refresh_interval``) and
:meth:`AnalyticsGauges.collect` only yields the prepared metric families, so a scrape never touches the disk.

Exposed, when the history has at least one day (the *latest synced day*, possibly today, which is partial):

``claude_code_tool_rejection_rate{scope="org",window="1d"}``
    Edit-tool rejection rate of the latest day: rejected / (accepted + rejected), all actors.
``claude_code_tool_rejection_rate{scope="org",window="<N>d"}``
    Pooled rate over the ``reports.anomaly.window_days`` days before it (the baseline period).
``claude_code_tool_rejection_rate_threshold{scope="org"}``
    The anomaly threshold for the latest day (mean + max(k * stddev, min_increase) of the baseline's daily rates);
    absent while the baseline is too thin.
``claude_code_tool_rejection_rate_anomaly{scope="org"}``
    1 when the latest day is anomalous (:mod:`collector.reports.anomaly`), else 0 (always present).
``claude_code_analytics_cost_usd``, ``_commits``, ``_pull_requests``, ``_sessions``
    Organization totals of the latest day (all actors).
``claude_code_analytics_users{tier}``
    Users per adoption tier over the 7 days ending on the latest day.
``claude_code_analytics_report_timestamp_seconds``
    When the latest day's figures were fetched from the API (alert when it is older than a few sync intervals).

With ``reports.metrics.per_user`` the rate, threshold and anomaly gauges are also exposed with
``scope="user",user="<email>"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.reports.anomaly import RateCheck, check_day, rejection_rate
from collector.reports.compute import TIERS, USER_ACTOR, classify_tier, decision_series
from collector.reports.config import ReportsConfig
from collector.store.usage import ActorDay, UsageStore
from collector.telemetry.server import attach_collector, detach_collector

TIER_WINDOW_DAYS = 7

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GaugeSnapshot:
    """The figures behind one exposition."""

    day: date | None = None
    fetched_at: float | None = None
    org: RateCheck | None = None
    baseline_rate: float | None = None
    users: tuple[tuple[str, RateCheck], ...] = ()
    cost_usd: float = 0.0
    commits: int = 0
    pull_requests: int = 0
    sessions: int = 0
    tiers: tuple[tuple[str, int], ...] = ()


def compute_snapshot(
    rows: Sequence[ActorDay], day: date | None, cfg: ReportsConfig, *, fetched_at: float | None = None
) -> GaugeSnapshot:
    """The gauges' figures for latest day ``day`` from ``rows`` covering at least its baseline and tier window."""
    if day is None:
        return GaugeSnapshot()
    window = cfg.anomaly.window_days
    org_series, user_series = decision_series(rows)
    org_check = check_day(org_series, day, cfg.anomaly)
    accepted = rejected = 0
    for back in range(1, window + 1):
        a, r = org_series.get(day - timedelta(days=back), (0, 0))
        accepted += a
        rejected += r
    latest = [r for r in rows if r.day == day]
    tier_since = day - timedelta(days=TIER_WINDOW_DAYS - 1)
    week: dict[str, list[int]] = {}
    for row in rows:
        if row.actor_type == USER_ACTOR and tier_since <= row.day <= day:
            sums = week.setdefault(row.actor_id, [0, 0, 0, 0])
            sums[0] += row.sessions
            sums[1] += row.lines_added
            sums[2] += row.edit_accepted
            sums[3] += row.edit_rejected
    weeks = TIER_WINDOW_DAYS / 7
    tiers = dict.fromkeys(TIERS, 0)
    for sessions, lines, acc, rej in week.values():
        rate = acc / (acc + rej) if acc + rej else None
        tiers[classify_tier(sessions / weeks, lines / weeks, rate, cfg.tiers)] += 1
    per_user: list[tuple[str, RateCheck]] = []
    if cfg.metrics.per_user:
        emails = sorted({r.actor_id for r in latest if r.actor_type == USER_ACTOR})
        per_user = [(e, check_day(user_series.get(e, {}), day, cfg.anomaly)) for e in emails]
    return GaugeSnapshot(
        day=day,
        fetched_at=fetched_at,
        org=org_check,
        baseline_rate=rejection_rate(accepted, rejected),
        users=tuple(per_user),
        cost_usd=float(sum((r.cost_cents for r in latest), Decimal(0)) / 100),
        commits=sum(r.commits for r in latest),
        pull_requests=sum(r.pull_requests for r in latest),
        sessions=sum(r.sessions for r in latest),
        tiers=tuple(tiers.items()),
    )


def families(snapshot: GaugeSnapshot, cfg: ReportsConfig) -> list[Metric]:
    """The metric families of ``snapshot`` (see the module docstring)."""
    anomaly = GaugeMetricFamily(
        "claude_code_tool_rejection_rate_anomaly",
        "1 when the latest synced day's edit-tool rejection rate is far above its trailing baseline, else 0.",
        labels=["scope", "user"] if cfg.metrics.per_user else ["scope"],
    )
    out: list[Metric] = [anomaly]
    if snapshot.day is None or snapshot.org is None:
        anomaly.add_metric(["org", ""] if cfg.metrics.per_user else ["org"], 0)
        return out
    per_user = cfg.metrics.per_user
    rate = GaugeMetricFamily(
        "claude_code_tool_rejection_rate",
        "Edit-tool rejection rate (Analytics API): window=1d is the latest synced day, window=<N>d the N days "
        "before it.",
        labels=["scope", "window", "user"] if per_user else ["scope", "window"],
    )
    threshold = GaugeMetricFamily(
        "claude_code_tool_rejection_rate_threshold",
        "Anomaly threshold of the latest synced day: trailing mean + max(k * stddev, min_increase).",
        labels=["scope", "user"] if per_user else ["scope"],
    )
    window = f"{cfg.anomaly.window_days}d"

    def add(scope: str, user: str, check: RateCheck, baseline: float | None) -> None:
        extra = [user] if per_user else []
        anomaly.add_metric([scope, *extra], 1 if check.anomalous else 0)
        if check.rate is not None:
            rate.add_metric([scope, "1d", *extra], check.rate)
        if baseline is not None:
            rate.add_metric([scope, window, *extra], baseline)
        if check.evaluated and check.threshold is not None:
            threshold.add_metric([scope, *extra], check.threshold)

    add("org", "", snapshot.org, snapshot.baseline_rate)
    for email, check in snapshot.users:
        add("user", email, check, None)
    out += [rate, threshold]
    day_help = "latest synced day, all actors"
    for name, value, what in (
        ("claude_code_analytics_cost_usd", snapshot.cost_usd, "Estimated cost in USD"),
        ("claude_code_analytics_commits", snapshot.commits, "Commits made with Claude Code"),
        ("claude_code_analytics_pull_requests", snapshot.pull_requests, "Pull requests created with Claude Code"),
        ("claude_code_analytics_sessions", snapshot.sessions, "Claude Code sessions"),
    ):
        out.append(GaugeMetricFamily(name, f"{what} on the {day_help}.", value=value))
    users = GaugeMetricFamily(
        "claude_code_analytics_users",
        f"Users per adoption tier over the {TIER_WINDOW_DAYS} days ending on the latest synced day.",
        labels=["tier"],
    )
    for tier, count in snapshot.tiers:
        users.add_metric([tier], count)
    out.append(users)
    out.append(
        GaugeMetricFamily(
            "claude_code_analytics_report_timestamp_seconds",
            "Unix time when the latest synced day's figures were fetched from the Analytics API.",
            value=snapshot.fetched_at if snapshot.fetched_at is not None else 0.0,
        )
    )
    return out


class AnalyticsGauges(Collector):
    """The collector; :meth:`register` it on the self-metrics registry, then :meth:`start` it."""

    def __init__(self, store: UsageStore, cfg: ReportsConfig, *, refresh_interval: float = 60.0) -> None:
        self._store = store
        self._cfg = cfg
        self.refresh_interval = refresh_interval
        self._families: list[Metric] = families(GaugeSnapshot(), cfg)
        self.snapshot = GaugeSnapshot()
        self._marker: tuple[object, ...] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.refreshes = 0

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    def describe(self) -> Iterable[Metric]:
        return []

    def register(self, registry: CollectorRegistry) -> None:
        """Register on ``registry`` and list on its ``_ccbridge_extra`` (merged into multi-worker scrapes)."""
        attach_collector(registry, self)

    def refresh_now(self) -> GaugeSnapshot:
        """Recompute from the store (blocking; run it in a thread from async code). Nothing is recomputed while
        no day was written and the UTC date is the same as at the last refresh."""
        today = datetime.now(UTC).date()
        marker = (today, self._store.data_marker())
        if marker == self._marker:
            return self.snapshot
        day = self._store.latest_day(as_of=today)
        if day is None:
            snapshot = GaugeSnapshot()
        else:
            since = day - timedelta(days=max(self._cfg.anomaly.window_days, TIER_WINDOW_DAYS - 1))
            state = self._store.day_state(day)
            fetched = state.fetched_at.timestamp() if state is not None else None
            snapshot = compute_snapshot(self._store.actor_days(since, day), day, self._cfg, fetched_at=fetched)
        self.snapshot = snapshot
        self._families = families(snapshot, self._cfg)
        self._marker = marker
        self.refreshes += 1
        return snapshot

    def request_refresh(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        await asyncio.to_thread(self.refresh_now)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="analytics-gauges")

    async def _run(self) -> None:
        while not self._stopping:
            deadline = time.monotonic() + self.refresh_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                return
            try:
                await asyncio.to_thread(self.refresh_now)
            except Exception:
                log.exception("analytics gauges: refresh failed; keeping the previous figures")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)


def unregister(gauges: AnalyticsGauges, registry: CollectorRegistry) -> None:
    """Undo :meth:`AnalyticsGauges.register`."""
    detach_collector(registry, gauges)
