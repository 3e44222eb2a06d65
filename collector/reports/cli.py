"""``ccbridge report [completeness|telemetry-health] [--config F] [--data-dir D] [--since DAY] [--until DAY]
[--format F]``.

Period defaults: ``--until`` is the last complete UTC day (yesterday), or the latest day of the Analytics API
history when that is older (a history that stopped syncing still yields its last week); ``--since`` is six days
before ``--until`` (a week). When only ``--since`` is given and it is later than that default, ``--until`` is
today. Exit codes: 0 (also when there is no data: a message says so), 1 when a store cannot be read, 2 for bad
options or configuration.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from collector.configtypes import ConfigError
from collector.reports import completeness, compute, health, render, sources
from collector.reports.config import ReportsConfig
from collector.store.api import StorageError
from collector.store.usage import USAGE_ERRORS

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
PROG = "ccbridge report"
MAX_DAYS = 3660


def parse_day(value: str, option: str) -> date:
    """A ``YYYY-MM-DD`` option value; :class:`ConfigError` naming ``option`` otherwise."""
    text = value.strip()
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: expected a date YYYY-MM-DD, got {value!r}") from None


def resolve_period(since: str | None, until: str | None, *, today: date, latest: date | None) -> compute.Period:
    """The report period from the options and the defaults in the module docstring."""
    since_day = parse_day(since, "--since") if since is not None else None
    until_day = parse_day(until, "--until") if until is not None else None
    if until_day is None:
        until_day = today - timedelta(days=1)
        if latest is not None and latest < until_day:
            until_day = latest
        if since_day is not None and since_day > until_day:
            until_day = today
    if since_day is None:
        since_day = until_day - timedelta(days=6)
    if since_day > until_day:
        raise ConfigError(f"--since ({since_day}) is after --until ({until_day})")
    if (until_day - since_day).days + 1 > MAX_DAYS:
        raise ConfigError(f"--since/--until: at most {MAX_DAYS} days per report")
    return compute.Period(since_day, until_day)


def build_usage(data_dir: Path, period: compute.Period, cfg: ReportsConfig) -> dict[str, Any]:
    baseline_since = period.since - timedelta(days=cfg.anomaly.window_days)
    history = sources.read_analytics(data_dir, baseline_since, period.until)
    decisions = sources.load_tool_decisions(data_dir, period, history.identities)
    return compute.build_usage_report(period, history.rows, decisions, cfg)


def build_completeness(data_dir: Path, period: compute.Period) -> dict[str, Any]:
    history = sources.read_analytics(data_dir, period.since, period.until)
    telemetry = sources.load_telemetry_daily(data_dir, period, history.identities)
    return completeness.build_completeness_report(
        period,
        telemetry.by_user_day,
        sources.analytics_daily(history.rows),
        set(history.days),
        unattributed=telemetry.unattributed,
        final_days={d for d, s in history.days.items() if s.final},
    )


def build_telemetry_health(data_dir: Path, period: compute.Period) -> dict[str, Any]:
    """Telemetry health of the period (:mod:`collector.reports.health`) over the store's records and points."""
    tracker = health.HealthTracker()
    seen: set[str] = set()
    for rec in sources.health_records(data_dir, period):
        rid = rec.get("id")
        if isinstance(rid, str):
            if rid in seen:  # stored in two shards (a retry that reached two workers): counted once
                continue
            seen.add(rid)
        tracker.observe(rec)
    since_ms, until_ms = sources.period_bounds_ms(period)
    for point in sources.claude_code_points(data_dir, since_ms, until_ms):
        tracker.observe_point(point)
    return {
        "report": "telemetry-health",
        "period": {"since": period.since.isoformat(), "until": period.until.isoformat()},
        **tracker.report(period.until),
    }


def _empty_message(view: str, period: compute.Period, data_dir: Path) -> str:
    span = f"{period.since}..{period.until}"
    if view == "telemetry-health":
        return f"{PROG} telemetry-health: no Claude Code telemetry for {span} in {data_dir}."
    if view == "completeness":
        return (
            f"{PROG} completeness: nothing to compare for {span} in {data_dir}: no day of the period has a completed "
            "Analytics API fetch, or neither source has figures. Run `ccbridge analytics sync` or pick other days "
            "with --since/--until."
        )
    return (
        f"{PROG}: no Claude Code usage data for {span} in {data_dir}: the Analytics API history has no rows for "
        "these days and the audit store has no tool decisions. Run `ccbridge analytics sync` first, or pick other "
        "days with --since/--until."
    )


def run_report(
    *,
    view: str | None,
    config_path: str | None,
    data_dir: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    today: date | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The command; see the module docstring. ``today`` (UTC) is for tests."""
    from collector import config as config_module

    out = out or sys.stdout
    err = err or sys.stderr
    name = PROG if view is None else f"{PROG} {view}"
    try:
        if fmt not in render.FORMATS:
            raise ConfigError(f"--format: must be one of {', '.join(render.FORMATS)}; got {fmt!r}")
        cfg = config_module.load(config_path)
        directory = Path(data_dir) if data_dir else cfg.data_dir
        latest = sources.latest_analytics_day(directory)
        period = resolve_period(since, until, today=today or datetime.now(UTC).date(), latest=latest)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=err)
        return EXIT_USAGE
    except USAGE_ERRORS as exc:
        print(f"{name}: cannot read the analytics history: {exc}", file=err)
        return EXIT_FAILURE
    try:
        if view == "completeness":
            report = build_completeness(directory, period)
            empty = completeness.is_empty(report)
        elif view == "telemetry-health":
            report = build_telemetry_health(directory, period)
            empty = not report["versions"]
        else:
            report = build_usage(directory, period, cfg.reports)
            empty = compute.is_empty(report)
    except (*USAGE_ERRORS, StorageError) as exc:
        print(f"{name}: cannot read {directory}: {exc}", file=err)
        return EXIT_FAILURE
    if empty:
        print(_empty_message(view or "usage", period, directory), file=err)
        return EXIT_OK
    try:
        out.write(render.render(report, fmt))
        out.flush()
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_OK
