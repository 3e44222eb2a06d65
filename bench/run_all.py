"""Benchmark driver behind docs/performance.md.

Starts the bridge as a real process (``server.workers`` workers, durable store with ``synchronous: full``) on
loopback, drives it with :mod:`bench.loadgen` in a separate process, samples the bridge's CPU time and peak RSS from
``/proc``, and repeats each scenario (default 3 times), reporting medians. Results go to ``bench/results/`` as JSON
and are printed as a Markdown table.

Usage: ``python bench/run_all.py [--repeat 3] [--duration 15] [--workers 2] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for c in children:
        out += descendants(int(c))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"bridge not ready at {url}")


class Bridge:
    def __init__(self, workers: int, exporters: dict[str, dict] | None = None, data_dir: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ccbridge-bench-"))
        self.data = data_dir or self.dir / "data"
        self.http_port, self.grpc_port, self.tel_port = free_port(), free_port(), free_port()
        cfg = {
            "receivers": {
                "otlp": {
                    "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                    "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
                }
            },
            "telemetry": {"endpoint": f"127.0.0.1:{self.tel_port}", "log_level": "warning"},
            "storage": {"directory": str(self.data), "synchronous": "full"},
            "server": {"workers": workers},
            "exporters": exporters or {},
        }
        cfg_path = self.dir / "bench.yaml"
        cfg_path.write_text(json.dumps(cfg))
        self.log = open(self.dir / "bridge.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, "-m", "collector.cli", "run", "--config", str(cfg_path)], cwd=ROOT, stdout=self.log, stderr=self.log
        )
        wait_ready(f"http://127.0.0.1:{self.tel_port}/readyz")
        time.sleep(0.5 * workers)

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.tel_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> dict[str, float]:
        peak = {str(p): rss_mb(p) for p in self.pids()}
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return peak


def loadgen(bridge: Bridge, target: str, batch: int, concurrency: int, duration: float, rate: float = 0) -> dict:
    cmd = [
        PY, str(ROOT / "bench" / "loadgen.py"), "--target", target, "--batch", str(batch),
        "--concurrency", str(concurrency), "--duration", str(duration), "--rate", str(rate),
        "--http-port", str(bridge.http_port), "--grpc-port", str(bridge.grpc_port),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    res["client_cpu_cores"] = round(used / duration, 2)
    return res


SCENARIOS = {
    "http_512": {"target": "http", "batch": 512, "concurrency": 8},
    "http_512_fanin": {"target": "http", "batch": 512, "concurrency": 32},
    "grpc_512": {"target": "grpc", "batch": 512, "concurrency": 8},
    "http_10": {"target": "http", "batch": 10, "concurrency": 128},
    "http_10_at_5k": {"target": "http", "batch": 10, "concurrency": 64, "rate": 5000},
    "http_512_at_5k": {"target": "http", "batch": 512, "concurrency": 4, "rate": 5000},
}


def run_ingest(name: str, spec: dict, workers: int, duration: float) -> dict:
    bridge = Bridge(workers)
    try:
        pids = bridge.pids()
        c0, t0 = cpu_seconds(pids), time.time()
        res = loadgen(bridge, spec["target"], spec["batch"], spec["concurrency"], duration, spec.get("rate", 0))
        c1, t1 = cpu_seconds(bridge.pids()), time.time()
        stored = bridge.metric("ccbridge_receiver_accepted_items_total")
    finally:
        peak = bridge.stop()
    res["bridge_cpu_cores"] = round((c1 - c0) / (t1 - t0), 2)
    res["peak_rss_mb_per_process"] = {k: round(v, 1) for k, v in peak.items()}
    res["stored_records"] = stored
    res["scenario"] = name
    return res


def run_e2e(workers: int, duration: float, rate: float = 0, concurrency: int = 8) -> dict:
    """OTLP clients -> store -> two http destinations; records/s delivered to both sinks."""
    ports = [free_port(), free_port()]
    sinks = [subprocess.Popen([PY, str(ROOT / "bench" / "sink.py"), "--port", str(p)], cwd=ROOT) for p in ports]
    for p in ports:
        wait_ready(f"http://127.0.0.1:{p}/stats")
    exps = {
        f"http/sink{i}": {
            "url": f"http://127.0.0.1:{p}/ingest",
            "batch": {"max_records": 2000, "timeout": "200ms"},
            "concurrency": 2,
        }
        for i, p in enumerate(ports)
    }
    bridge = Bridge(workers, exps)
    try:
        c0, t0 = cpu_seconds(bridge.pids()), time.time()
        res = loadgen(bridge, "http", 512, concurrency, duration, rate)
        accepted = int(bridge.metric("ccbridge_records_total"))
        deadline = time.time() + 120
        delivered = [0, 0]
        while time.time() < deadline:
            delivered = []
            for p in ports:
                with urllib.request.urlopen(f"http://127.0.0.1:{p}/stats", timeout=5) as r:
                    delivered.append(json.loads(r.read())["records"])
            if min(delivered) >= accepted:
                break
            time.sleep(0.2)
        t1 = time.time()
        c1 = cpu_seconds(bridge.pids())
    finally:
        peak = bridge.stop()
        for s in sinks:
            s.terminate()
            s.wait()
    elapsed = t1 - t0
    return {
        "scenario": "e2e_two_http_destinations" + (f"_at_{int(rate)}" if rate else "") + f"_{concurrency}_connections",
        "stored_audit_records": accepted,
        "delivered_per_destination": delivered,
        "elapsed_s": round(elapsed, 2),
        "end_to_end_records_per_s": round(min(delivered) / elapsed, 1),
        "ingest": res,
        "bridge_cpu_cores": round((c1 - c0) / elapsed, 2),
        "cores_per_10k_records_per_s": round((c1 - c0) / elapsed / (min(delivered) / elapsed / 10000), 3),
        "peak_rss_mb_per_process": {k: round(v, 1) for k, v in peak.items()},
    }


def _start_fake(module: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [PY, "-m", module, "--port", "0", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    return proc, url


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def destination_fakes() -> Iterator[tuple[str, str, list[int]]]:
    """The Splunk HEC (acks on) and Datadog fakes as processes that count without keeping: their URLs and PIDs."""
    hec, hec_url = _start_fake("tests.fakes.splunk_hec", "--token", "bench-token", "--ack", "--no-retain")
    dd, dd_url = _start_fake("tests.fakes.datadog", "--api-key", "bench-key", "--no-retain")
    try:
        yield hec_url, dd_url, [hec.pid, dd.pid]
    finally:
        for p in (hec, dd):
            p.terminate()
            p.wait()


def three_destinations(hec_url: str, dd_url: str) -> dict[str, dict]:
    return {
        "splunk_hec": {
            "endpoint": hec_url,
            "token": "bench-token",
            "ack": True,
            "ack_poll_interval": "100ms",
            "batch": {"max_records": 2000, "timeout": "200ms"},
            "concurrency": 4,
        },
        "datadog": {
            "api_key": "bench-key",
            "logs_endpoint": dd_url,
            "metrics_endpoint": dd_url,
            "batch": {"max_records": 1000, "timeout": "200ms"},
            "concurrency": 4,
        },
        "prometheus": {},
    }


def wait_three(
    bridge: Bridge, hec_url: str, dd_url: str, stored: int, timeout: float = 300, prometheus: bool = True
) -> dict[str, float]:
    """When (time.time()) each destination had all ``stored`` records: acked by Splunk, accepted by Datadog's logs
    intake, read by the Prometheus tailer (unless ``prometheus`` is False)."""
    done_at: dict[str, float] = {}
    want = 3 if prometheus else 2
    deadline = time.time() + timeout
    while time.time() < deadline and len(done_at) < want:
        now = time.time()
        if "splunk_hec" not in done_at and _get_json(hec_url + "/__fake__/stats")["events"] >= stored:
            done_at["splunk_hec"] = now
        if "datadog" not in done_at and _get_json(dd_url + "/__fake__/stats")["logs"] >= stored:
            done_at["datadog"] = now
        if (
            prometheus
            and "prometheus" not in done_at
            and bridge.metric("ccbridge_prometheus_tail_read_records_total") >= stored
        ):
            done_at["prometheus"] = now
        time.sleep(0.05)
    return done_at


def run_destinations_drain(workers: int, duration: float) -> dict:
    """Delivery capacity: a backlog stored first (OTLP clients for ``duration`` seconds, no destination), then the
    bridge restarted on the same data with Splunk HEC (acks on), Datadog and Prometheus; records/s = stored audit
    records divided by the time until Splunk and Datadog had every one. (Prometheus counters start at the bridge's
    start, so a backlog stored before is not counted again; the exporter is configured and serves, nothing more.)"""
    data = Path(tempfile.mkdtemp(prefix="ccbridge-bench-backlog-"))
    with destination_fakes() as (hec_url, dd_url, fake_pids):
        filler = Bridge(workers, data_dir=data)
        try:
            loadgen(filler, "http", 512, 8, duration)
            stored = int(filler.metric("ccbridge_records_total"))
        finally:
            filler.stop()
        bridge = Bridge(workers, three_destinations(hec_url, dd_url), data_dir=data)
        try:
            c0, t0 = cpu_seconds(bridge.pids()), time.time()
            f0 = cpu_seconds(fake_pids)
            done_at = wait_three(bridge, hec_url, dd_url, stored, prometheus=False)
            c1, f1 = cpu_seconds(bridge.pids()), cpu_seconds(fake_pids)
        finally:
            peak = bridge.stop()
            shutil.rmtree(data, ignore_errors=True)
    result = delivery_result("three_destinations_backlog", stored, done_at, t0, c1 - c0, peak, want=2)
    result["fakes_cpu_cores"] = round((f1 - f0) / (max(done_at.values()) - t0), 2) if len(done_at) == 2 else None
    return result


def delivery_result(
    scenario: str, stored: int, done_at: dict[str, float], t0: float, cpu: float, peak: dict[str, float], want: int
) -> dict:
    """Records/s per destination and for all of them (until the last one had everything), bridge cores, RSS."""
    elapsed = {k: round(v - t0, 2) for k, v in done_at.items()}
    all_done = max(done_at.values()) - t0 if len(done_at) == want else None
    return {
        "scenario": scenario,
        "stored_audit_records": stored,
        "seconds_until_delivered": elapsed,
        "records_per_s_per_destination": {k: round(stored / v, 1) for k, v in elapsed.items() if v},
        "records_per_s_all_three": round(stored / all_done, 1) if all_done else None,
        "bridge_cpu_cores": round(cpu / all_done, 2) if all_done else None,
        "peak_rss_mb_per_process": {k: round(v, 1) for k, v in peak.items()},
    }


def run_destinations(workers: int, duration: float) -> dict:
    """OTLP clients -> store -> Splunk HEC (indexer acks on), Datadog (logs + series) and Prometheus at once.

    The fakes run as separate processes. Records/s = audit records stored, divided by the time until every one of
    them was confirmed by Splunk (acked), accepted by Datadog's logs intake, and counted by the Prometheus
    accumulator.
    """
    with destination_fakes() as (hec_url, dd_url, _):
        bridge = Bridge(workers, three_destinations(hec_url, dd_url))
        try:
            c0, t0 = cpu_seconds(bridge.pids()), time.time()
            res = loadgen(bridge, "http", 512, 8, duration)
            stored = int(bridge.metric("ccbridge_records_total"))
            done_at = wait_three(bridge, hec_url, dd_url, stored)
            c1 = cpu_seconds(bridge.pids())
        finally:
            peak = bridge.stop()
    result = delivery_result("three_destinations", stored, done_at, t0, c1 - c0, peak, want=3)
    result["ingest"] = res
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", nargs="*")
    args = p.parse_args()
    machine = {
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        ),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "workers": args.workers,
    }
    results: dict[str, list[dict]] = {}
    names = args.only or [*SCENARIOS, "e2e", "e2e_fanin", "e2e_at_5k", "destinations", "destinations_backlog"]
    for name in names:
        for i in range(args.repeat):
            if name == "e2e":
                r = run_e2e(args.workers, args.duration)
            elif name == "e2e_fanin":
                r = run_e2e(args.workers, args.duration, concurrency=32)
            elif name == "e2e_at_5k":
                r = run_e2e(args.workers, args.duration, rate=5000)
            elif name == "destinations":
                r = run_destinations(args.workers, args.duration)
            elif name == "destinations_backlog":
                r = run_destinations_drain(args.workers, args.duration)
            elif name == "hostile":  # peak RSS under hostile shapes (bench/hostile.py); not in the default set
                import hostile  # bench/ is the script's directory

                r = hostile.run()
            else:
                r = run_ingest(name, SCENARIOS[name], args.workers, args.duration)
            print(f"{name} #{i + 1}: {json.dumps(r)}", flush=True)
            results.setdefault(name, []).append(r)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(f"\nmachine: {machine}\nresults: {path}\n")
    print("| scenario | records/s | requests/s | p50 ms | p99 ms | bridge cores | peak RSS MB/process |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():

        def med(key: str, runs: list[dict] = runs) -> float:
            vals = [r.get(key) if key in r else r.get("ingest", {}).get(key) for r in runs]
            vals = [v for v in vals if isinstance(v, int | float)]
            return statistics.median(vals) if vals else float("nan")

        if name.startswith("destinations"):
            rps = med("records_per_s_all_three")
        elif name.startswith("e2e"):
            rps = med("end_to_end_records_per_s")
        else:
            rps = med("records_per_s")
        rss = max(max(r["peak_rss_mb_per_process"].values()) for r in runs)
        print(
            f"| {name} | {rps:,.0f} | {med('requests_per_s'):,.0f} | {med('latency_ms_p50')} | {med('latency_ms_p99')} "
            f"| {med('bridge_cpu_cores')} | {rss} |"
        )


if __name__ == "__main__":
    main()
