"""Every secret of the corpus is redacted in the store and in every destination's payload; negatives survive.

The corpus (tests/fixtures/secrets_corpus.yaml) is sent through the real OTLP/HTTP receiver inside Claude Code
events (tool input, tool parameters, prompt, API error text and a free attribute), delivered to an ``http``
destination, the strict Splunk HEC fake and the strict Datadog fake, and scraped from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import aiohttp
import orjson
import yaml
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.store import RecordQuery, iter_records
from tests.conftest import serve_app
from tests.fakes.datadog import DatadogFake
from tests.fakes.splunk_hec import SplunkHecFake, TokenPolicy

CORPUS = yaml.safe_load((Path(__file__).resolve().parents[2] / "fixtures" / "secrets_corpus.yaml").read_text())
SESSION = "5b0c6f39-6c2d-4f51-9d77-0a1f1e0f4c3a"


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _event(name: str, seq: int, attrs: dict[str, object]) -> list:
    base = {"session.id": SESSION, "user.id": "a" * 64, "event.name": name, "event.sequence": seq}
    return [_kv(k, v) for k, v in {**base, **attrs}.items()]


def corpus_request() -> tuple[bytes, int]:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    t = time.time_ns()
    seq = 0

    def add(name: str, attrs: dict[str, object]) -> None:
        nonlocal seq
        lr = sl.log_records.add()
        lr.time_unix_nano = t + seq * 1_000_000
        lr.body.string_value = f"claude_code.{name}"
        lr.attributes.extend(_event(name, seq, attrs))
        seq += 1

    for sample in CORPUS["positives"]:
        text = sample["text"]
        add(
            "tool_result",
            {"tool_name": "Write", "tool_use_id": f"toolu_{seq}", "success": "true", "tool_input": text,
             "tool_parameters": text, "x.note": text},
        )  # fmt: skip
        add("user_prompt", {"prompt": text, "prompt_length": str(len(text))})
        add("api_error", {"model": "claude-opus-5-5", "error": text, "status_code": 500})
    for neg in CORPUS["negatives"]:
        add("tool_decision", {"tool_name": "Bash", "decision": "accept", "source": "config", "x.negative": neg})
    return req.SerializeToString(), seq


async def test_secrets_never_reach_the_store_or_any_destination(bridge_factory):
    captured: list[bytes] = []

    async def capture(request: web.Request) -> web.Response:
        captured.append(await request.read())
        return web.Response(status=200)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/ingest", capture)
    runner, sink_port = await serve_app(app)
    body, events = corpus_request()
    try:
        async with SplunkHecFake(tokens={"hec-token": TokenPolicy()}) as hec, DatadogFake(api_keys={"dd-key"}) as dd:
            bridge = await bridge_factory(
                overrides={
                    "exporters": {
                        "http/sink": {"url": f"http://127.0.0.1:{sink_port}/ingest", "batch": {"timeout": "100ms"}},
                        "splunk_hec": {"endpoint": hec.url, "token": "hec-token", "batch": {"timeout": "100ms"}},
                        "datadog": {
                            "api_key": "dd-key",
                            "logs_endpoint": dd.url,
                            "metrics_endpoint": dd.url,
                            "hash_salt": "a-test-salt-value",
                            "fields": {"tool.input": "keep", "tool.parameters": "keep", "prompt.text": "keep",
                                       "attributes.tool_input": "keep", "attributes.tool_parameters": "keep",
                                       "attributes.prompt": "keep"},
                            "batch": {"timeout": "100ms"},
                        },
                    }
                }
            )  # fmt: skip
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    bridge.http_url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                stored = [orjson.loads(b) for b in iter_records(bridge.data_dir, RecordQuery())]
                assert len([r for r in stored if r["kind"] != "chain_head"]) >= events
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    sink_lines = sum(b.count(b"\n") for b in captured)
                    if sink_lines >= events and len(hec.events) >= events and len(dd.logs) >= events:
                        break
                    await asyncio.sleep(0.1)
                assert len(hec.events) >= events and len(dd.logs) >= events
                async with http.get(bridge.telemetry_url + "/metrics") as resp:
                    metrics_text = await resp.text()
            hec_bodies = [r.decoded_body or b"" for r in hec.requests]
            dd_bodies = [r.decoded_body or r.body for r in dd.requests]
    finally:
        await runner.cleanup()

    sink_bodies = [gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b for b in captured]
    store_text = "\n".join(json.dumps(r) for r in stored)
    places = {
        "store": store_text,
        "http destination": b"\n".join(sink_bodies).decode("utf-8", "replace"),
        "splunk hec": b"\n".join(hec_bodies).decode("utf-8", "replace"),
        "datadog": b"\n".join(dd_bodies).decode("utf-8", "replace"),
        "prometheus /metrics": metrics_text,
    }
    # negatives must pass unchanged and some share fabricated filler with the secrets: take them out first
    for neg in sorted(CORPUS["negatives"], key=len, reverse=True):
        for form in (neg, json.dumps(neg)[1:-1], json.dumps(json.dumps(neg)[1:-1])[1:-1]):
            places = {where: text.replace(form, "") for where, text in places.items()}
    # the payloads carry JSON text inside JSON, so compare against the escaped forms too
    for sample in CORPUS["positives"]:
        for secret in sample["secrets"]:
            forms = {secret, json.dumps(secret)[1:-1], json.dumps(json.dumps(secret)[1:-1])[1:-1]}
            for where, text in places.items():
                leaked = [f for f in forms if f in text]
                assert not leaked, f"{sample['kind']} secret leaked into the {where}: {secret[:12]}..."
    assert "[REDACTED:" in places["http destination"] and "[REDACTED:" in places["splunk hec"]
    assert "[REDACTED:" in places["datadog"]
    negatives = {r["attributes"].get("x.negative") for r in stored if "x.negative" in r.get("attributes", {})}
    assert negatives == set(CORPUS["negatives"]), "a negative sample was changed"
    assert "ccbridge_redactions_total" in metrics_text


GH = "ghp_FAKEexample0a493af2551398c22cc36c3bb"


def _names_request() -> tuple[bytes, bytes, bytes]:
    """Logs, traces and metrics requests with a GitHub token where redaction used to look away: an attribute key,
    a log event name, a span name, a span status message, a span event name, a metric name and description."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    t = time.time_ns()
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    lr = sl.log_records.add()
    lr.time_unix_nano = t
    lr.body.string_value = "claude_code.tool_decision"
    lr.event_name = f"claude_code.x {GH}"
    lr.attributes.extend(_event("tool_decision", 0, {"tool_name": "Bash", "decision": "accept", f"x.{GH}": "v"}))
    traces = ExportTraceServiceRequest()
    span = traces.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes(range(16))
    span.span_id = bytes(range(8))
    span.name = f"git push https://{GH}@github.com/o/r"
    span.start_time_unix_nano = t
    span.end_time_unix_nano = t + 1000
    span.status.code = 2
    span.status.message = f"auth failed for token {GH}"
    span.attributes.extend([_kv(f"k.{GH}", "v")])
    ev = span.events.add()
    ev.name = f"retry with {GH}"
    ev.time_unix_nano = t
    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = f"claude_code.{GH}"
    m.description = f"counts {GH}"
    dp = m.sum.data_points.add()
    m.sum.is_monotonic = True
    m.sum.aggregation_temporality = 1
    dp.time_unix_nano = t
    dp.as_int = 1
    dp.attributes.extend([_kv(f"a.{GH}", "v")])
    return logs.SerializeToString(), traces.SerializeToString(), metrics.SerializeToString()


