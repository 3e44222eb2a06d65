"""The usage and completeness reports of ``ccbridge report`` (options parsed in :mod:`collector.cli.report`).

The period is whole UTC days: ``--since`` starts the first day, ``--until`` (exclusive, like every ``--until``)
ends it, in the time grammar of :mod:`collector.timeparse` (dates, RFC 3339, ages such as ``7d``, today,
yesterday). Period defaults: the last day is today without an Analytics API history (telemetry is live), else the
last complete UTC day (yesterday), or the latest day of the Analytics API history when that is older (a history
that stopped syncing still yields its last week); the first day is six days before the last (a week). When only
``--since`` is given and it is later than that default, the last day is today.

Figures come from the Analytics API on the days it covers and from telemetry (``api_request`` records, metric
points, sessions) on the others; the report says which days came from which.

Exit codes: 0 (also when the period has no data: a message says so), 1 when there is no store at all or a store
cannot be read, 2 for bad options or configuration.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from collector import timeparse
from collector.configtypes import ConfigError
from collector.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from collector.reports import completeness, compute, render, sources
from collector.reports.config import ReportsConfig
from collector.store import has_store, has_usage_history
from collector.store.api import StorageError
from collector.store.usage import USAGE_ERRORS

PROG = "ccbridge report"
MAX_DAYS = 3660


def _parse(value: str, option: str, today: date) -> datetime:
    now = datetime.now(UTC)
    try:
        return timeparse.parse_time(value, now=datetime.combine(today, now.time(), UTC))
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def resolve_period(since: str | None, until: str | None, *, today: date, latest: date | None) -> compute.Period:
    """The report period (inclusive first and last UTC day) from the options, in the one time grammar of
    :mod:`collector.timeparse` (``--until`` exclusive), and the defaults in the module docstring."""
    since_dt = _parse(since, "--since", today) if since is not None else None
    until_dt = _parse(until, "--until", today) if until is not None else None
    if since_dt is not None and until_dt is not None and until_dt <= since_dt:
        raise ConfigError(f"--since {since} is not before --until {until} (--until is exclusive)")
    since_day = timeparse.first_day(since_dt) if since_dt is not None else None
    until_day = timeparse.last_day(until_dt) if until_dt is not None else None
    if until_day is None:
        # without an Analytics API history the figures are telemetry's, which is live: include today
        until_day = today - timedelta(days=1) if latest is not None else today
        if latest is not None and latest < until_day:
            until_day = latest
        if since_day is not None and since_day > until_day:
            until_day = today
    if since_day is None:
        since_day = until_day - timedelta(days=6)
    if since_day > until_day:
        raise ConfigError(f"--since {since_day} is after the last day of --until {until} ({until_day})")
    if (until_day - since_day).days + 1 > MAX_DAYS:
        raise ConfigError(f"--since/--until: at most {MAX_DAYS} days per report")
    return compute.Period(since_day, until_day)


def has_data(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an audit store or an Analytics API history."""
    return has_store(data_dir) or has_usage_history(data_dir)


def build_usage(data_dir: Path, period: compute.Period, cfg: ReportsConfig) -> dict[str, Any]:
    baseline_since = period.since - timedelta(days=cfg.anomaly.window_days)
    history = sources.read_analytics(data_dir, baseline_since, period.until)
    decisions = sources.load_tool_decisions(data_dir, period, history.identities)
    synced = set(history.days) | {r.day for r in history.rows}
    telemetry = sources.telemetry_usage_rows(data_dir, period, history.identities, synced)
    return compute.build_usage_report(period, [*history.rows, *telemetry], decisions, cfg)


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


def _empty_message(view: str, period: compute.Period, data_dir: Path) -> str:
    span = f"{period.since}..{period.until}"
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
        cfg = config_module.load(config_path, sections=config_module.READ_ONLY_SECTIONS)
        directory = Path(data_dir) if data_dir else cfg.data_dir
        if not has_data(directory):
            print(f"{name}: no store under {directory} (start the bridge with this data directory)", file=err)
            return EXIT_FAILURE
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
