"""Contract tests: every recorded Claude Code OTLP body, replayed through the real listening receivers.

Each run folder of ``tests/fixtures/claude-code`` is sent exactly as recorded (body bytes, Content-Type,
Content-Encoding, chunked or Content-Length framing, gRPC for the gRPC run) to a bridge on loopback. The stored audit
records are then compared with the hand-reviewed golden summaries in ``golden/`` and, independently of the goldens,
with what the recording itself says (``log_records.jsonl``, ``datapoints.jsonl``, ``spans.jsonl`` and the CLI's own
``claude.stdout.json``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import jsonschema
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.store.sqlite import shard_path, shard_paths
from tests.contract.make_golden import (
    FIXTURES,
    GrpcResult,
    HttpResult,
    RecordedRequest,
    Replayer,
    grpc_user_agent,
    json_to_protobuf,
    jsonl_rows,
    load_golden,
    protobuf_to_json,
    recorded_requests,
    run_names,
    stdout_json,
    summarize,
)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "audit_record.v1.json"
RESPONSES: dict[str, Any] = {
    "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
    "traces": ExportTraceServiceResponse,
}
RUNS = run_names()
RUNS_332 = [
    "v2.1.197-http-json-allow",
    "v2.1.197-http-protobuf-deny",
    "v2.1.332-grpc-allow",
    "v2.1.332-http-json-details-traces",
    "v2.1.332-http-protobuf-allow",
    "v2.1.332-http-protobuf-gzip",
]
RUNS_337 = [
    "v2.1.337-compact",
    "v2.1.337-hookdeny",
    "v2.1.337-httphooks",
    "v2.1.337-httphooks-down",
    "v2.1.337-httphooks-down-block",
    "v2.1.337-mcp",
    "v2.1.337-modechange",
    "v2.1.337-refusal",
    "v2.1.337-skill",
    "v2.1.337-subagent",
]
# every documented event and the kind it must become (written here independently of the product's catalogue)
KIND_OF_EVENT = {
    "claude_code.user_prompt": "user_prompt",
    "claude_code.assistant_response": "assistant_response",
    "claude_code.tool_decision": "tool_decision",
    "claude_code.tool_result": "tool_result",
    "claude_code.api_request": "api_request",
    "claude_code.api_error": "api_error",
    "claude_code.api_refusal": "api_refusal",
    "claude_code.api_retries_exhausted": "api_retries_exhausted",
    "claude_code.api_request_body": "api_body",
    "claude_code.api_response_body": "api_body",
    "claude_code.permission_mode_changed": "permission_mode_change",
    "claude_code.auth": "auth",
    "claude_code.mcp_server_connection": "mcp_connection",
    "claude_code.internal_error": "internal_error",
    "claude_code.plugin_installed": "plugin",
    "claude_code.plugin_loaded": "plugin",
    "claude_code.skill_activated": "skill",
    "claude_code.at_mention": "at_mention",
    "claude_code.hook_registered": "hook_registration",
    "claude_code.hook_execution_start": "hook_execution",
    "claude_code.hook_execution_complete": "hook_execution",
    "claude_code.hook_plugin_metrics": "hook_execution",
    "claude_code.compaction": "compaction",
    "claude_code.subagent_completed": "subagent",
    "claude_code.feedback_survey": "housekeeping",
    "claude_code.retention_sweep": "housekeeping",
    "claude_code.managed_settings_resolved": "managed_settings",
}
CHUNKED_RUNS = [r for r in RUNS if any(q.chunked for q in recorded_requests(FIXTURES / r))]


def test_fixture_set_is_complete() -> None:
    """The sixteen recorded runs are present (a missing copy would silently shrink every parametrized test)."""
    assert [*RUNS_332, *RUNS_337] == RUNS
    assert CHUNKED_RUNS == ["v2.1.197-http-json-allow", "v2.1.197-http-protobuf-deny"]


# ---------------------------------------------------------------------------------------------------------------
# helpers


def decoded_body(req: RecordedRequest) -> bytes:
    """The request body as the receiver must see it after Content-Encoding."""
    return gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body


def media_type(req: RecordedRequest) -> str:
    return "application/json" if req.content_type == "application/json" else "application/x-protobuf"


def assert_success(req: RecordedRequest, res: HttpResult | GrpcResult, sent_as: str | None = None) -> None:
    """The OTLP success answer: gRPC OK / HTTP 200 with an empty Export*ServiceResponse in the request's encoding.

    ``sent_as`` is the Content-Type actually sent when it differs from the recording's.
    """
    where = f"{req.run}/{req.name}"
    if isinstance(res, GrpcResult):
        assert res.code == grpc.StatusCode.OK, f"{where}: {res.code} {res.details}"
        assert res.body == b"", f"{where}: response is not an empty message"
        RESPONSES[req.signal].FromString(res.body)
        return
    assert res.status == 200, f"{where}: HTTP {res.status}: {res.body[:300]!r}"
    if (sent_as or media_type(req)) == "application/json":
        assert res.content_type == "application/json", where
        assert json.loads(res.body) == {}, f"{where}: {res.body!r}"
    else:
        assert res.content_type == "application/x-protobuf", where
        msg = RESPONSES[req.signal].FromString(res.body)
        assert not msg.HasField("partial_success"), f"{where}: partial success {msg}"
        assert res.body == b"", where


def assert_sent_as_recorded(req: RecordedRequest, res: HttpResult) -> None:
    """The client really framed and labelled the request like the CLI did (headers captured on the way out)."""
    sent = res.request_headers
    where = f"{req.run}/{req.name}"
    assert sent.get("content-type") == req.content_type, where
    assert sent.get("content-encoding") == req.content_encoding, where
    if req.chunked:
        assert sent.get("transfer-encoding") == "chunked", f"{where} was not sent chunked: {sent}"
        assert "content-length" not in sent, where
    else:
        assert "transfer-encoding" not in sent, where
        assert sent.get("content-length") == str(req.content_length) == str(len(req.body)), where
    for name, value in req.headers.items():
        if name.lower() in ("authorization", "x-tenant", "user-agent"):
            assert sent.get(name.lower()) == value, f"{where}: header {name}"


async def replay_run(bridge: Any, run: str) -> list[RecordedRequest]:
    """Send every request of ``run`` in arrival order, exactly as recorded, asserting the success answer.

    Like the CLI, one client sends the whole run: HTTP requests share one keep-alive connection (so a framing
    mistake, e.g. in a chunked body, would break the request after it), gRPC calls share one channel.
    """
    reqs = recorded_requests(FIXTURES / run)
    assert reqs, run
    async with Replayer(bridge.http_url, bridge.grpc_target, grpc_user_agent=grpc_user_agent(reqs)) as rp:
        for req in reqs:
            res = await rp.send(req)
            assert_success(req, res)
            if isinstance(res, HttpResult):
                assert_sent_as_recorded(req, res)
        if any(r.transport == "http" for r in reqs):
            assert rp.connections_opened == 1, "the receiver did not keep the HTTP/1.1 connection alive"
    return reqs


def summary_of(bridge: Any) -> dict[str, Any]:
    return summarize(bridge.records(), bridge.metric_points(), bridge.spans())


def assert_matches_golden(summary: dict[str, Any], run: str) -> None:
    golden = load_golden(run)
    assert set(summary) == set(golden)
    # section by section, so a failure names what differs
    assert summary["counts"] == golden["counts"], "record counts per kind"
    assert len(summary["records"]) == len(golden["records"])
    for got, want in zip(summary["records"], golden["records"], strict=True):
        assert got == want, f"record at sequence {want['sequence']} ({want['kind']})"
    for key in ("identities", "total_cost_usd", "tokens", "metric_points", "spans"):
        assert summary[key] == golden[key], key


@cache
def schema_validator() -> jsonschema.protocols.Validator:
    assert SCHEMA_PATH.exists(), f"{SCHEMA_PATH} is missing"
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def iso_ms(unix_nano: int) -> str:
    """RFC 3339 UTC with milliseconds, computed here independently of the product code."""
    dt = datetime.fromtimestamp(unix_nano // 1_000_000_000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{unix_nano // 1_000_000 % 1000:03d}Z"


def by_sequence(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The primary record of each sequence number (file_change records are derived and left out)."""
    out: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["kind"] == "file_change":
            continue
        assert r["sequence"] not in out, f"two primary records for sequence {r['sequence']}"
        out[r["sequence"]] = r
    return out