async def test_secrets_in_keys_and_names_never_reach_the_store_or_a_destination(bridge_factory):
    from tests.conftest import stored_bodies
    from tests.fakes.http_sink import HttpSink

    logs, traces, metrics = _names_request()
    async with HttpSink() as sink:
        bridge = await bridge_factory(
            overrides={"exporters": {"http/sink": {"url": sink.url, "batch": {"timeout": "100ms"}}}}
        )
        async with aiohttp.ClientSession() as http:
            for path, body in (("/v1/logs", logs), ("/v1/traces", traces), ("/v1/metrics", metrics)):
                async with http.post(
                    bridge.http_url + path, data=body, headers={"Content-Type": "application/x-protobuf"}
                ) as resp:
                    assert resp.status == 200, await resp.text()
        stored = [orjson.loads(b) for b in iter_records(bridge.data_dir, RecordQuery())]
        ids = {r["id"] for r in stored if r["kind"] != "chain_head"}
        await sink.wait_for_ids(ids, timeout=20)
        everything = [*stored, *stored_bodies(bridge.data_dir, "spans")]
        everything += stored_bodies(bridge.data_dir, "metric_points")
        store_text = "\n".join(json.dumps(x) for x in everything)
        sink_text = json.dumps(list(sink.records.values()))
    assert GH not in store_text
    assert GH not in sink_text
    spans = stored_bodies(bridge.data_dir, "spans")
    assert spans[0]["name"] == "git push https://[REDACTED:github_token]@github.com/o/r"
    assert spans[0]["status"]["message"] == "auth failed for token [REDACTED:github_token]"
    assert spans[0]["events"][0]["name"] == "retry with [REDACTED:github_token]"
    assert "k.[REDACTED:github_token]" in spans[0]["attributes"]
    point = stored_bodies(bridge.data_dir, "metric_points")[0]
    assert point["name"] == "claude_code.[REDACTED:github_token]"
    assert point["description"] == "counts [REDACTED:github_token]"
    assert "x.[REDACTED:github_token]" in json.dumps(sink_text)
