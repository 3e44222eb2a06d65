"""``ccbridge dlq list|show|replay|purge``: dead letters, records a destination refused."""

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
    cmds = dlq.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,replay,purge}")
    dl_list = register_parser(cmds, "list", help="list dead letters, one line per batch and reason")
    dl_show = register_parser(cmds, "show", help="show one dead letter with its record")
    dl_show.add_argument("id", help="dead-letter id as listed, e.g. 0-17")
    dl_replay = register_parser(cmds, "replay", help="re-send dead letters to their destination (uses the config)")
    dl_replay.add_argument(
        "--wait",
        default="60s",
        metavar="DURATION",
        help="give up on a destination that keeps failing (timeouts, 429, 5xx) after this long",
    )
    dl_purge = register_parser(
        cmds, "purge", help="delete dead letters by destination and/or age; prints what it removed"
    )
    dl_purge.add_argument(
        "--older-than", metavar="AGE", help="only entries that failed longer ago than this, e.g. 7d, 12h"
    )
    dl_purge.add_argument("--all", action="store_true", help="every dead letter (when no other filter is given)")
    for sp in (dl_list, dl_show, dl_replay, dl_purge):
        add_store_options(sp)
    for sp in (dl_list, dl_replay, dl_purge):
        sp.add_argument("--destination", metavar="NAME", help="only this destination (config key, e.g. http/siem)")
    add_format_option(dl_list, ("table", "jsonl"), "table")
    dl_purge.set_defaults(func=cmd_dlq_purge)
    dl_list.set_defaults(func=cmd_dlq_list)
    dl_show.set_defaults(func=cmd_dlq_show)
    dl_replay.set_defaults(func=cmd_dlq_replay)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """``table``: one line per batch and reason; ``jsonl``: one line per entry."""
    from collector.delivery.dlq import entry_name, iso, list_entries, list_groups

    directory = require_store(data_dir(args))
    if args.format == "jsonl":
        entries = list_entries(directory, args.destination)
        for shard, dl in entries:
            doc = {
                "id": entry_name(shard, dl),
                "destination": dl.destination,
                "batch": f"shard {shard} {dl.batch}".strip(),
                "record_id": dl.record_id,
                "record_time": iso(dl.time_ms),
                "failed_at": iso(dl.failed_ms),
                "reason": dl.reason,
                "status": dl.status,
                "attempts": dl.attempts,
            }
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        print(f"{len(entries)} dead letter(s)", file=sys.stderr)
        return EXIT_OK
    groups = list_groups(directory, args.destination)
    print(f"{'IDS':<16} {'COUNT':>6} {'DESTINATION':<20} {'BATCH':<22} {'LAST FAILED':<25} {'STATUS':<6} REASON")
    for shard, g in groups:
        ids = f"{shard}-{g.first_id}" + (f"..{g.last_id}" if g.last_id != g.first_id else "")
        batch = f"shard {shard} {g.batch}".strip()
        status = "" if g.status is None else str(g.status)
        reason = g.reason if len(g.reason) <= 100 else g.reason[:97] + "..."
        print(
            f"{ids:<16} {g.count:>6} {g.destination:<20} {batch:<22} {iso(g.last_failed_ms):<25} {status:<6} {reason}"
        )
    total = sum(g.count for _, g in groups)
    print(f"{total} dead letter(s) in {len(groups)} group(s) (by batch and reason)", file=sys.stderr)
    return EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    from collector.configtypes import ConfigError, parse_duration
    from collector.delivery.dlq import iso, purge

    if args.destination is None and args.older_than is None and not args.all:
        raise UsageError("name what to remove: --destination, --older-than, or --all")
    try:
        older_than = None if args.older_than is None else float(parse_duration(args.older_than))
    except ConfigError:
        raise UsageError(f"--older-than: invalid duration {args.older_than!r} (use e.g. 12h, 7d)") from None
    result = purge(require_store(data_dir(args)), args.destination, older_than)
    for shard, g in result.groups:
        print(
            f"removed {g.count} from {g.destination} (shard {shard} {g.batch}, last failed "
            f"{iso(g.last_failed_ms)}): {g.reason}"
        )
    print(f"purged: {result.removed} dead letter(s)")
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
    from collector.cli.run import lock_data_dir
    from collector.configtypes import ConfigError, parse_duration
    from collector.delivery.dlq import replay
    from collector.telemetry.logs import setup_logging

    setup_logging("warning")
    cfg = load_config(args, read_only=False)
    require_store(cfg.data_dir)
    if args.destination and args.destination not in cfg.exporters:
        known = ", ".join(sorted(cfg.exporters)) or "none configured"
        raise UsageError(f"destination {args.destination!r} is not in the configuration (known: {known})")
    try:
        wait = float(parse_duration(args.wait))
    except ConfigError:
        raise UsageError(f"--wait: invalid duration {args.wait!r} (use e.g. 30s, 5m)") from None
    lock = lock_data_dir(cfg.storage.directory, "replay dead letters")
    try:
        result = asyncio.run(replay(cfg, args.destination, wait))
    finally:
        lock.release()
    print(f"replayed: {result.delivered} delivered, {result.failed} still failing")
    for name in result.skipped_destinations:
        print(f"skipped dead letters of {name}: not in the configuration", file=sys.stderr)
    for name in result.unreachable:
        print(f"gave up on {name}: still failing after --wait {args.wait}; its entries stay", file=sys.stderr)
    return EXIT_OK if result.failed == 0 and not result.skipped_destinations else EXIT_FAILURE