# ---------------------------------------------------------------------------------------------------------------
# replay as recorded


@pytest.mark.parametrize("run", RUNS)
async def test_replay_as_recorded_matches_golden(bridge: Any, run: str) -> None:
    await replay_run(bridge, run)
    assert_matches_golden(summary_of(bridge), run)


@pytest.mark.parametrize("run", RUNS_337)
async def test_cost_equals_the_cli_result_337(bridge: Any, run: str) -> None:
    """Independent of the golden: the stored api_request cost adds up to the CLI's own final total.

    A refused request (``api_refusal``) has no ``api_request`` although the CLI bills it: there the stored cost is
    lower, by the refused requests only.
    """
    await replay_run(bridge, run)
    lines = [json.loads(x) for x in (FIXTURES / run / "claude.stdout.json").read_text().splitlines() if x.strip()]
    results = [x for x in lines if x.get("type") == "result"]
    records = bridge.records()
    cost = sum(r["cost_usd"] for r in records if r["kind"] == "api_request")
    refusals = [r for r in records if r["kind"] == "api_refusal"]
    if run == "v2.1.337-refusal":
        assert len(refusals) == 3
        assert cost < results[-1]["total_cost_usd"]
    else:
        assert not refusals
        assert math.isclose(cost, results[-1]["total_cost_usd"], rel_tol=0, abs_tol=1e-9)


