"""Benchmark: records per second drained from the durable store into Splunk HEC (the strict fake) with indexer
acknowledgement on, through the production path (delivery engine -> ``splunk_hec`` exporter -> HTTP -> ack polls).

Phase 1 (not timed) stores ``--records`` realistic Claude Code audit records (from :mod:`collector.demo`, sent over
OTLP/HTTP to an in-process bridge without destinations). Phase 2 restarts the bridge on the same data directory with
the Splunk destination and times how long the backlog takes to be confirmed (``ccbridge_exporter_sent_records``).
The fake runs in a child process so its work does not share the bridge's event loop.

Usage: ``python bench/splunk_hec.py [--records 20000] [--concurrency 4] [--ack-poll 1s] [--ack-delay 0.05]
[--no-ack] [--compression gzip|none] [--batch 1000]``. Prints one line with the figure and a JSON line with details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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
from tests.fakes.splunk_hec import SplunkHecFake, TokenPolicy

TOKEN = "00000000-1111-2222-3333-444444444444"
DEST = "splunk_hec/bench"


def serve_fake(ack: bool, ack_delay: float, conn: Connection) -> None:
    """Child process: the HEC fake until the parent sends anything on ``conn``; then report what it indexed."""

    async def main() -> None:
        async with SplunkHecFake({TOKEN: TokenPolicy(ack=ack)}, ack_delay=ack_delay) as fake:
            conn.send(fake.url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            events = fake.events
            requests = fake.requests
            conn.send(
                {
                    "events": len(events),
                    "unique_ids": len({e.event["id"] for e in events}),
                    "event_requests": sum(r.path.endswith("/event") for r in requests),
                    "ack_polls": sum(r.path.endswith("/ack") for r in requests),
                    "wire_bytes": sum(len(r.body) for r in requests if r.path.endswith("/event")),
                }
            )

    asyncio.run(main())


def config_text(data_dir: Path, port: int, exporters: dict[str, Any]) -> str:
    tree = {
        "receivers": {"otlp": {"http": {"endpoint": f"127.0.0.1:{port}"}, "grpc": {"enabled": False}}},
        "storage": {"directory": str(data_dir), "synchronous": "normal"},
        "telemetry": {"endpoint": "127.0.0.1:0", "log_level": "warning"},
        "exporters": exporters,
    }
    return yaml.safe_dump(tree)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(data_dir: Path, records: int) -> int:
    """Store ``records`` demo audit records (at least; normalization may add file_change records)."""
    port = free_port()
    service = Service(load_text(config_text(data_dir, port, {})), serve_telemetry=False)
    await service.start()
    try:
        sent = 0
        async with aiohttp.ClientSession() as session:
            for req in batches(500):
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/logs",
                    data=req.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                sent += 500
                if sent >= records:
                    break
    finally:
        await service.stop()
    return _count(data_dir)


def _count(data_dir: Path) -> int:
    import sqlite3

    total = 0
    for db in (data_dir / "store").glob("shard-*.db"):
        if db.name.endswith(".delivery.db"):
            continue
        with sqlite3.connect(db) as conn:
            total += int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    return total


async def drain(data_dir: Path, url: str, stored: int, args: argparse.Namespace) -> dict[str, Any]:
    section = {
        "endpoint": url,
        "token": TOKEN,
        "index": "ai_audit",
        "ack": args.ack,
        "ack_poll_interval": args.ack_poll,
        "concurrency": args.concurrency,
        "compression": args.compression,
        "batch": {"max_records": args.batch, "timeout": "200ms"},
        "health_check_interval": 0,
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
                raise SystemExit(f"only {sent:.0f} of {stored} records confirmed after {args.max_seconds}s")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
    dead = registry.get_sample_value("ccbridge_exporter_dead_letter_records_total", {"destination": DEST}) or 0
    return {"elapsed_s": round(elapsed, 3), "dead_letters": int(dead)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="batch.max_records")
    parser.add_argument("--ack-poll", default="1s", help="ack_poll_interval")
    parser.add_argument("--ack-delay", type=float, default=0.05, help="seconds until the fake acknowledges")
    parser.add_argument("--no-ack", dest="ack", action="store_false")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_fake, args=(args.ack, args.ack_delay, child), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory(prefix="ccbridge-bench-splunk-") as tmp:
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
        "ack": args.ack,
        "ack_poll_interval": args.ack_poll,
        "fake_ack_delay_s": args.ack_delay,
        "concurrency": args.concurrency,
        "batch_max_records": args.batch,
        "compression": args.compression,
        **result,
        "records_per_s": round(rate),
        **fake,
    }
    ack = "on" if args.ack else "off"
    print(f"splunk_hec: {rate:,.0f} records/s ({stored} records in {result['elapsed_s']}s, ack {ack})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
