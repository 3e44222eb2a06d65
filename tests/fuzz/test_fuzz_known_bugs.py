"""Minimal reproductions of the bugs the fuzzers found in decoding and normalization.

The fixed ones are plain regression tests. The open ones are marked ``xfail(strict=True)``: once fixed they pass,
``strict`` turns that into a failure, and whoever fixed it removes the mark here and the matching rule of
:func:`tests.fuzz.fuzz_support.known_gap` (so the fuzzers cover the case again).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.processing.decode import DecodeError, logs_from_json, spans_from_json
from tests.fuzz.fuzz_support import check_records, normalize_all


def _logs(attributes: list[dict[str, object]], body: str = "claude_code.tool_decision") -> bytes:
    record = {"body": {"stringValue": body}, "attributes": attributes}
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})


SESSION = [{"key": "session.id", "value": {"stringValue": "s1"}}, {"key": "event.sequence", "value": {"intValue": 3}}]


def test_json_int_value_beyond_int64_is_a_decode_error() -> None:
    """OTLP intValue is int64. ``{"intValue": "99999999999999999999999"}`` is accepted by the JSON decoder; the
    record then cannot be serialized (orjson: "Integer exceeds 64-bit range"), so the receiver answers 500 and logs
    an internal error instead of refusing the request with 400."""
    body = _logs([*SESSION, {"key": "x", "value": {"intValue": "99999999999999999999999"}}])
    try:
        events = logs_from_json(body)
    except DecodeError:
        return
    check_records(normalize_all(events), skip_known_gaps=False)


def test_json_span_attribute_beyond_int64_is_a_decode_error() -> None:
    """The same for spans (and metric points): ``{"intValue": 1.8446744073709552e19}`` (an integral JSON float)
    decodes to an int beyond 64 bits, and ``Pipeline.consume_spans`` fails serializing it (HTTP 500)."""
    span = {"traceId": "0" * 32, "spanId": "0" * 16, "name": "claude_code.tool",
            "attributes": [{"key": "n", "value": {"intValue": 1.8446744073709552e19}}]}  # fmt: skip
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    try:
        spans = spans_from_json(body)
    except DecodeError:
        return
    orjson.dumps(spans)


@pytest.mark.parametrize("key", ["prompt.id", "terminal.type"])
def test_non_scalar_prompt_id_or_terminal_type_gives_a_valid_record(key: str) -> None:
    """``to_str`` returns None for a list or map, and the record gets ``{"id": null}`` / ``{"type": null}``, which
    the schema refuses (``None is not of type 'string'``); the field should be omitted (or the value kept as text)."""
    body = _logs([*SESSION, {"key": key, "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}])
    check_records(normalize_all(logs_from_json(body)), skip_known_gaps=False)


def test_unknown_decision_value_gives_a_valid_record() -> None:
    """A ``tool_decision`` with ``decision: "ask"`` (or any value other than accept/reject/allow/deny) is stored
    with ``tool.decision: "ask"``, which ``schemas/audit_record.v1.json`` refuses (enum accept/reject). Either the
    schema should allow other values or the normalizer should put them elsewhere."""
    body = _logs([*SESSION, {"key": "decision", "value": {"stringValue": "ask"}}])
    check_records(normalize_all(logs_from_json(body)), skip_known_gaps=False)


def _event(name: str, **attrs: object) -> bytes:
    kvs = [{"key": k, "value": {"intValue": v} if isinstance(v, int) and not isinstance(v, bool) else
            {"doubleValue": v} if isinstance(v, float) else {"boolValue": v} if isinstance(v, bool) else
            {"stringValue": v}} for k, v in attrs.items()]  # fmt: skip
    return _logs([*SESSION, *kvs], f"claude_code.{name}")


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        ("tool_result", {"duration_ms": "-5"}),
        ("tool_result", {"tool_input_size_bytes": "-1"}),
        ("api_request", {"cost_usd": -1.0}),
        ("api_request", {"cost_usd_micros": -5}),
        ("api_request", {"input_tokens": -3}),
        ("user_prompt", {"prompt_length": "-4"}),
    ],
)
def test_negative_counts_give_a_valid_record(name: str, attrs: dict[str, object]) -> None:
    """``duration_ms``, sizes, costs, token counts and ``prompt.length`` have ``minimum: 0`` in the schema, but a
    negative value from the client is stored as is. The normalizer should omit it (or the schema allow it)."""
    check_records(normalize_all(logs_from_json(_event(name, **attrs))), skip_known_gaps=False)


@pytest.mark.parametrize("attrs", [{"tool_parameters": False}, {"tool_input": 3.5}])
def test_scalar_tool_parameters_give_a_valid_record(attrs: dict[str, object]) -> None:
    """The schema types ``tool.parameters`` / ``tool.input`` as object, array or string; a boolean or number
    attribute is stored as is (``False is not of type 'object', 'array', 'string'``)."""
    check_records(normalize_all(logs_from_json(_event("tool_result", **attrs))), skip_known_gaps=False)


def test_protobuf_ids_of_the_wrong_length_are_refused_or_dropped() -> None:
    """OTLP trace ids are 16 bytes and span ids 8. The OTLP/JSON decoder refuses other lengths, the protobuf one
    passes them on: a log record with a 1-byte ``trace_id`` is stored with ``trace.trace_id: "ab"``, which the
    schema's ``^[0-9a-f]{32}$`` refuses. It should be a DecodeError (or the ids dropped)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    from collector.processing.decode import logs_from_protobuf

    record = LogRecord(trace_id=b"\xab", span_id=b"\x00" * 8)
    record.body.string_value = "claude_code.tool_decision"
    body = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])])
    try:
        events = logs_from_protobuf(body.SerializeToString())
    except DecodeError:
        return
    check_records(normalize_all(events), skip_known_gaps=False)


BIG = "999999999999999999999999999999"


@pytest.mark.parametrize("signal", ["logs", "metrics", "traces"])
def test_json_times_beyond_64_bits_are_a_decode_error(signal: str) -> None:
    """``timeUnixNano`` / ``startTimeUnixNano`` are fixed64. ``_j_uint`` accepts any decimal string, so
    ``"999999999999999999999999999999"`` reaches the pipeline, whose orjson serialization (record id, store row,
    metric point, span) fails with "Integer exceeds 64-bit range": the receiver answers 500 instead of 400."""
    from collector.processing.decode import metrics_from_json

    if signal == "logs":
        body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": BIG}]}]}]})
        decode: Any = logs_from_json
    elif signal == "metrics":
        point = {"timeUnixNano": BIG, "asDouble": 1.0}
        metric = {"name": "m", "gauge": {"dataPoints": [point]}}
        body = orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]})
        decode = metrics_from_json
    else:
        span = {"traceId": "0" * 32, "spanId": "0" * 16, "startTimeUnixNano": BIG}
        body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
        decode = spans_from_json
    try:
        items = decode(body)
    except DecodeError:
        return
    if signal == "logs":
        normalize_all(items)
    else:
        orjson.dumps(items)