@pytest.mark.parametrize("run", RUNS_332)
async def test_cost_and_tokens_equal_the_cli_result(bridge: Any, run: str) -> None:
    """Independent of the golden: the stored api_request records add up to what the CLI itself reported."""
    await replay_run(bridge, run)
    result = stdout_json(FIXTURES / run)
    records = bridge.records()
    api = [r for r in records if r["kind"] == "api_request"]
    assert len(api) == result["num_turns"] == 4
    assert math.isclose(sum(r["cost_usd"] for r in api), result["total_cost_usd"], rel_tol=0, abs_tol=1e-9)
    usage = result["usage"]
    assert sum(r["tokens"]["input"] for r in api) == usage["input_tokens"]
    assert sum(r["tokens"]["output"] for r in api) == usage["output_tokens"]
    assert sum(r["tokens"]["cache_read"] for r in api) == usage["cache_read_input_tokens"]
    assert sum(r["tokens"]["cache_creation"] for r in api) == usage["cache_creation_input_tokens"]
    assert {r["session"]["id"] for r in records} == {result["session_id"]}

    points = bridge.metric_points()
    cost_points = [p["value"] for p in points if p["name"] == "claude_code.cost.usage"]
    assert math.isclose(sum(cost_points), result["total_cost_usd"], rel_tol=0, abs_tol=1e-9)
    tokens = Counter()
    for p in points:
        if p["name"] == "claude_code.token.usage":
            tokens[p["attributes"]["type"]] += p["value"]
    assert tokens["input"] == usage["input_tokens"]
    assert tokens["output"] == usage["output_tokens"]


