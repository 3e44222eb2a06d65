"""Contract tests with the official OpenTelemetry Python SDK exporters as real clients of a running bridge.

Logs (``opentelemetry.sdk._logs``: LoggerProvider + BatchLogRecordProcessor + OTLPLogExporter), metrics (MeterProvider
with a DELTA counter + OTLPMetricExporter) and traces (TracerProvider + OTLPSpanExporter), each over OTLP/gRPC and
OTLP/HTTP, plus the exporters' gzip compression. The SDK export calls block, so they run in a worker thread while the
bridge serves from the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from grpc import Compression as GrpcCompression
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import set_span_in_context

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "audit_record.v1.json"
CLI_VERSION = "2.1.999"
SESSION = "5d0c2b3e-8f6a-4e4b-9b1d-2f7a1c0e9a11"
USER_ID = "ab" * 32
T0 = 1_795_643_845_897_000_000  # 2026-11-25T21:57:25.897Z, as in the recordings
TIMEOUT_S = 10
PROTOCOLS = ["grpc", "grpc-gzip", "http", "http-gzip"]


class RecordingSession(requests.Session):
    """A real ``requests`` session that remembers the headers and status of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[dict[str, str], int]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        resp = super().send(request, **kwargs)
        self.sent.append(({k.lower(): v for k, v in request.headers.items()}, resp.status_code))
        return resp


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporters read OTEL_* variables; a developer's environment must not redirect or reconfigure them."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def shutdowns() -> AsyncIterator[list[Callable[[], Any]]]:
    """Providers register their ``shutdown`` here; the test awaits them off the loop (see ``shut_down``).

    Async, so that after a failed test the providers still flush to the bridge (which serves from this loop and is
    stopped only after this fixture) instead of blocking the loop until their export timeout.
    """
    fns: list[Callable[[], Any]] = []
    yield fns
    with contextlib.suppress(Exception):
        await shut_down(fns)


async def shut_down(fns: list[Callable[[], Any]]) -> None:
    while fns:
        await asyncio.to_thread(fns.pop())


def exporter_kwargs(bridge: Any, protocol: str, signal: str) -> tuple[dict[str, Any], RecordingSession | None]:
    if protocol.startswith("grpc"):
        kw: dict[str, Any] = {"endpoint": bridge.grpc_target, "insecure": True, "timeout": TIMEOUT_S}
        if protocol == "grpc-gzip":
            kw["compression"] = GrpcCompression.Gzip
        return kw, None
    session = RecordingSession()
    kw = {"endpoint": f"{bridge.http_url}/v1/{signal}", "timeout": TIMEOUT_S, "session": session}
    if protocol == "http-gzip":
        kw["compression"] = HttpCompression.Gzip
    return kw, session


def assert_http_exports(session: RecordingSession | None, protocol: str, min_requests: int = 1) -> None:
    """Over HTTP the SDK really sent protobuf (gzip when asked) and the bridge answered 200."""
    if session is None:
        return
    assert len(session.sent) >= min_requests
    for headers, status in session.sent:
        assert status == 200
        assert headers["content-type"] == "application/x-protobuf"
        assert headers.get("content-encoding") == ("gzip" if protocol == "http-gzip" else None)


def resource() -> Resource:
    return Resource.create(
        {
            "service.name": "claude-code",
            "service.version": CLI_VERSION,
            "os.type": "linux",
            "host.arch": "amd64",
            "enduser.id": "jdoe@example.com",
        }
    )


def standard(seq: int, name: str) -> dict[str, Any]:
    return {
        "user.id": USER_ID,
        "session.id": SESSION,
        "terminal.type": "dumb",
        "event.name": name,
        "event.sequence": seq,
        "event.timestamp": "2026-11-25T21:57:25.897Z",
        "prompt.id": "b7f0e9a2-1111-4c2d-8e3f-000000000001",
    }


