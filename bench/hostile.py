"""Peak RSS of one bridge worker under the hostile request shapes of issue 17, with four destinations.

Starts the bridge as a real process (one worker, durable store) with four destinations (Splunk HEC with acks and
Datadog as the strict fakes in separate processes, a generic ``http`` destination to :mod:`bench.sink`, and
Prometheus), then sends, one shape after the other:

1. ``gzip_bomb_60mb``: a 58 KB gzip body that inflates to one 60 MB attribute (refused 413 by the decompressed-size
   cap before it is decoded);
2. ``gzip_30mb_attribute``: a gzip body just under that cap, one 30 MB attribute (accepted, the attribute cut to
   ``max_attribute_value_size``);
3. ``grpc_6x15mb``: six concurrent 15 MB gRPC exports (one 15 MB attribute each);

waits until every destination has the accepted records, and reports the worker's peak RSS (``VmHWM``) after each
shape. ``python bench/hostile.py`` (also ``python bench/run_all.py --only hostile --repeat 1``); the result is
printed as JSON and written to ``bench/results/hostile.json``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run_all import PY, ROOT, Bridge, _get_json, destination_fakes, free_port, rss_mb, three_destinations

TARGET_MB = 300.0
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def one_attribute_logs(size: int, seq: int) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.time_unix_nano = time.time_ns()
    lr.body.string_value = "claude_code.tool_result"
    attrs = {"session.id": "hostile", "event.sequence": str(seq), "tool_name": "Read", "tool_input": "A" * size}
    for k, v in attrs.items():
        lr.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    return req.SerializeToString()


def post_gzip(port: int, body: bytes) -> int:
    data = gzip.compress(body, 9)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs",
        data=data,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def grpc_concurrent(port: int, bodies: list[bytes]) -> list[str]:
    from grpc import aio

    async with aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        call = channel.unary_unary(LOGS_METHOD)

        async def one(body: bytes) -> str:
            try:
                await call(body, timeout=120)
                return "OK"
            except aio.AioRpcError as exc:
                return exc.code().name

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def worker_rss(bridge: Bridge) -> float:
    return max(rss_mb(p) for p in bridge.pids())


def wait_delivered(
    bridge: Bridge, hec_url: str, dd_url: str, sink_port: int, stored: int, timeout: float = 180
) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        hec = _get_json(hec_url + "/__fake__/stats")["events"]
        dd = _get_json(dd_url + "/__fake__/stats")["logs"]
        sink = _get_json(f"http://127.0.0.1:{sink_port}/stats")["records"]
        prom = bridge.metric("ccbridge_prometheus_tail_read_records_total")
        if min(hec, dd, sink, prom) >= stored:
            return True
        time.sleep(0.2)
    return False


def run() -> dict[str, Any]:
    sink_port = free_port()
    sink = subprocess.Popen([PY, str(ROOT / "bench" / "sink.py"), "--port", str(sink_port)], cwd=ROOT)
    result: dict[str, Any] = {"target_mb_per_worker": TARGET_MB, "destinations": 4}
    try:
        with destination_fakes() as (hec_url, dd_url, _):
            exporters = three_destinations(hec_url, dd_url)
            exporters["http/sink"] = {"url": f"http://127.0.0.1:{sink_port}/ingest", "batch": {"timeout": "200ms"}}
            bridge = Bridge(1, exporters)
            try:
                result["idle_rss_mb"] = round(worker_rss(bridge), 1)
                shapes: dict[str, Any] = {}
                status = post_gzip(bridge.http_port, one_attribute_logs(60_000_000, 1))
                shapes["gzip_bomb_60mb"] = {"status": status, "peak_rss_mb": round(worker_rss(bridge), 1)}
                status = post_gzip(bridge.http_port, one_attribute_logs(30_000_000, 2))
                delivered = wait_delivered(bridge, hec_url, dd_url, sink_port, 1 if status == 200 else 0)
                shapes["gzip_30mb_attribute"] = {
                    "status": status,
                    "delivered": delivered,
                    "peak_rss_mb": round(worker_rss(bridge), 1),
                }
                bodies = [one_attribute_logs(15_000_000, 10 + i) for i in range(6)]
                codes = asyncio.run(grpc_concurrent(bridge.grpc_port, bodies))
                del bodies
                stored = int(bridge.metric("ccbridge_records_total"))
                delivered = wait_delivered(bridge, hec_url, dd_url, sink_port, stored)
                shapes["grpc_6x15mb"] = {
                    "codes": codes,
                    "delivered": delivered,
                    "peak_rss_mb": round(worker_rss(bridge), 1),
                }
                result["shapes"] = shapes
            finally:
                peak = bridge.stop()
    finally:
        sink.terminate()
        sink.wait()
    result["peak_rss_mb_per_process"] = {k: round(v, 1) for k, v in peak.items()}
    result["peak_rss_mb"] = round(max(peak.values()), 1)
    result["within_target"] = result["peak_rss_mb"] <= TARGET_MB
    return result


def main() -> None:
    result = run()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "hostile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
