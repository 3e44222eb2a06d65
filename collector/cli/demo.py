"""``ccbridge demo``: send realistic Claude Code sessions (events and metrics) to a running bridge over OTLP/HTTP."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from collector.cli.common import EXIT_FAILURE, EXIT_OK, register_parser

TOKEN_ENV = "CCBRIDGE_TOKEN"


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _base_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:4318; got {text!r}"
        )
    return text.strip().rstrip("/")


def register(sub: Any) -> None:
    demo = register_parser(
        sub,
        "demo",
        help="send realistic Claude Code sessions to a running bridge",
        description=f"Send realistic Claude Code sessions to a running bridge over OTLP/HTTP (a bearer token from "
        f"${TOKEN_ENV} when the receivers require one).",
    )
    demo.add_argument("--endpoint", type=_base_url, default="http://127.0.0.1:4318", help="OTLP/HTTP base URL")
    demo.add_argument("--sessions", type=_count, default=2, help="sessions to simulate, one user each")
    demo.add_argument("--prompts", type=_count, default=2, help="prompts per session")
    demo.set_defaults(func=cmd_demo)


async def _demo(endpoint: str, sessions: int, prompts: int, token: str | None) -> int:
    import aiohttp

    from collector.demo import demo_sessions, logs_request, metrics_request

    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for s, records, start, end in demo_sessions(sessions, prompts, time.time_ns()):
            for path, body in (
                ("/v1/logs", logs_request(records).SerializeToString()),
                ("/v1/metrics", metrics_request(s, end, start).SerializeToString()),
            ):
                try:
                    async with http.post(endpoint + path, data=body, headers=headers) as resp:
                        if resp.status != 200:
                            text = await resp.text(errors="replace")
                            print(f"{path}: HTTP {resp.status}: {' '.join(text[:300].split())}", file=sys.stderr)
                            return EXIT_FAILURE
                except (aiohttp.ClientError, OSError) as exc:
                    print(f"cannot reach the bridge at {endpoint}: {exc}", file=sys.stderr)
                    return EXIT_FAILURE
            sent += len(records)
            print(f"session {s.session_id} ({s.email}): {len(records)} events sent")
    print(f"sent {sent} events from {sessions} session(s). See them with: ccbridge audit export --format csv")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args.endpoint, args.sessions, args.prompts, os.environ.get(TOKEN_ENV)))
