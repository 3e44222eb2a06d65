"""What the single-destination drain benchmarks share (``bench/splunk_hec.py``, ``bench/datadog.py``): store a backlog
of demo records through a bridge without destinations, restart it with one destination and time the drain, with
the destination's fake in a child process so its work does not share the bridge's event loop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.config import load_text
from collector.demo import batches
from collector.service import Service

CHUNK = 500


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


async def fill(data_dir: Path, records: int, **demo: Any) -> int:
    """Store at least ``records`` demo audit records (normalization may add file_change records); how many."""
    port = free_port()
    service = Service(load_text(config_text(data_dir, port, {})), serve_telemetry=False)
    await service.start()
    try:
        sent = 0
        async with aiohttp.ClientSession() as session:
            for req in batches(CHUNK, **demo):
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


async def drain(
    data_dir: Path, dest: str, section: dict[str, Any], stored: int, max_seconds: float, settle: float = 0.0
) -> dict[str, Any]:
    """Restart on ``data_dir`` with destination ``dest``; seconds until it confirmed ``stored`` records (then
    ``settle`` more seconds, not timed, for work that follows delivery) and its dead letters."""
    service = Service(load_text(config_text(data_dir, free_port(), {dest: section})), serve_telemetry=False)
    registry = service.metrics.registry
    started = time.perf_counter()
    await service.start()
    try:
        while True:
            sent = registry.get_sample_value("ccbridge_exporter_sent_records_total", {"destination": dest}) or 0
            if sent >= stored:
                break
            if time.perf_counter() - started > max_seconds:
                raise SystemExit(f"only {sent:.0f} of {stored} records confirmed after {max_seconds}s")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        if settle:
            await asyncio.sleep(settle)
    finally:
        await service.stop()
    dead = registry.get_sample_value("ccbridge_exporter_dead_letter_records_total", {"destination": dest}) or 0
    return {"elapsed_s": round(elapsed, 3), "dead_letters": int(dead)}


def with_fake(
    serve_fake: Callable[..., None], fake_args: tuple[Any, ...], work: Callable[[str], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``serve_fake(*fake_args, conn)`` in a child process: what ``work(fake_url)`` returns, and the fake's own
    report sent back on ``conn`` once the work is done."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_fake, args=(*fake_args, child), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        result = work(url)
        parent.send("stop")
        fake = parent.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    return result, fake


def serve_and_report(conn: Connection, fake: Any, report: Callable[[Any], dict[str, Any]]) -> None:
    """In the child: announce ``fake``'s URL, wait for the parent's word, send ``report(fake)``."""

    async def main() -> None:
        async with fake:
            conn.send(fake.url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(report(fake))

    asyncio.run(main())