@pytest.mark.parametrize("run", RUNS)
async def test_records_agree_with_the_recorded_log_records(bridge: Any, run: str) -> None:
    """Independent of the golden: each stored record carries what its log record said on the wire."""
    reqs = await replay_run(bridge, run)
    transport = {r.transport for r in reqs if r.signal == "logs"}.pop()
    rows = jsonl_rows(FIXTURES / run, "log_records.jsonl")
    records = bridge.records()
    primary = by_sequence(records)
    assert sorted(primary) == sorted(r["attributes"]["event.sequence"] for r in rows) == list(range(len(rows)))

    kinds = KIND_OF_EVENT
    expected_file_changes: dict[int, str] = {}
    for row in rows:
        a = row["attributes"]
        seq = a["event.sequence"]
        rec = primary[seq]
        where = f"{run} sequence {seq}"
        assert rec["event"] == row["body"] == "claude_code." + a["event.name"], where
        assert rec["kind"] == kinds.get(row["body"], "event"), where
        assert rec["time"] == iso_ms(int(row["timeUnixNano"])), where  # event.timestamp can be 1 ms off
        assert rec["observed_time"] == iso_ms(int(row["observedTimeUnixNano"])), where
        assert rec["session"]["id"] == a["session.id"], where
        assert rec["user"]["id"] == a["user.id"], where
        assert rec["scope"] == row["scope"], where
        assert rec["attributes"] == a, f"{where}: attributes are not passed through unchanged"
        assert rec["resource"] == row["resource"], where
        assert rec["source"]["transport"] == transport, where
        if row.get("traceId"):
            assert rec["trace"] == {"trace_id": row["traceId"].lower(), "span_id": row["spanId"].lower()}, where
        else:
            assert "trace" not in rec, where
        if rec["kind"] in ("tool_decision", "tool_result") and "mcp_server_name" in a.get("tool_parameters", ""):
            params = json.loads(a["tool_parameters"])
            assert rec["tool"]["source"] == "mcp", where
            assert rec["tool"]["mcp_server"] == params["mcp_server_name"], where
            assert rec["tool"]["mcp_tool"] == params["mcp_tool_name"], where
        if rec["kind"] == "tool_decision":
            assert rec["tool"]["name"] == a["tool_name"], where
            assert rec["tool"]["decision"] == a["decision"], where
            assert rec["tool"]["decision_source"] == a["source"], where
            assert rec["tool"]["use_id"] == a["tool_use_id"], where
        elif rec["kind"] == "tool_result":
            assert rec["tool"]["name"] == a["tool_name"], where
            assert rec["tool"]["success"] is {"true": True, "false": False}[a["success"]], where
            assert rec["tool"]["duration_ms"] == int(a["duration_ms"]), where
            assert rec["tool"]["use_id"] == a["tool_use_id"], where
            tool_input = json.loads(a["tool_input"]) if "tool_input" in a else {}
            if a["tool_name"] in ("Write", "Edit") and "file_path" in tool_input:
                expected_file_changes[seq] = tool_input["file_path"]
        elif rec["kind"] == "api_request":
            assert rec["model"] == a["model"], where
            assert rec["cost_usd"] == a["cost_usd"], where
            assert rec["tokens"] == {
                "input": a["input_tokens"],
                "output": a["output_tokens"],
                "cache_read": a["cache_read_tokens"],
                "cache_creation": a["cache_creation_tokens"],
            }, where
        elif rec["kind"] == "permission_mode_change":
            assert rec["permission_mode"]["from"] == a["from_mode"], where
            assert rec["permission_mode"]["to"] == a["to_mode"], where
            assert rec["permission_mode"].get("trigger") == a.get("trigger"), where
        elif rec["kind"] == "mcp_connection":
            assert rec["mcp"]["server"] == a["server_name"], where
            assert rec["mcp"]["status"] == a["status"], where
            assert rec["mcp"]["transport"] == a["transport_type"], where
            assert rec["mcp"].get("error_code") == a.get("error_code"), where
        elif rec["kind"] == "subagent":
            assert rec["agent"]["id"] == a["agent_id"], where
            assert rec["agent"]["type"] == a["agent_type"], where
            assert rec["agent"]["total_tokens"] == int(a["total_tokens"]), where
            assert rec["agent"]["total_tool_uses"] == int(a["total_tool_uses"]), where
        elif rec["kind"] == "api_refusal":
            assert rec["refusal"]["category"] == a["category"], where
            assert rec["api"]["request_id"] == a["request_id"], where
        elif rec["kind"] == "skill":
            assert rec["skill"] == {
                "name": a["skill.name"],
                "source": a["skill.source"],
                "trigger": a["invocation_trigger"],
            }, where
        elif rec["kind"] == "compaction":
            assert rec["compaction"]["trigger"] == a["trigger"], where
            assert rec["compaction"]["success"] is (a["success"] == "true"), where
        elif rec["kind"] == "hook_execution":
            assert rec["hook"]["event"] == a["hook_event"], where
            assert rec["hook"]["name"] == a["hook_name"], where
            if "num_blocking" in a:
                assert rec["hook"]["num_blocking"] == int(a["num_blocking"]), where
                want = "blocking" if int(a["num_blocking"]) else None
                if want:
                    assert rec["hook"]["outcome"] == want, where
        elif rec["kind"] == "assistant_response":
            assert rec["response"]["length"] == int(a["response_length"]), where
            if a["response"] == "<REDACTED>":
                assert "text" not in rec["response"], f"{where}: the redaction marker is not response text"
        elif rec["kind"] == "user_prompt":
            assert rec["prompt"]["length"] == int(a["prompt_length"]), where
            if a["prompt"] == "<REDACTED>":
                assert "text" not in rec["prompt"], f"{where}: the redaction marker is not prompt text"
            else:
                assert rec["prompt"]["text"] == a["prompt"], where

    file_changes = {r["sequence"]: r for r in records if r["kind"] == "file_change"}
    assert {s: r["file"]["path"] for s, r in file_changes.items()} == expected_file_changes
    for seq, fc in file_changes.items():
        assert fc["derived_from"] == primary[seq]["id"]
        assert fc["id"] != primary[seq]["id"]
        assert fc["file"]["operation"] == {"Write": "write", "Edit": "edit"}[fc["tool"]["name"]]


