"""``ccbridge report [completeness]``: usage, adoption tiers and anomalies, or telemetry completeness."""

from __future__ import annotations

import argparse
from typing import Any

from collector.cli.common import add_format_option, add_store_options, add_time_options, register_parser, time_range


def register(sub: Any) -> None:
    from collector.reports.render import FORMATS

    rep = register_parser(
        sub,
        "report",
        help="usage, adoption tiers and anomalies, or completeness (docs/reports.md)",
        description="Usage, adoption tiers and anomalies over whole UTC days (default: the last complete week), "
        "or, with 'completeness', telemetry against the Analytics API.",
    )
    rep.add_argument(
        "view",
        nargs="?",
        choices=("completeness",),
        help="completeness: telemetry vs the Analytics API (default: the usage report)",
    )
    add_store_options(rep)
    add_time_options(rep, what="days")
    add_format_option(rep, tuple(FORMATS), "table")
    rep.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from collector.reports.run import run_report

    time_range(args)
    return run_report(
        view=args.view,
        config_path=args.config,
        data_dir=args.data_dir,
        since=args.since[0] if args.since else None,
        until=args.until[0] if args.until else None,
        fmt=args.format,
    )
