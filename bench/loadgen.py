"""OTLP load generator for the benchmarks: realistic Claude Code log batches over OTLP/HTTP protobuf or gRPC.

Bodies come from :mod:`collector.demo` (the shapes of the recorded CLI). To keep the client cheap enough to share a
2-core machine with the bridge, a few template batches are serialized once, and each request swaps the session ids
in the bytes for fresh ones of the same length, so every request carries new record ids (nothing is deduplicated
away) without re-serializing.

The HTTP client writes pre-built HTTP/1.1 requests on keep-alive connections with asyncio streams; the gRPC client is
``grpc.aio`` with raw-bytes methods. Latency is measured per request, from write to complete answer.

Usage: ``python bench/loadgen.py --target http --batch 512 --concurrency 8 --duration 20 [--rate 5000]``
(``--rate`` is records per second across all connections; without it, each connection sends as fast as it can).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field

from collector.demo import DemoSession, logs_request

GRPC_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@dataclass
class Template:
    body: bytes
    session_ids: list[bytes]
    records: int


def make_templates(batch: int, count: int = 8, seed: int = 7) -> list[Template]:
    """``count`` distinct serialized batches of ``batch`` records, with the session ids they contain."""
    import random

    out = []
    for n in range(count):
        sessions = [
            DemoSession(email=f"bench{n}-{i}@example.com", rng=random.Random(seed + n * 100 + i)) for i in range(4)
        ]
        records = []
        t = time.time_ns()
        i = 0
        while len(records) < batch:
            s = sessions[i % len(sessions)]
            records += s.prompt_turn(t)
            t += 1_000_000_000
            i += 1
        records = records[:batch]
        body = logs_request(records).SerializeToString()
        out.append(Template(body, [s.session_id.encode() for s in sessions], batch))
    return out


def fresh_body(t: Template) -> bytes:
    body = t.body
    for sid in t.session_ids:
        body = body.replace(sid, str(uuid.uuid4()).encode())
    return body


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    records: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Pacer:
    """Spaces request starts so the total rate is ``rate`` requests per second (None: unpaced)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.perf_counter()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.perf_counter()
        self.next = max(self.next + self.interval, now - 1.0)
        delay = self.next - now
        if delay > 0:
            await asyncio.sleep(delay)


async def http_worker(
    host: str, port: int, templates: list[Template], deadline: float, stats: Stats, pacer: Pacer, wid: int
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST /v1/logs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\n"
    i = wid
    try:
        while time.perf_counter() < deadline:
            await pacer.wait()
            t = templates[i % len(templates)]
            i += 1
            body = fresh_body(t)
            req = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            start = time.perf_counter()
            writer.write(req)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            if length:
                await reader.readexactly(length)
            stats.latencies.append(time.perf_counter() - start)
            code = status_line.split(b" ", 2)[1].decode() if status_line else "closed"
            if code == "200":
                stats.records += t.records
            else:
                stats.error(f"http_{code}")
                if code == "closed":
                    return
    finally:
        writer.close()


async def grpc_worker(
    target: str, templates: list[Template], deadline: float, stats: Stats, pacer: Pacer, wid: int, channel: object
) -> None:
    import grpc

    call = channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)  # type: ignore[attr-defined]
    i = wid
    while time.perf_counter() < deadline:
        await pacer.wait()
        t = templates[i % len(templates)]
        i += 1
        body = fresh_body(t)
        start = time.perf_counter()
        try:
            await call(body, timeout=30)
            stats.records += t.records
        except grpc.aio.AioRpcError as exc:
            stats.error(f"grpc_{exc.code().name}")
        stats.latencies.append(time.perf_counter() - start)


async def run(args: argparse.Namespace) -> dict[str, object]:
    templates = make_templates(args.batch)
    stats = Stats()
    rate = args.rate / args.batch if args.rate else None
    pacer = Pacer(rate)
    start = time.perf_counter()
    deadline = start + args.duration
    if args.target == "http":
        await asyncio.gather(
            *(
                http_worker(args.host, args.http_port, templates, deadline, stats, pacer, w)
                for w in range(args.concurrency)
            )
        )
    else:
        from grpc import aio

        channels = [aio.insecure_channel(f"{args.host}:{args.grpc_port}") for _ in range(max(1, args.concurrency // 4))]
        await asyncio.gather(
            *(
                grpc_worker(
                    f"{args.host}:{args.grpc_port}", templates, deadline, stats, pacer, w, channels[w % len(channels)]
                )
                for w in range(args.concurrency)
            )
        )
        for c in channels:
            await c.close()
    elapsed = time.perf_counter() - start
    lat = sorted(stats.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "target": args.target,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "rate_records_per_s": args.rate,
        "elapsed_s": round(elapsed, 2),
        "requests": len(lat),
        "records": stats.records,
        "records_per_s": round(stats.records / elapsed, 1),
        "requests_per_s": round(len(lat) / elapsed, 1),
        "latency_ms_p50": round(pct(0.50), 2),
        "latency_ms_p99": round(pct(0.99), 2),
        "latency_ms_mean": round(statistics.fmean(lat) * 1000, 2) if lat else None,
        "errors": stats.errors,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=("http", "grpc"), default="http")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=4318)
    p.add_argument("--grpc-port", type=int, default=4317)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=0.0, help="target records/s in total (0 = as fast as possible)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
