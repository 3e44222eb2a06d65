"""``ccbridge dlq list|show|replay``: dead letters, records a destination refused."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from collector.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    Failure,
    UsageError,
    add_format_option,
    add_store_options,
    data_dir,
    load_config,
    register_parser,
    require_store,
)


def register(sub: Any) -> None:
    dlq = register_parser(sub, "dlq", help="dead letters: records a destination refused")
    cmds = dlq.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,replay}")
    dl_list = register_parser(cmds, "list", help="list dead letters")
    dl_show = register_parser(cmds, "show", help="show one dead letter with its record")
    dl_show.add_argument("id", help="dead-letter id as listed, e.g. 0-17")
    dl_replay = register_parser(cmds, "replay", help="re-send dead letters to their destination (uses the config)")
    for sp in (dl_list, dl_show, dl_replay):
        add_store_options(sp)
    for sp in (dl_list, dl_replay):
        sp.add_argument("--destination", metavar="NAME", help="only this destination (config key, e.g. http/siem)")
    add_format_option(dl_list, ("table", "jsonl"), "table")
    dl_list.set_defaults(func=cmd_dlq_list)
    dl_show.set_defaults(func=cmd_dlq_show)
    dl_replay.set_defaults(func=cmd_dlq_replay)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import entry_name, iso, list_entries

    entries = list_entries(require_store(data_dir(args)), args.destination)
    if args.format == "jsonl":
        for shard, dl in entries:
            doc = {
                "id": entry_name(shard, dl),
                "destination": dl.destination,
                "record_id": dl.record_id,
                "record_time": iso(dl.time_ms),
                "failed_at": iso(dl.failed_ms),
                "reason": dl.reason,
                "status": dl.status,
                "attempts": dl.attempts,
            }
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        print(f"{'ID':<10} {'DESTINATION':<20} {'FAILED AT':<25} {'STATUS':<6} REASON")
        for shard, dl in entries:
            status = "" if dl.status is None else str(dl.status)
            reason = dl.reason if len(dl.reason) <= 100 else dl.reason[:97] + "..."
            print(f"{entry_name(shard, dl):<10} {dl.destination:<20} {iso(dl.failed_ms):<25} {status:<6} {reason}")
    print(f"{len(entries)} dead letter(s)", file=sys.stderr)
    return EXIT_OK


def cmd_dlq_show(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import find_entry, iso

    try:
        found = find_entry(require_store(data_dir(args)), args.id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if found is None:
        raise Failure(f"no dead letter {args.id}")
    _shard, dl = found
    doc = {
        "id": args.id,
        "destination": dl.destination,
        "failed_at": iso(dl.failed_ms),
        "reason": dl.reason,
        "status": dl.status,
        "attempts": dl.attempts,
        "record": orjson.loads(dl.body),
    }
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import replay
    from collector.telemetry.logs import setup_logging

    setup_logging("warning")
    cfg = load_config(args, read_only=False)
    require_store(cfg.data_dir)
    if args.destination and args.destination not in cfg.exporters:
        known = ", ".join(sorted(cfg.exporters)) or "none configured"
        raise UsageError(f"destination {args.destination!r} is not in the configuration (known: {known})")
    result = asyncio.run(replay(cfg, args.destination))
    print(f"replayed: {result.delivered} delivered, {result.failed} still failing")
    for name in result.skipped_destinations:
        print(f"skipped dead letters of {name}: not in the configuration", file=sys.stderr)
    return EXIT_OK if result.failed == 0 and not result.skipped_destinations else EXIT_FAILURE
