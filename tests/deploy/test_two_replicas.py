"""Two bridge replicas behind one "Service", as the Helm chart runs them: each replica has its own store and delivery
queue, both ship to the same destination. OTLP clients are spread round-robin over both replicas (HTTP and gRPC),
and every record reaches the destination exactly once, from the replica that stored it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from grpc import aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from prometheus_client.parser import text_string_to_metric_families

from collector.demo import logs_request, record_stream
from tests.conftest import BridgeProcess
from tests.fakes.http_sink import HttpSink

DESTINATION = "http/siem"
REQUESTS = 24
RECORDS_PER_REQUEST = 10
CLIENTS_IN_FLIGHT = 6
DELIVERY_TIMEOUT = 30.0


async def send_http(session: aiohttp.ClientSession, replica: BridgeProcess, req: ExportLogsServiceRequest) -> None:
    body = req.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    async with session.post(f"{replica.http_url}/v1/logs", data=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def send_grpc(replica: BridgeProcess, req: ExportLogsServiceRequest) -> None:
    async with aio.insecure_channel(replica.grpc_target) as channel:
        await LogsServiceStub(channel).Export(req, timeout=10)


async def metric(replica: BridgeProcess, name: str, labels: dict[str, str]) -> float | None:
    """One sample of the replica's /metrics, or None when the series is not exposed."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(f"{replica.telemetry_url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def start_replica(spawn_bridge: Callable[..., BridgeProcess], overrides: dict[str, Any]) -> BridgeProcess:
    """A bridge process, started without blocking the loop (the sink serves in it); a fresh try if a port raced."""
    for attempt in range(3):
        replica = spawn_bridge(overrides=overrides, wait=False)
        try:
            await replica.wait_ready_async()
        except RuntimeError:
            if attempt == 2:
                raise
            continue
        return replica
    raise AssertionError("unreachable")


async def poll(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.1)


async def test_round_robin_over_two_replicas_delivers_every_record_exactly_once(
    spawn_bridge: Callable[..., BridgeProcess],
) -> None:
    async with HttpSink() as sink:
        overrides = {
            "exporters": {DESTINATION: {"url": sink.url, "batch": {"timeout": "200ms", "max_records": 100}}},
            "storage": {"synchronous": "normal"},
        }
        replicas = list(await asyncio.gather(*(start_replica(spawn_bridge, overrides) for _ in range(2))))

        stream = record_stream(users=8, seed=11)
        requests = [logs_request(list(itertools.islice(stream, RECORDS_PER_REQUEST))) for _ in range(REQUESTS)]
        sent_to = {0: 0, 1: 0}
        gate = asyncio.Semaphore(CLIENTS_IN_FLIGHT)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def client(i: int, req: ExportLogsServiceRequest) -> None:
                replica = i % 2  # round-robin over the replicas, like a Service spreading connections
                async with gate:
                    if (i // 2) % 2 == 0:  # and both transports reach both replicas
                        await send_http(http, replicas[replica], req)
                    else:
                        await send_grpc(replicas[replica], req)
                sent_to[replica] += len(req.resource_logs[0].scope_logs[0].log_records)

            await asyncio.gather(*(client(i, req) for i, req in enumerate(requests)))
        assert sent_to == {0: REQUESTS * RECORDS_PER_REQUEST // 2, 1: REQUESTS * RECORDS_PER_REQUEST // 2}

        stored = [{rec["id"] for rec in r.records()} for r in replicas]
        assert all(ids for ids in stored), "each replica must have received and stored records"
        assert not stored[0] & stored[1], "a record stored by both replicas"
        everything = stored[0] | stored[1]
        assert len(everything) >= REQUESTS * RECORDS_PER_REQUEST

        await sink.wait_for_ids(everything, timeout=DELIVERY_TIMEOUT)

        async def backlogs_empty() -> bool:
            values = [
                await metric(r, "ccbridge_exporter_backlog_records", {"destination": DESTINATION}) for r in replicas
            ]
            return all(v == 0 for v in values)

        await poll(backlogs_empty, DELIVERY_TIMEOUT, "empty backlog on both replicas")

        assert sink.ids() == everything
        assert sink.duplicates() == 0
        assert {sink.count(i) for i in everything} == {1}
        for replica, ids in zip(replicas, stored, strict=True):
            sent = await metric(replica, "ccbridge_exporter_sent_records_total", {"destination": DESTINATION})
            assert sent == len(ids), "each replica delivers exactly the records it stored"
        for replica in replicas:
            assert replica.terminate() == 0, replica.output()
