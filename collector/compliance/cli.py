"""``ccbridge approvals export``: the approval trail as CSV or JSON lines, from the local store or from Splunk."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from collector.compliance.approvals import (
    DECISIONS,
    DEFAULT_RESULT_GRACE_MS,
    MODES,
    ApprovalFilter,
    JoinStats,
    grouped_by_session,
    join,
    store_rows,
    write_rows,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def register(sub: Any, parse_time: Any, data_dir: Callable[[argparse.Namespace], str]) -> None:
    """Add ``approvals export`` to the top-level sub-command parser (``parse_time`` parses --since/--until,
    ``data_dir`` resolves --data-dir / --config as every command does; passed in so this module never imports the
    top-level CLI back)."""
    approvals = sub.add_parser("approvals", help="approval trail of tool decisions").add_subparsers(
        dest="approvals_command", required=True
    )
    ex = approvals.add_parser(
        "export",
        help="one row per tool decision: who, when, what it would do, decision, approval mode, outcome",
        description="Export the approval trail of a period. Rows are ordered by session, then time.",
    )
    ex.add_argument("--since", type=parse_time, required=True, help="inclusive start (RFC 3339, date or age)")
    ex.add_argument("--until", type=parse_time, required=True, help="exclusive end (RFC 3339, date or age)")
    ex.add_argument("--user", help="only this user (email or user.id)")
    ex.add_argument("--tool", help="only this tool name (e.g. Bash, Edit, mcp__github__create_issue)")
    ex.add_argument("--decision", choices=DECISIONS)
    ex.add_argument("--mode", choices=MODES, help="approval mode")
    ex.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    ex.add_argument("--data-dir", help="data directory of the bridge (default: from --config, else ./ccbridge-data)")
    ex.add_argument("--config", help="bridge config file (for storage.directory)")
    sp = ex.add_argument_group("reading from Splunk instead of the local store")
    sp.add_argument("--from-splunk", metavar="URL", help="Splunk management URL, e.g. https://splunk.example:8089")
    sp.add_argument("--splunk-token-env", metavar="VAR", help="environment variable holding a Splunk auth token")
    sp.add_argument("--splunk-username-env", metavar="VAR", help="environment variable holding the username")
    sp.add_argument("--splunk-password-env", metavar="VAR", help="environment variable holding the password")
    sp.add_argument("--index", default="*", help="index the audit records are in (default: *)")
    sp.add_argument("--sourcetype", default="claude:code:audit", help="sourcetype of the audit records")
    sp.add_argument("--splunk-ca-file", help="PEM bundle to verify Splunk's certificate with")
    sp.add_argument("--splunk-insecure", action="store_true", help="do not verify Splunk's certificate (tests only)")
    ex.set_defaults(func=cmd_approvals_export, data_dir_of=data_dir)


def _env(name: str | None, what: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise _Usage(f"environment variable {name} ({what}) is not set")
    return value


class _Usage(Exception):
    pass


def cmd_approvals_export(args: argparse.Namespace) -> int:
    from collector.store.api import StorageError

    since_ms = int(args.since.timestamp() * 1000)
    until_ms = int(args.until.timestamp() * 1000)
    if until_ms <= since_ms:
        print("--until must be after --since", file=sys.stderr)
        return EXIT_USAGE
    flt = ApprovalFilter(since_ms, until_ms, args.user, args.tool, args.decision, args.mode)
    stats = JoinStats()
    try:
        if args.from_splunk:
            rows = _splunk_rows(args, flt, stats)
        else:
            if any((args.splunk_token_env, args.splunk_username_env, args.splunk_password_env)):
                raise _Usage("--splunk-* options need --from-splunk URL")
            rows = store_rows(args.data_dir_of(args), flt, stats=stats)
        n = write_rows(rows, sys.stdout, args.format)
    except _Usage as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except StorageError as exc:
        print(f"cannot export: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        from collector.compliance.splunk import SplunkError

        if isinstance(exc, SplunkError | ValueError):
            print(f"cannot export: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise
    o = stats.outcomes
    print(
        f"exported {n} decision(s) from {stats.sessions} session(s): {o['success']} succeeded, {o['failure']} failed, "
        f"{o['not_executed']} rejected (not executed), {o['unknown']} without a recorded result",
        file=sys.stderr,
    )
    if stats.evicted:
        print(
            f"note: {stats.evicted} row(s) were written before their session ended (very large sessions)",
            file=sys.stderr,
        )
    return EXIT_OK


def _splunk_rows(args: argparse.Namespace, flt: ApprovalFilter, stats: JoinStats) -> Any:
    from collector.compliance.splunk import SplunkTarget, splunk_records

    token = _env(args.splunk_token_env, "Splunk token")
    username = _env(args.splunk_username_env, "Splunk username")
    password = _env(args.splunk_password_env, "Splunk password")
    if token is None and (username is None or password is None):
        raise _Usage("--from-splunk needs --splunk-token-env VAR, or --splunk-username-env and --splunk-password-env")
    target = SplunkTarget(
        url=args.from_splunk,
        token=token,
        username=username,
        password=password,
        index=args.index,
        sourcetype=args.sourcetype,
        ca_file=args.splunk_ca_file,
        insecure=args.splunk_insecure,
    )
    records = splunk_records(target, flt, DEFAULT_RESULT_GRACE_MS)
    return join(grouped_by_session(records), flt, stats=stats)