@pytest.mark.parametrize("run", RUNS)
async def test_every_stored_record_validates_against_the_schema(bridge: Any, run: str) -> None:
    await replay_run(bridge, run)
    validator = schema_validator()
    records = bridge.records()
    assert records
    for rec in records:
        errors = sorted(validator.iter_errors(rec), key=lambda e: list(e.path))
        assert not errors, f"{run} {rec['kind']} #{rec.get('sequence')}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors
        )


# ---------------------------------------------------------------------------------------------------------------
# metrics and spans


@pytest.mark.parametrize("run", RUNS)
async def test_metric_points_are_stored(bridge: Any, run: str) -> None:
    await replay_run(bridge, run)
    expected = jsonl_rows(FIXTURES / run, "datapoints.jsonl")
    assert [p.name for p in shard_paths(bridge.data_dir)] == ["shard-0.db"]
    db = shard_path(bridge.data_dir, 0)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        count = conn.execute("SELECT COUNT(*) FROM metric_points").fetchone()[0]
    assert count == len(expected)

    def key(name: str, temporality: str, attrs: dict[str, Any], value: float) -> str:
        return json.dumps([name, temporality, attrs, value], sort_keys=True)

    got = Counter(key(p["name"], p["temporality"], p["attributes"], p["value"]) for p in bridge.metric_points())
    want = Counter(
        key(
            row["name"],
            row["temporality"].removeprefix("AGGREGATION_TEMPORALITY_").lower(),
            row["attributes"],
            row["value"],
        )
        for row in expected
    )
    assert got == want


