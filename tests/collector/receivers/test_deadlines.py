"""Deadlines for every client, and nothing a client presented echoed back: a slow sender cannot stall other
clients' exports, half-sent headers, idle connections and stalled bodies are closed (408), the in-flight budget is
taken as bytes arrive and released on timeout, oversized heads get a fixed 431, a client leaving mid-body is
``client_gone``, and a gRPC export past its deadline is ``DEADLINE_EXCEEDED``."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.receivers.inflight import InflightBudget

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def logs_body(seq: int) -> bytes:
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.time_unix_nano = time.time_ns()
    lr.body.string_value = "claude_code.user_prompt"
    for k, v in {"session.id": "s-fast", "event.sequence": str(seq), "prompt_length": "3"}.items():
        lr.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    return req.SerializeToString()


def http_overrides(**http: Any) -> dict[str, Any]:
    return {"receivers": {"max_inflight_bytes": "1MiB", "otlp": {"http": http}}}


async def raw_connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


def refused(bridge: Any, reason: str, signal: str = "logs") -> float:
    return bridge.service.metrics.refused.labels(signal, "http", reason)._value.get()


async def test_a_one_byte_per_second_sender_does_not_stall_other_clients(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides=http_overrides(body_timeout="30s", min_body_rate="1KiB"))
    budget: InflightBudget = b.service.http.ctx.inflight  # type: ignore[union-attr]
    reader, writer = await raw_connect(b.http_url)
    declared = 1024 * 1024  # the whole in-flight budget
    writer.write(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
    )
    await writer.drain()

    async def drip() -> None:
        # a byte a second until just before the server's verdict (5 s grace at 1 KiB/s): bytes still arriving when
        # it closes the connection would make the kernel reset it, and the client could lose the 408 in its buffer
        for _ in range(4):
            writer.write(b"\x0a")
            await writer.drain()
            await asyncio.sleep(1.0)

    dripping = asyncio.create_task(drip())
    latencies = []
    try:
        async with aiohttp.ClientSession() as http:
            for seq in range(8):
                started = time.perf_counter()
                async with http.post(
                    b.http_url + "/v1/logs", data=logs_body(seq), headers={"Content-Type": "application/x-protobuf"}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                latencies.append(time.perf_counter() - started)
                assert budget.in_use < declared  # the slow sender holds what it sent, not what it declared
                await asyncio.sleep(0.3)
        assert max(latencies) < 1.0, latencies
        # past the 5 s grace at under 1 KiB/s: 408, the connection closed and the budget given back
        answer = await read_all(reader, 15)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"too slow" in answer
    finally:
        dripping.cancel()
        writer.close()
    for _ in range(50):
        if budget.in_use == 0:
            break
        await asyncio.sleep(0.05)
    assert budget.in_use == 0
    assert refused(b, "timeout") == 1
    assert b.count() == 8


async def test_a_stalled_body_gets_408_at_the_total_deadline(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides=http_overrides(body_timeout="1s", min_body_rate=0))
    reader, writer = await raw_connect(b.http_url)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    started = time.monotonic()
    answer = await read_all(reader, 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert 0.8 < time.monotonic() - started < 5


async def test_half_sent_headers_are_closed_with_408(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides=http_overrides(header_timeout="1s", idle_timeout="30s"))
    reader, writer = await raw_connect(b.http_url)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    started = time.monotonic()

    async def trickle() -> None:  # a slowloris keeps sending header bytes: that must not extend the deadline
        for _ in range(20):
            await asyncio.sleep(0.2)
            writer.write(b"X-A: b\r\n")
            await writer.drain()

    task = asyncio.create_task(trickle())
    try:
        answer = await read_all(reader, 10)
    finally:
        task.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 3


async def test_an_idle_connection_is_closed(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides=http_overrides(idle_timeout="1s"))
    reader, writer = await raw_connect(b.http_url)
    started = time.monotonic()
    assert await read_all(reader, 10) == b""
    writer.close()
    assert time.monotonic() - started < 4


async def test_an_oversized_header_is_refused_without_echo(
    bridge_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = await bridge_factory()
    secret = "S3CRET" + "x" * 9000
    caplog.set_level(logging.DEBUG)
    reader, writer = await raw_connect(b.http_url)
    writer.write(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + secret.encode()
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    await writer.drain()
    answer = await read_all(reader, 10)
    writer.close()
    assert answer.split(b" ", 2)[1] == b"431", answer[:100]
    assert answer.endswith(b"\r\n\r\nrequest header fields too large\n")
    assert b"S3CRET" not in answer and b"xxxxxxxx" not in answer
    assert "S3CRET" not in caplog.text and "xxxxxxxx" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in caplog.records if "request head" in r.getMessage()] == [
        "refused a too large request head from 127.0.0.1 (431)"
    ]
    assert refused(b, "header_too_large", "unknown") == 1


async def test_a_malformed_head_gets_a_fixed_400(bridge_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    b = await bridge_factory()
    reader, writer = await raw_connect(b.http_url)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nBad Header Token-abc123: v\r\n\r\n")
    await writer.drain()
    answer = await read_all(reader, 10)
    writer.close()
    assert answer.split(b" ", 2)[1] == b"400"
    assert answer.endswith(b"malformed HTTP request\n")
    assert b"Token-abc123" not in answer and "Token-abc123" not in caplog.text


async def test_a_client_leaving_mid_body_is_client_gone(bridge_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    b = await bridge_factory()
    caplog.set_level(logging.DEBUG)
    budget: InflightBudget = b.service.http.ctx.inflight  # type: ignore[union-attr]
    s = socket.create_connection(("127.0.0.1", int(b.http_url.rsplit(":", 1)[1])))
    s.sendall(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n"
    )
    s.sendall(b"\x0a" * 1000)
    await asyncio.sleep(0.3)
    s.close()
    for _ in range(100):
        if refused(b, "client_gone") == 1:
            break
        await asyncio.sleep(0.05)
    assert refused(b, "client_gone") == 1
    assert budget.in_use == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "otlp" in r.name], caplog.text
    assert any(r.levelno == logging.DEBUG and "client left" in r.getMessage() for r in caplog.records)


async def test_a_grpc_export_past_its_deadline_is_deadline_exceeded(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides={"receivers": {"otlp": {"grpc": {"call_timeout": "500ms"}}}})
    pipeline = b.service.pipeline
    original = pipeline.consume

    async def slow(*args: Any, **kw: Any) -> Any:
        await asyncio.sleep(3)
        return await original(*args, **kw)

    pipeline.consume = slow  # type: ignore[method-assign]
    async with aio.insecure_channel(b.grpc_target) as channel:
        call = channel.unary_unary(LOGS_METHOD)
        with pytest.raises(aio.AioRpcError) as err:
            await call(logs_body(0), timeout=10)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "call_timeout" in (err.value.details() or "")
    pipeline.consume = original  # type: ignore[method-assign]