# ---------------------------------------------------------------------------------------------------------------
# logs


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_sdk_log_records_become_audit_records(
    bridge: Any, protocol: str, shutdowns: list[Callable[[], Any]]
) -> None:
    kw, session = exporter_kwargs(bridge, protocol, "logs")
    exporter = (GrpcLogExporter if protocol.startswith("grpc") else HttpLogExporter)(**kw)
    provider = LoggerProvider(resource=resource(), shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    shutdowns.append(provider.shutdown)
    tracer_provider = TracerProvider(resource=resource(), shutdown_on_exit=False)
    logger = provider.get_logger("com.anthropic.claude_code.events", CLI_VERSION)

    def emit(seq: int, body: Any, attrs: dict[str, Any], **extra: Any) -> None:
        name = body if isinstance(body, str) else extra.get("event_name") or attrs["event.name"]
        attrs = {**standard(seq, name.removeprefix("claude_code.")), **attrs}
        t = T0 + seq * 1_000_000
        logger.emit(timestamp=t, observed_timestamp=t, body=body, attributes=attrs, **extra)

    emit(0, "claude_code.user_prompt", {"prompt_length": "47", "prompt": "<REDACTED>"})
    with tracer_provider.get_tracer("test").start_as_current_span("claude_code.interaction") as span:
        emit(
            1,
            "claude_code.tool_decision",
            {"tool_name": "Bash", "tool_use_id": "toolu_1", "decision": "accept", "source": "user_temporary"},
            context=set_span_in_context(span),
        )
        span_ctx = span.get_span_context()
    emit(2, "claude_code.tool_decision", {"tool_name": "Bash", "decision": "reject", "source": "config"})
    emit(3, "claude_code.tool_decision", {"tool_name": "Write", "decision": "accept", "source": "hook"})
    emit(
        4,
        "claude_code.tool_result",
        {
            "tool_name": "Write",
            "tool_use_id": "toolu_2",
            "success": "false",
            "duration_ms": "61",
            "error_type": "ShellError",
            "tool_input": json.dumps({"file_path": "/home/dev/project/hello.txt", "content": "hi\n"}),
        },
    )
    emit(
        5,
        "claude_code.api_request",
        {
            "model": "claude-opus-5-5",
            "cost_usd": 0.011228,
            "cost_usd_micros": 11228,
            "input_tokens": 2576,
            "output_tokens": 47,
            "cache_read_tokens": 0,
            "cache_creation_tokens": 0,
            "duration_ms": 184,
        },
    )
    # a future SDK that fills LogRecord.event_name and sends a structured body
    emit(
        6,
        {"detail": "fake failure"},
        {"model": "claude-opus-5-5", "status_code": 500, "attempt": 2, "error": "fake failure"},
        event_name="claude_code.api_error",
    )
    # the same id (session, sequence, event) with different content: kept and flagged, not dropped
    emit(6, {"detail": "fake failure"}, {}, event_name="claude_code.api_error")
    # neither a claude_code.* body nor event_name: only the short event.name attribute names the event;
    # an OAuth user's user.email wins over enduser.id
    emit(
        7,
        None,
        {"event.name": "tool_decision", "tool_name": "Edit", "decision": "reject", "source": "user_reject"}
        | {"user.email": "alice@example.com"},
    )

    assert await asyncio.to_thread(provider.force_flush, TIMEOUT_S * 1000)
    await shut_down(shutdowns)
    assert_http_exports(session, protocol)

    records = bridge.records()
    by_seq = {r["sequence"]: r for r in records if r["kind"] != "file_change" and "id_collision" not in r}
    assert sorted(by_seq) == list(range(8))
    assert len(records) == 10  # 8 events + the flagged collision + 1 derived file_change
    (collided,) = [r for r in records if "id_collision" in r]
    assert collided["id_collision"] == {"id": by_seq[6]["id"]} and collided["id"] != by_seq[6]["id"]
    transport = "grpc" if protocol.startswith("grpc") else "http"
    for r in records:
        assert r["session"] == {"id": SESSION}
        assert r["user"]["id"] == USER_ID
        if r["sequence"] != 7:
            assert r["user"]["email"] == "jdoe@example.com"
            assert r["user"]["identity_source"] == "enduser.id"
        assert r["scope"] == {"name": "com.anthropic.claude_code.events", "version": CLI_VERSION}
        assert r["source"]["transport"] == transport
        assert r["resource"]["service.name"] == "claude-code"
        assert r["app"]["version"] == CLI_VERSION
        assert r["time"] == f"2026-11-25T21:57:25.{897 + r['sequence']:03d}Z"

    assert by_seq[0]["kind"] == "user_prompt"
    assert by_seq[0]["prompt"] == {"id": "b7f0e9a2-1111-4c2d-8e3f-000000000001", "length": 47}

    d1, d2, d3 = by_seq[1], by_seq[2], by_seq[3]
    assert [d["kind"] for d in (d1, d2, d3)] == ["tool_decision"] * 3
    assert (d1["tool"]["decision"], d1["tool"]["decision_source"], d1["tool"]["approval_mode"]) == (
        "accept",
        "user_temporary",
        "manual",
    )
    assert (d2["tool"]["decision"], d2["tool"]["approval_mode"]) == ("reject", "automatic")
    assert (d3["tool"]["name"], d3["tool"]["approval_mode"]) == ("Write", "hook")
    assert d1["trace"] == {"trace_id": f"{span_ctx.trace_id:032x}", "span_id": f"{span_ctx.span_id:016x}"}
    assert "trace" not in d2

    result = by_seq[4]
    assert result["kind"] == "tool_result"
    assert result["tool"]["success"] is False
    assert result["tool"]["duration_ms"] == 61
    assert result["tool"]["error_type"] == "ShellError"
    assert result["file"] == {"path": "/home/dev/project/hello.txt", "operation": "write"}
    (fc,) = [r for r in records if r["kind"] == "file_change"]
    assert fc["derived_from"] == result["id"]
    assert fc["file"] == result["file"]

    api = by_seq[5]
    assert api["kind"] == "api_request"
    assert api["model"] == "claude-opus-5-5"
    assert api["cost_usd"] == 0.011228
    assert api["tokens"] == {"input": 2576, "output": 47, "cache_read": 0, "cache_creation": 0}
    assert api["api"]["duration_ms"] == 184

    err = by_seq[6]
    assert (err["kind"], err["event"]) == ("api_error", "claude_code.api_error")
    assert err["api"]["status_code"] == 500
    assert err["body"] == {"detail": "fake failure"}

    bare = by_seq[7]
    assert (bare["kind"], bare["event"]) == ("tool_decision", "claude_code.tool_decision")
    assert (bare["tool"]["name"], bare["tool"]["decision"], bare["tool"]["approval_mode"]) == (
        "Edit",
        "reject",
        "manual",
    )
    assert bare["user"]["email"] == "alice@example.com"
    assert bare["user"]["identity_source"] == "user.email"
    assert bare["user"]["enduser_id"] == "jdoe@example.com"

    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for r in records:
        validator.validate(r)


# ---------------------------------------------------------------------------------------------------------------
# metrics


@pytest.mark.parametrize("protocol", ["grpc", "http", "http-gzip"])
async def test_sdk_delta_counters_are_stored_as_points(
    bridge: Any, protocol: str, shutdowns: list[Callable[[], Any]]
) -> None:
    kw, session = exporter_kwargs(bridge, protocol, "metrics")
    kw["preferred_temporality"] = {Counter: AggregationTemporality.DELTA}
    exporter = (GrpcMetricExporter if protocol.startswith("grpc") else HttpMetricExporter)(**kw)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource(), metric_readers=[reader], shutdown_on_exit=False)
    shutdowns.append(provider.shutdown)
    meter = provider.get_meter("com.anthropic.claude_code", CLI_VERSION)
    cost = meter.create_counter("claude_code.cost.usage", unit="USD", description="Cost of the session")
    sessions = meter.create_counter("claude_code.session.count", description="Count of CLI sessions started")
    labels = {"user.id": USER_ID, "session.id": SESSION, "model": "claude-opus-5-5"}

    cost.add(0.25, labels)
    cost.add(0.5, labels)
    sessions.add(1, {"user.id": USER_ID, "session.id": SESSION, "start_type": "fresh"})
    assert await asyncio.to_thread(provider.force_flush, TIMEOUT_S * 1000)
    cost.add(1.0, labels)
    assert await asyncio.to_thread(provider.force_flush, TIMEOUT_S * 1000)
    await shut_down(shutdowns)
    assert_http_exports(session, protocol, min_requests=2)

    points = bridge.metric_points()
    cost_points = [p for p in points if p["name"] == "claude_code.cost.usage"]
    assert [p["value"] for p in cost_points] == [0.75, 1.0]  # deltas, not running totals
    for p in cost_points:
        assert p["type"] == "sum"
        assert p["temporality"] == "delta"
        assert p["monotonic"] is True
        assert p["unit"] == "USD"
        assert p["attributes"] == labels
        assert p["scope"] == {"name": "com.anthropic.claude_code", "version": CLI_VERSION}
        assert p["resource"]["service.name"] == "claude-code"
        assert p["start_time_unix_nano"] <= p["time_unix_nano"]
    assert cost_points[0]["time_unix_nano"] <= cost_points[1]["start_time_unix_nano"]

    (count,) = [p for p in points if p["name"] == "claude_code.session.count"]
    assert count["value"] == 1 and isinstance(count["value"], int)  # as_int survives
    assert count["attributes"]["start_type"] == "fresh"
    assert bridge.count("metric_points") == len(points) == 3


