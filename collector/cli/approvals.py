"""``ccbridge approvals export``: the approval trail as CSV or JSON lines, from the local store or from Splunk."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from collector.cli.common import (
    EXIT_OK,
    Failure,
    UsageError,
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
    approvals = register_parser(sub, "approvals", help="approval trail of tool decisions")
    cmds = approvals.add_subparsers(dest="approvals_command", required=True, metavar="{export}")
    ex = register_parser(
        cmds,
        "export",
        help="one row per tool decision: who, when, what it would do, decision, approval mode, outcome",
        description="Export the approval trail of a period. Rows are ordered by session, then time "
        "(--sort time: by time over all sessions).",
    )
    add_time_options(ex, required=True, what="decisions")
    add_user_filter(ex)
    add_tool_filters(ex)
    ex.add_argument("--text", metavar="TEXT", help="only rows whose command or file path contains TEXT (any case)")
    ex.add_argument(
        "--sort",
        choices=("session", "time"),
        default="session",
        help="row order: by session then time (streams), or by time over all sessions (holds the rows in memory)",
    )
    add_format_option(ex, ("csv", "jsonl"), "csv")
    add_store_options(ex)
    sp = ex.add_argument_group("reading from Splunk instead of the local store")
    sp.add_argument("--from-splunk", metavar="URL", help="Splunk management URL, e.g. https://splunk.example:8089")
    sp.add_argument("--splunk-token-env", metavar="VAR", help="environment variable holding a Splunk auth token")
    sp.add_argument("--splunk-username-env", metavar="VAR", help="environment variable holding the username")
    sp.add_argument("--splunk-password-env", metavar="VAR", help="environment variable holding the password")
    sp.add_argument("--index", default="*", help="index the audit records are in")
    sp.add_argument("--sourcetype", default="claude:code:audit", help="sourcetype of the audit records")
    sp.add_argument("--splunk-ca-file", metavar="FILE", help="PEM bundle to verify Splunk's certificate with")
    sp.add_argument("--splunk-insecure", action="store_true", help="do not verify Splunk's certificate (tests only)")
    ex.set_defaults(func=cmd_approvals_export)


def _env(name: str | None, what: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"environment variable {name} ({what}) is not set")
    return value


def cmd_approvals_export(args: argparse.Namespace) -> int:
    from collector.compliance.approvals import ApprovalFilter, JoinStats, sorted_by_time, store_rows, write_rows
    from collector.compliance.splunk import SplunkError
    from collector.store import StorageError

    period = time_range(args)
    assert period.since_ms is not None and period.until_ms is not None  # both required
    flt = ApprovalFilter(
        period.since_ms, period.until_ms, args.user, args.tool, args.decision, args.mode, args.text or None
    )
    stats = JoinStats()
    if args.from_splunk:
        rows = _splunk_rows(args, flt, stats)
    else:
        if any((args.splunk_token_env, args.splunk_username_env, args.splunk_password_env)):
            raise UsageError("--splunk-* options need --from-splunk URL")
        rows = store_rows(require_store(data_dir(args)), flt, stats=stats)
    if args.sort == "time":
        rows = sorted_by_time(rows)
    try:
        with deferred_stdout() as out:
            n = write_rows(rows, out, args.format)
    except (StorageError, SplunkError, ValueError) as exc:
        raise Failure(f"cannot export: {exc}") from None
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


def _splunk_rows(args: argparse.Namespace, flt: Any, stats: Any) -> Any:
    from collector.compliance.approvals import DEFAULT_RESULT_GRACE_MS, grouped_by_session, join
    from collector.compliance.splunk import SplunkTarget, splunk_records

    token = _env(args.splunk_token_env, "Splunk token")
    username = _env(args.splunk_username_env, "Splunk username")
    password = _env(args.splunk_password_env, "Splunk password")
    if token is None and (username is None or password is None):
        raise UsageError(
            "--from-splunk needs --splunk-token-env VAR, or --splunk-username-env and --splunk-password-env"
        )
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