async def test_spans_from_the_traces_body_are_stored(bridge: Any) -> None:
    run = "v2.1.332-http-json-details-traces"
    await replay_run(bridge, run)
    expected = jsonl_rows(FIXTURES / run, "spans.jsonl")
    assert len(expected) == 14
    assert bridge.count("spans") == 14
    spans = bridge.spans()
    got = {(s["trace_id"], s["span_id"], s["parent_span_id"], s["name"], s["kind"]) for s in spans}
    want = {
        (r["traceId"], r["spanId"], r.get("parentSpanId") or "", r["name"], "internal")
        for r in expected  # hex as the CLI sent it
    }
    assert got == want
    roots = [s for s in spans if not s["parent_span_id"]]
    assert [s["name"] for s in roots] == ["claude_code.interaction"]
    # the log records emitted inside the interaction point into this trace
    trace_ids = {r["trace"]["trace_id"] for r in bridge.records() if "trace" in r}
    assert trace_ids == {roots[0]["trace_id"]}


# ---------------------------------------------------------------------------------------------------------------
# retries and transports


@pytest.mark.parametrize("run", RUNS)
async def test_resending_the_same_bodies_stores_nothing_new(bridge: Any, run: str) -> None:
    """An exporter retry (e.g. after a lost acknowledgement) must not add records, points or spans."""
    await replay_run(bridge, run)
    first = bridge.records()
    counts = {t: bridge.count(t) for t in ("metric_points", "spans")}
    await replay_run(bridge, run)
    assert bridge.records() == first  # same ids, and the first copy (its receive time) is kept
    assert {t: bridge.count(t) for t in counts} == counts  # DELTA points counted twice would double the cost


def sent_content_type(res: HttpResult | GrpcResult) -> str | None:
    return res.request_headers.get("content-type") if isinstance(res, HttpResult) else None


def as_protobuf(req: RecordedRequest) -> bytes:
    body = decoded_body(req)
    return json_to_protobuf(req.signal, body) if media_type(req) == "application/json" else body


def as_json(req: RecordedRequest) -> bytes:
    body = decoded_body(req)
    return body if media_type(req) == "application/json" else protobuf_to_json(req.signal, body)


async def deliver(rp: Replayer, req: RecordedRequest, how: str) -> HttpResult | GrpcResult:
    """Send the request's content over another transport / encoding / framing than recorded.

    ``grpc`` and ``http-protobuf`` carry the protobuf form (OTLP/JSON recordings converted, hex ids to bytes),
    ``http-json`` the OTLP/JSON form (protobuf recordings converted, ids to hex); the others keep the recorded
    encoding but change compression and framing.
    """
    path = f"/v1/{req.signal}"
    if how == "grpc":
        return await rp.grpc(req.signal, as_protobuf(req))
    if how == "http-protobuf":
        return await rp.post(path, as_protobuf(req), content_type="application/x-protobuf")
    if how == "http-json":
        return await rp.post(path, as_json(req), content_type="application/json")
    body = decoded_body(req)
    ctype = media_type(req)
    if how == "http-identity":
        return await rp.post(path, body, content_type=ctype)
    if how == "http-gzip":
        return await rp.post(path, gzip.compress(body, mtime=0), content_type=ctype, content_encoding="gzip")
    if how == "http-chunked":
        return await rp.post(path, body, content_type=ctype, chunked=True)
    if how == "http-gzip-chunked":
        return await rp.post(
            path, gzip.compress(body, mtime=0), content_type=ctype, content_encoding="gzip", chunked=True
        )
    raise AssertionError(how)


DELIVERY_KINDS = (
    "grpc",
    "http-protobuf",
    "http-json",
    "http-identity",
    "http-gzip",
    "http-chunked",
    "http-gzip-chunked",
)
DELIVERIES = [(run, how) for run in RUNS for how in DELIVERY_KINDS]


@pytest.mark.parametrize(("run", "how"), DELIVERIES)
async def test_stored_records_do_not_depend_on_the_transport(bridge: Any, run: str, how: str) -> None:
    """The same run delivered another way yields exactly the golden (same ids, same fields)."""
    async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
        for req in recorded_requests(FIXTURES / run):
            res = await deliver(rp, req, how)
            assert_success(req, res, sent_content_type(res))
            if isinstance(res, HttpResult):
                assert (res.request_headers.get("transfer-encoding") == "chunked") == how.endswith("-chunked")
                assert (res.request_headers.get("content-encoding") == "gzip") == ("gzip" in how)
    assert_matches_golden(summary_of(bridge), run)
    expected_transport = "grpc" if how == "grpc" else "http"
    assert {r["source"]["transport"] for r in bridge.records()} == {expected_transport}


