"""Benchmark: backfill N days x M users of Claude Code usage reports from the local fake into a fresh analytics.db.

The fake runs in a child process (so its data generation does not count against the sync, and both cores are used
as they would be with a remote API); the sync runs here with the production code path: ``AnalyticsClient`` ->
``sync_range`` -> ``UsageStore`` (WAL, synchronous=FULL, one transaction per day).

Usage: ``python bench/analytics_sync.py [--days 90] [--users 1000] [--concurrency 4] [--rps R] [--in-process]``.
Without options everything is the shipped default: ``AnalyticsApiConfig`` defaults (``max_requests_per_second`` 1,
which paces the pages *within* one day's walk; days are walked concurrently) and ``sync_range``'s concurrency (4).
``--rps`` overrides ``max_requests_per_second`` (0 = no pacing). The issue's target: 90 days x 1,000 users in under
a minute with the defaults. Prints the elapsed seconds and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import multiprocessing
import sys
import tempfile
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.config import Secret
from collector.enrich.analytics_client import AnalyticsClient
from collector.enrich.analytics_config import AnalyticsApiConfig
from collector.enrich.sync import sync_range
from collector.store.usage import UsageStore
from tests.fakes.analytics_api import FAKE_ADMIN_KEY, AnalyticsApiFake

DEFAULT_CONCURRENCY: int = inspect.signature(sync_range).parameters["concurrency"].default


def serve_fake(users: int, days: int, conn: Connection) -> None:
    """Child process: run the fake until the parent sends anything on ``conn``."""

    async def main() -> None:
        async with AnalyticsApiFake(users=users, days=days) as fake:
            conn.send((fake.url, fake.today.isoformat()))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


async def run_sync(url: str, today_iso: str, args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    from datetime import date

    today = date.fromisoformat(today_iso)
    config = AnalyticsApiConfig(enabled=True, base_url=url, admin_api_key=Secret(FAKE_ADMIN_KEY))
    if args.rps is not None:
        config = dataclasses.replace(config, max_requests_per_second=args.rps)
    with UsageStore.open(data_dir) as store:
        async with AnalyticsClient(config) as client:
            started = time.perf_counter()
            result = await sync_range(
                client, store, today - timedelta(days=args.days - 1), today, concurrency=args.concurrency
            )
            elapsed = time.perf_counter() - started
        stored = store.count_rows()
    if not result.ok:
        raise SystemExit(f"sync failed: {result.summary()}")
    db = data_dir / "analytics.db"
    return {
        "days": len(result.fetched),
        "users": args.users,
        "rows": result.rows,
        "rows_stored": stored,
        "pages": result.pages,
        "concurrency": args.concurrency,
        "rps": config.max_requests_per_second,
        "elapsed_s": round(elapsed, 2),
        "rows_per_s": round(result.rows / elapsed),
        "db_mib": round(db.stat().st_size / 2**20, 1),
    }


async def run_in_process(args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    async with AnalyticsApiFake(users=args.users, days=args.days) as fake:
        return await run_sync(fake.url, fake.today.isoformat(), args, data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--rps", type=float, default=None, help="max_requests_per_second (default: the config's)")
    parser.add_argument("--in-process", action="store_true", help="run the fake on the same event loop")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ccbridge-bench-") as tmp:
        data_dir = Path(tmp)
        if args.in_process:
            report = asyncio.run(run_in_process(args, data_dir))
        else:
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve_fake, args=(args.users, args.days, child), daemon=True)
            proc.start()
            try:
                url, today_iso = parent.recv()
                report = asyncio.run(run_sync(url, today_iso, args, data_dir))
            finally:
                parent.send("stop")
                proc.join(10)
        report["fake"] = "in-process" if args.in_process else "child process"
    print(f"analytics sync: {report['days']} days x {args.users} users in {report['elapsed_s']} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
