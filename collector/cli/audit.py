"""``ccbridge audit export`` and ``ccbridge audit verify``: the audit store, read-only."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from collector import csvsafe
from collector.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    Failure,
    add_format_option,
    add_store_options,
    add_time_options,
    add_tool_filters,
    add_user_filter,
    data_dir,
    deferred_stdout,
    register_parser,
    require_store,
    time_range,
)


def register(sub: Any) -> None:
    from collector.processing.normalize import KINDS

    audit = register_parser(sub, "audit", help="the audit store: export records, verify the tamper-evidence chain")
    cmds = audit.add_subparsers(dest="audit_command", required=True, metavar="{export,verify}")

    ex = register_parser(cmds, "export", help="stream stored audit records to stdout (JSON lines or CSV)")
    add_store_options(ex)
    add_time_options(ex)
    ex.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        metavar="KIND",
        help=f"record kind, repeatable; one of: {', '.join(KINDS)}",
    )
    add_user_filter(ex)
    ex.add_argument("--session", metavar="ID", help="only this session id")
    add_tool_filters(ex)
    ex.add_argument("--text", metavar="TEXT", help="only records whose command or file path contains TEXT (any case)")
    add_format_option(ex, ("jsonl", "csv"), "jsonl")
    ex.set_defaults(func=cmd_audit_export)

    ver = register_parser(cmds, "verify", help="check the tamper-evidence chain of the store; names the first break")
    add_store_options(ver)
    ver.set_defaults(func=cmd_audit_verify)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from collector.compliance.records import CSV_COLUMNS, RecordFilter, csv_row, filtered
    from collector.store import RecordQuery, StorageError, iter_records

    period = time_range(args)
    directory = require_store(data_dir(args))
    q = RecordQuery(
        since_ms=period.since_ms,
        until_ms=period.until_ms,
        kinds=tuple(args.kind or ()),
        session=args.session,
    )
    flt = RecordFilter(user=args.user, tool=args.tool, decision=args.decision, mode=args.mode, text=args.text)
    n = 0
    try:
        with deferred_stdout() as out:
            rows = filtered(iter_records(directory, q), flt)
            if args.format == "jsonl":
                for body, _rec in rows:
                    out.write(body.decode())
                    out.write("\n")
                    n += 1
            else:
                writer = csvsafe.writer(out)
                writer.writerow([c for c, _ in CSV_COLUMNS])
                for body, rec in rows:
                    writer.writerow(csv_row(rec if rec is not None else orjson.loads(body)))
                    n += 1
    except StorageError as exc:
        raise Failure(f"cannot export: {exc}") from None
    why = flt.explain_empty() if n == 0 else ""
    print(f"exported {n} records" + (f"; {why}" if why else ""), file=sys.stderr)
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from collector.store import StorageError, open_reader

    directory = require_store(data_dir(args))
    try:
        report = open_reader(directory).verify_chain()
    except (StorageError, OSError) as exc:
        raise Failure(f"cannot verify: {exc}") from None
    if report.broken is not None:
        b = report.broken
        t = datetime.fromtimestamp(b.time_ms / 1000, UTC).isoformat(timespec="milliseconds")
        print(
            f"CHAIN BROKEN in shard {b.shard} at record seq {b.seq} (id {b.record_id}, time {t}): {b.reason}. "
            f"{report.records} records checked."
        )
        return EXIT_FAILURE
    print(f"chain intact: {report.records} records in {report.shards} shard(s)")
    for shard, (seq, head) in sorted(report.head.items()):
        print(f"  shard {shard}: head seq {seq} hash {head}")
    return EXIT_OK
