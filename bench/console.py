"""Console benchmark: a store of N records, then the trail's first page, session pages and a CSV export over HTTP.

Usage::

    .venv/bin/python bench/console.py [--records 1000000] [--requests 30] [--data-dir DIR] [--keep]

The store is filled by ``bench/approvals_export.py``'s generator (tool decisions and their results, shaped like the
normalizer's output, through :class:`collector.store.sqlite.AuditStore` so they get chain links and every index).
The console (:class:`collector.console.server.ConsoleApp`) is served on a loopback port in this process with a
reviewer token, its ``trail_access`` records appended to the same store, and driven by an aiohttp client:

* the first page of the trail over the whole period (the counts then cover every decision), ``--requests`` times;
* a session page of a random session, ``--requests`` times;
* ``/approvals/export?format=csv`` over the whole period, streamed and counted;
* for comparison, ``ccbridge approvals export`` of the same period as a child process writing to /dev/null.

Targets (docs/performance.md): trail first page p95 <= 300 ms, session page p95 <= 300 ms, export >= 20,000 rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.approvals_export import export_window, generate_store
from collector.configtypes import Secret
from collector.console.server import ConsoleApp
from collector.console.settings import ConsoleAuthConfig, ConsoleConfig, ReviewerTokenConfig
from collector.pipeline import record_row
from collector.store.sqlite import AuditStore, connect, shard_path

TOKEN = "bench-reviewer-token-0001"
RECORDS_PER_DECISION = 1.9  # one result for nine decisions in ten (every tenth is rejected)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def timed(http: aiohttp.ClientSession, url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        body = await r.read()
    return (time.perf_counter() - started) * 1000, r.status, len(body)


async def run(data_dir: Path, requests: int) -> dict[str, Any]:
    store = AuditStore(data_dir, writer="thread").open()

    async def append(rec: dict[str, Any]) -> None:
        now = time.time_ns()
        await store.append(records=[record_row(rec, now, now // 1_000_000)])

    cfg = ConsoleConfig(
        endpoint="127.0.0.1:0", auth=ConsoleAuthConfig(tokens=[ReviewerTokenConfig(Secret(TOKEN), "bench")])
    )
    app = ConsoleApp(cfg, data_dir, append)
    runner = web.AppRunner(app.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    since, until = export_window()
    with connect(shard_path(data_dir, 0), readonly=True) as conn:
        sessions = [s for (s,) in conn.execute("SELECT DISTINCT session FROM records WHERE session IS NOT NULL")]
    rng = random.Random(7)
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            trail_url = f"{base}/approvals?since={since}&until={until}"
            await timed(http, trail_url)  # warm the page cache once
            trail = []
            for _ in range(requests):
                ms, status, _n = await timed(http, trail_url)
                assert status == 200, status
                trail.append(ms)
            filtered = []
            for _ in range(requests):
                user = f"dev{rng.randrange(500)}@example.com"
                ms, status, _n = await timed(http, f"{trail_url}&user={user}&decision=reject")
                assert status == 200, status
                filtered.append(ms)
            sess = []
            for _ in range(requests):
                ms, status, _n = await timed(http, f"{base}/sessions/{rng.choice(sessions)}")
                assert status == 200, status
                sess.append(ms)
            # the export is read by curl in its own process, as a browser or script elsewhere would read it
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                "curl",
                "-sS",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                f"{base}/approvals/export?format=csv&since={since}&until={until}",
                stdout=asyncio.subprocess.PIPE,
            )
            rows = 0
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(1 << 16):
                rows += chunk.count(b"\n")
            await proc.wait()
            export_s = time.perf_counter() - started
            rows -= 1  # the header
        out = {
            "trail_first_page_ms": {"p50": pct(trail, 50), "p95": pct(trail, 95), "max": max(trail)},
            "trail_user_rejected_ms": {"p50": pct(filtered, 50), "p95": pct(filtered, 95), "max": max(filtered)},
            "session_page_ms": {"p50": pct(sess, 50), "p95": pct(sess, 95), "max": max(sess)},
            "export_rows": rows,
            "export_seconds": round(export_s, 2),
            "export_rows_per_s": round(rows / export_s),
        }
    finally:
        await runner.cleanup()
        store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records in the store (default 1,000,000)")
    ap.add_argument("--requests", type=int, default=30, help="requests per page measured (default 30)")
    ap.add_argument("--data-dir", help="store to use or fill (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = ap.parse_args()
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="ccbridge-console-bench-"))
    try:
        if not (data_dir / "store").exists():
            started = time.perf_counter()
            counts = generate_store(data_dir, round(args.records / RECORDS_PER_DECISION))
            print(f"generated {counts} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        with connect(shard_path(data_dir, 0), readonly=True) as conn:
            total = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        result = {"records": total, **asyncio.run(run(data_dir, args.requests))}
        since, until = export_window()
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "collector.cli",
                "approvals",
                "export",
                "--data-dir",
                str(data_dir),
                "--since",
                since,
                "--until",
                until,
                "--format",
                "csv",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        cli_s = time.perf_counter() - started
        result["cli_export_seconds"] = round(cli_s, 2)
        result["cli_export_rows_per_s"] = round(result["export_rows"] / cli_s)
        print(json.dumps(result, indent=2))
    finally:
        if not args.data_dir and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