# ---------------------------------------------------------------------------------------------------------------
# traces


@pytest.mark.parametrize("protocol", ["grpc", "http", "http-gzip"])
async def test_sdk_spans_are_stored(bridge: Any, protocol: str, shutdowns: list[Callable[[], Any]]) -> None:
    kw, session = exporter_kwargs(bridge, protocol, "traces")
    exporter = (GrpcSpanExporter if protocol.startswith("grpc") else HttpSpanExporter)(**kw)
    provider = TracerProvider(resource=resource(), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    shutdowns.append(provider.shutdown)
    tracer = provider.get_tracer("com.anthropic.claude_code.tracing", "1.0.0")

    with tracer.start_as_current_span("claude_code.interaction", attributes={"session.id": SESSION}) as root:
        with tracer.start_as_current_span(
            "claude_code.tool", attributes={"tool_name": "Write", "file_path": "/home/dev/project/hello.txt"}
        ) as tool:
            tool.add_event("gen_ai.request.attempt", {"attempt": 1})
            tool.set_status(trace_api.Status(trace_api.StatusCode.ERROR, "denied"))
        root_ctx, tool_ctx = root.get_span_context(), tool.get_span_context()

    assert await asyncio.to_thread(provider.force_flush, TIMEOUT_S * 1000)
    await shut_down(shutdowns)
    assert_http_exports(session, protocol)

    spans = {s["name"]: s for s in bridge.spans()}
    assert set(spans) == {"claude_code.interaction", "claude_code.tool"}
    r, t = spans["claude_code.interaction"], spans["claude_code.tool"]
    assert r["trace_id"] == t["trace_id"] == f"{root_ctx.trace_id:032x}"
    assert r["span_id"] == f"{root_ctx.span_id:016x}"
    assert t["span_id"] == f"{tool_ctx.span_id:016x}"
    assert r["parent_span_id"] == ""
    assert t["parent_span_id"] == r["span_id"]
    assert r["kind"] == t["kind"] == "internal"
    assert t["attributes"] == {"tool_name": "Write", "file_path": "/home/dev/project/hello.txt"}
    assert t["status"] == {"code": 2, "message": "denied"}
    assert [(e["name"], e["attributes"]) for e in t["events"]] == [("gen_ai.request.attempt", {"attempt": 1})]
    assert t["scope"] == {"name": "com.anthropic.claude_code.tracing", "version": "1.0.0"}
    assert r["start_time_unix_nano"] <= t["start_time_unix_nano"] <= t["end_time_unix_nano"] <= r["end_time_unix_nano"]
