"""Fleet benchmark: how many Claude Code CLIs one bridge serves.

Each simulated CLI keeps one HTTP/1.1 connection open, as the CLI's OTLP exporter does, and sends what a working
developer's CLI sends: a small ``/v1/logs`` request (1-10 events) every 5 s and a ``/v1/metrics`` request (the
delta Sums of a session) every 60 s, each CLI at its own random phase. The fleet grows step by step (``--steps``);
each step runs ``--duration`` seconds on a freshly started client, and latencies are counted after a warm-up in
which every CLI has connected. A step *holds* when the p99 request time is at most ``--p99-ms`` (500 ms) and no
request was refused, failed, or took longer than the CLI's 2 s final-flush timeout.

The bridge runs as in ``bench/run_all.py`` (durable store, ``synchronous: full``, two workers on two cores); the
fleet client is one asyncio process on the same machine, its CPU time reported beside the bridge's.

Usage: ``python bench/fleet.py [--steps 2000 4000 ...] [--duration 40] [--workers 2]``
(``--client`` runs one step's client alone against ``--port``; the driver uses it.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.demo import DemoSession, logs_request, metrics_request

LOGS_EVERY_S = 5.0
METRICS_EVERY_S = 60.0
CLI_GIVES_UP_S = 2.0
READ_TIMEOUT_S = 10.0
TEMPLATES = 64


@dataclass
class Body:
    data: bytes
    session_ids: list[bytes]
    records: int

    def fresh(self) -> bytes:
        """The body with new session ids of the same length: new record ids, nothing deduplicated away."""
        out = self.data
        for sid in self.session_ids:
            out = out.replace(sid, str(uuid.uuid4()).encode())
        return out


def make_bodies(seed: int = 11) -> tuple[list[Body], list[Body]]:
    """Logs bodies of 1-10 events (the sizes of a prompt turn's export) and metrics bodies of one session."""
    rng = random.Random(seed)
    logs: list[Body] = []
    metrics: list[Body] = []
    t = time.time_ns()
    for n in range(TEMPLATES):
        s = DemoSession(email=f"fleet{n}@example.com", rng=random.Random(seed + n))
        events = s.prompt_turn(t)
        while len(events) < 10:
            events += s.prompt_turn(t + 1_000_000_000)
        k = rng.randint(1, 10)
        logs.append(Body(logs_request(events[:k]).SerializeToString(), [s.session_id.encode()], k))
        m = metrics_request(s, t, t - 60_000_000_000)
        points = sum(len(x.sum.data_points) for x in m.resource_metrics[0].scope_metrics[0].metrics)
        metrics.append(Body(m.SerializeToString(), [s.session_id.encode()], points))
    return logs, metrics


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    slow: int = 0

    def fail(self, what: str) -> None:
        self.refused[what] = self.refused.get(what, 0) + 1


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[str, float]:
    start = time.perf_counter()
    writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    if length:
        await reader.readexactly(length)
    code = status.split(b" ", 2)[1].decode() if status else "closed"
    return code, time.perf_counter() - start


async def cli(
    host: str,
    port: int,
    logs: list[Body],
    metrics: list[Body],
    t0: float,
    warmup_end: float,
    deadline: float,
    stats: Stats,
    rng: random.Random,
) -> None:
    """One CLI: connect at its first send, then logs every 5 s and metrics every 60 s until ``deadline``."""
    next_logs = t0 + rng.uniform(0, LOGS_EVERY_S)
    next_metrics = t0 + rng.uniform(0, METRICS_EVERY_S)
    await asyncio.sleep(max(0.0, next_logs - time.perf_counter()))
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        stats.fail(f"connect_{type(exc).__name__}")
        return
    heads = {
        path: f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\n".encode()
        for path in ("/v1/logs", "/v1/metrics")
    }
    try:
        while True:
            if next_metrics <= next_logs:
                due, path, body = next_metrics, "/v1/metrics", rng.choice(metrics)
                next_metrics += METRICS_EVERY_S
            else:
                due, path, body = next_logs, "/v1/logs", rng.choice(logs)
                next_logs += LOGS_EVERY_S
            if due >= deadline:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            counted = due >= warmup_end
            try:
                code, took = await asyncio.wait_for(
                    _exchange(reader, writer, heads[path], body.fresh()), READ_TIMEOUT_S
                )
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                if counted:
                    stats.requests += 1
                    stats.fail(f"error_{type(exc).__name__}")
                return
            if not counted:
                continue
            stats.requests += 1
            stats.latencies.append(took)
            if took > CLI_GIVES_UP_S:
                stats.slow += 1
            if code != "200":
                stats.fail(f"http_{code}")
                if code == "closed":
                    return
    finally:
        writer.close()


async def run_client(host: str, port: int, clis: int, duration: float, seed: int) -> dict[str, object]:
    logs, metrics = make_bodies(seed)
    stats = Stats()
    t0 = time.perf_counter() + 0.5
    warmup_end = t0 + LOGS_EVERY_S + 2.0
    deadline = t0 + duration
    rng = random.Random(seed)
    await asyncio.gather(
        *(
            cli(host, port, logs, metrics, t0, warmup_end, deadline, stats, random.Random(rng.random()))
            for _ in range(clis)
        )
    )
    measured = deadline - warmup_end
    lat = sorted(stats.latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    return {
        "clis": clis,
        "measured_s": round(measured, 1),
        "requests": stats.requests,
        "requests_per_s": round(stats.requests / measured, 1),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": round(lat[-1] * 1000, 1) if lat else None,
        "latency_ms_mean": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "over_2s": stats.slow,
        "refused": stats.refused,
    }


def run_step(bridge: object, clis: int, duration: float, seed: int) -> dict[str, object]:
    from run_all import ROOT, cpu_seconds

    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--client", "--port", str(bridge.http_port),  # type: ignore[attr-defined]
        "--clis", str(clis), "--duration", str(duration), "--seed", str(seed),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, t0 = cpu_seconds(bridge.pids()), time.time()  # type: ignore[attr-defined]
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    c1, t1 = cpu_seconds(bridge.pids()), time.time()  # type: ignore[attr-defined]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    res["bridge_cpu_cores"] = round((c1 - c0) / (t1 - t0), 2)
    res["client_cpu_cores"] = round(
        ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / (t1 - t0), 2
    )
    return res


def holds(res: dict[str, object], p99_ms: float) -> bool:
    p99 = res.get("latency_ms_p99")
    return isinstance(p99, float) and p99 <= p99_ms and not res["refused"] and not res["over_2s"]


def raise_nofile() -> None:
    """Every CLI holds a connection: lift the soft file limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[2000, 4000, 6000, 8000, 10000, 12000])
    p.add_argument("--duration", type=float, default=40.0, help="seconds per step, warm-up included")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--p99-ms", type=float, default=500.0)
    p.add_argument("--keep-going", action="store_true", help="run every step even after one fails")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=4318, help=argparse.SUPPRESS)
    p.add_argument("--clis", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    raise_nofile()
    if args.client:
        print(json.dumps(asyncio.run(run_client("127.0.0.1", args.port, args.clis, args.duration, args.seed))))
        return
    from run_all import ROOT, Bridge

    results = []
    bridge = Bridge(args.workers)
    try:
        for i, n in enumerate(args.steps):
            res = run_step(bridge, n, args.duration, seed=i + 1)
            res["holds"] = holds(res, args.p99_ms)
            results.append(res)
            print(json.dumps(res), flush=True)
            if not res["holds"] and not args.keep_going:
                break
    finally:
        peak = bridge.stop()
    best = max((int(r["clis"]) for r in results if r["holds"]), default=0)  # type: ignore[call-overload]
    summary = {
        "scenario": "fleet",
        "workers": args.workers,
        "largest_fleet_holding": best,
        "p99_limit_ms": args.p99_ms,
        "steps": results,
        "peak_rss_mb_per_process": {k: round(v, 1) for k, v in peak.items()},
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"fleet-{int(time.time())}.json").write_text(json.dumps(summary, indent=1))
    print("| CLIs | requests/s | p50 ms | p99 ms | max ms | refused | >2 s | bridge cores | client cores | holds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['clis']} | {r['requests_per_s']} | {r['latency_ms_p50']} | {r['latency_ms_p99']} | "
            f"{r['latency_ms_max']} | {sum(r['refused'].values()) if r['refused'] else 0} | {r['over_2s']} | "  # type: ignore[attr-defined]
            f"{r['bridge_cpu_cores']} | {r['client_cpu_cores']} | {'yes' if r['holds'] else 'no'} |"
        )
    print(f"largest fleet holding p99 <= {args.p99_ms:.0f} ms with no refusals: {best} CLIs")


if __name__ == "__main__":
    main()
