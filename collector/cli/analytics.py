"""``ccbridge analytics sync``: fetch the Claude Code Analytics API's daily usage into the local history."""

from __future__ import annotations

import argparse
from typing import Any

from collector.cli.common import add_store_options, add_time_options, load_config, register_parser, time_range


def register(sub: Any) -> None:
    analytics = register_parser(sub, "analytics", help="Claude Code Analytics API")
    cmds = analytics.add_subparsers(dest="analytics_command", required=True, metavar="{sync}")
    sync = register_parser(
        cmds,
        "sync",
        help="fetch daily usage into the local history (backfill or refresh)",
        description="Fetch daily usage into the local history. Without --since: the last 90 days; without "
        "--until: up to and including today.",
    )
    add_store_options(sync)
    add_time_options(sync, what="days")
    sync.set_defaults(func=cmd_analytics_sync)


def cmd_analytics_sync(args: argparse.Namespace) -> int:
    from collector.cli.run import lock_data_dir
    from collector.configtypes import ConfigError
    from collector.enrich.sync import run_sync_cli

    time_range(args)  # a reversed range is a usage error, named the same way everywhere
    since = args.since[0] if args.since else None
    until = args.until[0] if args.until else None
    try:
        directory = load_config(args, read_only=True).storage.directory
    except ConfigError:
        return run_sync_cli(args.config, args.data_dir, since, until)  # reports it in its own words
    lock = lock_data_dir(directory, "sync analytics")
    try:
        return run_sync_cli(args.config, args.data_dir, since, until)
    finally:
        lock.release()
