"""``ccbridge status``: per destination its backlog, last success, last error and dead letters; per receiver what
it accepted and refused. From the running bridge's telemetry endpoint, else from the data directory."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from collector.cli.common import (
    EXIT_OK,
    Failure,
    add_format_option,
    add_store_options,
    data_dir,
    register_parser,
    require_store,
)


def register(sub: Any) -> None:
    st = register_parser(
        sub,
        "status",
        help="delivery backlog, last success and error, dead letters, receivers: from a running bridge or the store",
    )
    add_store_options(st)  # --config also names the destinations to show from the store
    st.add_argument(
        "--url",
        metavar="URL",
        help="telemetry endpoint of the running bridge (default: http://telemetry.endpoint of --config, "
        "else http://127.0.0.1:9464)",
    )
    st.add_argument("--store", action="store_true", help="read the data directory even if a bridge answers")
    add_format_option(st, ("text", "json"), "text")
    st.set_defaults(func=cmd_status)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    from collector import config as config_mod

    endpoint = config_mod.DEFAULT_TELEMETRY_ENDPOINT
    if args.config:
        endpoint = config_mod.load(args.config, sections=("storage", "telemetry")).telemetry.endpoint
    host, port = config_mod.parse_endpoint(endpoint)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def cmd_status(args: argparse.Namespace) -> int:
    from collector.telemetry.status import StatusUnavailable, fetch_status, render_text, status_from_store

    doc: dict[str, Any] | None = None
    note = ""
    if not args.store:
        try:
            doc = fetch_status(_url(args))
            doc["source"] = f"running bridge at {_url(args)}"
        except StatusUnavailable as exc:
            note = str(exc)
    if doc is None:
        from collector.config import destination_names

        names = destination_names(args.config) if args.config else None
        try:
            directory = require_store(data_dir(args))
        except Failure as exc:
            raise Failure(f"{note}; {exc}" if note else str(exc)) from None
        doc = status_from_store(directory, names)
        if note:
            print(f"{note}; reading the data directory", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_text(doc))
    return EXIT_OK