@pytest.mark.parametrize("run", RUNS)
async def test_a_run_delivered_every_other_way_is_stored_once(bridge: Any, run: str) -> None:
    """As recorded, then again over gRPC, protobuf, JSON, gzip and chunked: still one copy of everything."""
    reqs = await replay_run(bridge, run)
    first = bridge.records()
    counts = {t: bridge.count(t) for t in ("metric_points", "spans")}
    assert first
    async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
        for how in DELIVERY_KINDS:
            for req in reqs:
                res = await deliver(rp, req, how)
                assert_success(req, res, sent_content_type(res))
    assert bridge.records() == first
    assert {t: bridge.count(t) for t in counts} == counts
    assert {r["source"]["transport"] for r in first} == {reqs[0].transport}  # the first delivery is kept


async def test_all_runs_sent_concurrently_into_one_bridge(bridge: Any) -> None:
    """Every recorded session arriving at once (group commit, interleaved requests) still give each run its golden."""
    await asyncio.gather(*(replay_run(bridge, run) for run in RUNS))
    records, points, spans = bridge.records(), bridge.metric_points(), bridge.spans()
    for run in RUNS:
        sid = stdout_json(FIXTURES / run)["session_id"]
        summary = summarize(
            [r for r in records if r["session"]["id"] == sid],
            [p for p in points if p["attributes"].get("session.id") == sid],
            [s for s in spans if s["attributes"].get("session.id") == sid],
        )
        assert_matches_golden(summary, run)
    assert len(records) == sum(load_golden(run)["counts"]["total"] for run in RUNS)


# ---------------------------------------------------------------------------------------------------------------
# chunked framing at the byte level


async def post_raw_chunked(base_url: str, path: str, content_type: str, body: bytes, piece: int = 700) -> int:
    """HTTP/1.1 POST written by hand with chunked framing (no Content-Length); returns the status code."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: {content_type}\r\n"
            "User-Agent: OTel-OTLP-Exporter-JavaScript/0.208.0\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode())
        for i in range(0, len(body), piece):
            chunk = body[i : i + piece]
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    parts = status_line.split()
    assert len(parts) >= 2 and parts[0] == b"HTTP/1.1", status_line
    return int(parts[1])


@pytest.mark.parametrize("run", CHUNKED_RUNS)
async def test_chunked_runs_written_byte_by_byte(bridge: Any, run: str) -> None:
    for req in recorded_requests(FIXTURES / run):
        assert req.chunked and req.content_length is None
        assert req.path
        status = await post_raw_chunked(bridge.http_url, req.path, req.content_type or "", req.body)
        assert status == 200, f"{run}/{req.name}"
    assert_matches_golden(summary_of(bridge), run)


# ---------------------------------------------------------------------------------------------------------------
# a separate bridge process: an acknowledged request survives kill -9


@pytest.mark.slow
async def test_acknowledged_records_survive_kill_9_and_restart(spawn_bridge: Any) -> None:
    run = "v2.1.332-http-protobuf-allow"
    first = spawn_bridge(wait=False)
    await first.wait_ready_async()
    await replay_run(first, run)
    first.kill()  # no graceful stop: what was acknowledged must already be on disk
    assert first.proc.returncode == -9
    assert_matches_golden(summary_of(first), run)

    second = spawn_bridge(data_dir=first.data_dir, wait=False)
    await second.wait_ready_async()
    before = (second.records(), second.count("metric_points"))
    await replay_run(second, run)  # the exporter retries everything against the restarted bridge
    assert (second.records(), second.count("metric_points")) == before
    assert second.terminate() == 0
