"""Benchmark: records per second drained from the durable store into the Datadog Logs intake (the strict fake),
through the production path (delivery engine -> ``datadog`` exporter -> field policy, gzip JSON arrays -> HTTP),
with the metrics tailer submitting count series at the same time.

Phase 1 (not timed) stores ``--records`` realistic Claude Code audit records (from :mod:`collector.demo`, over
OTLP/HTTP to an in-process bridge without destinations). Phase 2 restarts the bridge on the same data directory with
the Datadog destination and times how long the backlog takes to be accepted (``ccbridge_exporter_sent_records``).
The fake runs in a child process so its parsing does not share the bridge's event loop.

Usage: ``python bench/datadog.py [--records 20000] [--concurrency 4] [--batch 1000] [--compression gzip|none]
[--no-metrics]``. Prints one line with the figure and a JSON line with details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sqlite3
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.config import load_text
from collector.demo import batches
from collector.service import Service
from tests.fakes.datadog import DatadogFake

API_KEY = "0123456789abcdef0123456789abcdef"
DEST = "datadog/bench"
CHUNK = 500


def serve_fake(conn: Connection) -> None:
    """Child process: the fake intake until the parent sends anything on ``conn``; then report what it received."""

    async def main() -> None:
        async with DatadogFake([API_KEY]) as fake:
            conn.send(fake.url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            logs, requests = fake.logs, fake.requests
            conn.send(
                {
                    "log_entries": len(logs),
                    "unique_records": len({e.attributes["claude_code"]["id"] for e in logs}),
                    "log_requests": sum(r.path == "/api/v2/logs" for r in requests),
                    "log_wire_bytes": sum(len(r.body) for r in requests if r.path == "/api/v2/logs"),
                    "series_requests": sum(r.path == "/api/v2/series" for r in requests),
                    "metric_points": len(fake.points),
                    "dropped_points": len(fake.dropped_points),
                    "truncated_entries": sum(e.truncated for e in logs),
                }
            )

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(data_dir: Path, port: int, exporters: dict[str, Any]) -> str:
    tree = {
        "receivers": {"otlp": {"http": {"endpoint": f"127.0.0.1:{port}"}, "grpc": {"enabled": False}}},
        "storage": {"directory": str(data_dir), "synchronous": "normal"},
        "telemetry": {"endpoint": "127.0.0.1:0", "log_level": "warning"},
        "exporters": exporters,
    }
    return yaml.safe_dump(tree)


def stored_records(data_dir: Path) -> int:
    total = 0
    for db in (data_dir / "store").glob("shard-*.db"):
        if db.name.endswith(".delivery.db"):
            continue
        with sqlite3.connect(db) as conn:
            total += int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    return total


async def fill(data_dir: Path, records: int) -> int:
    """Store at least ``records`` demo audit records (normalization may add file_change records)."""
    port = free_port()
    service = Service(load_text(config_text(data_dir, port, {})), serve_telemetry=False)
    await service.start()
    try:
        sent = 0
        async with aiohttp.ClientSession() as session:
            for req in batches(CHUNK, users=50, seed=7):
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/logs",
                    data=req.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                sent += CHUNK
                if sent >= records:
                    break
    finally:
        await service.stop()
    return stored_records(data_dir)


async def drain(data_dir: Path, url: str, stored: int, args: argparse.Namespace) -> dict[str, Any]:
    section = {
        "api_key": API_KEY,
        "logs_endpoint": url,
        "metrics_endpoint": url,
        "tags": ["env:bench"],
        "concurrency": args.concurrency,
        "compression": args.compression,
        "send_metrics": args.metrics,
        "metrics_interval": "1s",
        "batch": {"max_records": args.batch, "timeout": "200ms"},
    }
    service = Service(load_text(config_text(data_dir, free_port(), {DEST: section})), serve_telemetry=False)
    registry = service.metrics.registry
    started = time.perf_counter()
    await service.start()
    try:
        while True:
            sent = registry.get_sample_value("ccbridge_exporter_sent_records_total", {"destination": DEST}) or 0
            if sent >= stored:
                break
            if time.perf_counter() - started > args.max_seconds:
                raise SystemExit(f"only {sent:.0f} of {stored} records accepted after {args.max_seconds}s")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        if args.metrics:
            await asyncio.sleep(1.5)  # let the tailer submit its last changes (not timed)
    finally:
        await service.stop()
    dead = registry.get_sample_value("ccbridge_exporter_dead_letter_records_total", {"destination": DEST}) or 0
    return {"elapsed_s": round(elapsed, 3), "dead_letters": int(dead)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="batch.max_records")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--no-metrics", dest="metrics", action="store_false", help="send_metrics: false")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_fake, args=(child,), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory(prefix="ccbridge-bench-datadog-") as tmp:
            data_dir = Path(tmp)
            stored = asyncio.run(fill(data_dir, args.records))
            result = asyncio.run(drain(data_dir, url, stored, args))
        parent.send("stop")
        fake = parent.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    rate = stored / result["elapsed_s"]
    report = {
        "records": stored,
        "concurrency": args.concurrency,
        "batch_max_records": args.batch,
        "compression": args.compression,
        "send_metrics": args.metrics,
        **result,
        "records_per_s": round(rate),
        **fake,
    }
    print(f"datadog: {rate:,.0f} records/s ({stored} records in {result['elapsed_s']}s, metrics={args.metrics})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
