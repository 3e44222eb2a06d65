"""OTLP decoding (``collector.processing.decode``): protobuf and OTLP/JSON give the same plain values.

The JSON bodies are produced from the protobuf message by ``google.protobuf.json_format`` (the reference proto3 JSON
mapping) and then adjusted the way OTLP/JSON requires: ids as hex instead of base64, enums as integers.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.processing.decode import (
    DecodeError,
    LogEvent,
    log_stream_from_protobuf,
    logs_from_json,
    logs_from_protobuf,
    metrics_from_json,
    metrics_from_protobuf,
    spans_from_json,
    spans_from_protobuf,
)

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")
ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def arr(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def kvl(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in values.items()]))


def otlp_json(message: Any, *, ints_as_numbers: bool = False) -> bytes:
    """``message`` as OTLP/JSON: proto3 JSON mapping, then hex ids and (optionally) int64 as JSON numbers."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in ID_KEYS and isinstance(v, str):
                    out[k] = base64.b64decode(v).hex()
                elif ints_as_numbers and k == "intValue" and isinstance(v, str):
                    out[k] = int(v)
                else:
                    out[k] = fix(v)
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return orjson.dumps(fix(doc))


def comparable(value: Any) -> Any:
    """NaN never equals itself; replace it so whole structures can be compared."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def fields(ev: LogEvent) -> dict[str, Any]:
    return {name: comparable(getattr(ev, name)) for name in LogEvent.__slots__}


def rich_logs_request() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(
        [kv("service.name", s("claude-code")), kv("service.version", s("2.1.332")), kv("os.type", s("linux"))]
    )
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    sl.scope.version = "2.1.332"
    lr = sl.log_records.add()
    lr.time_unix_nano = 1_795_643_845_897_000_000
    lr.observed_time_unix_nano = 1_795_643_845_898_000_000
    lr.severity_number = 9
    lr.severity_text = "INFO"
    lr.body.string_value = "claude_code.tool_result"
    lr.event_name = "claude_code.tool_result"
    lr.trace_id = TRACE_ID
    lr.span_id = SPAN_ID
    lr.flags = 1
    lr.attributes.extend(
        [
            kv("event.name", s("tool_result")),
            kv("event.sequence", AnyValue(int_value=7)),
            kv("big", AnyValue(int_value=2**62 + 1)),  # not representable as a float
            kv("negative", AnyValue(int_value=-42)),
            kv("cost_usd", AnyValue(double_value=0.011228)),
            kv("nan", AnyValue(double_value=math.nan)),
            kv("inf", AnyValue(double_value=math.inf)),
            kv("ninf", AnyValue(double_value=-math.inf)),
            kv("ok", AnyValue(bool_value=True)),
            kv("no", AnyValue(bool_value=False)),
            kv("raw", AnyValue(bytes_value=b"\x00\xff\x10binary")),
            kv("empty", AnyValue()),
            kv("unicode", s("grüße ✓ 日本")),
            kv("sources", arr()),
            kv("list", arr(s("a"), AnyValue(int_value=1), AnyValue(double_value=1.5), AnyValue(bool_value=False))),
            kv(
                "nested",
                kvl(
                    a=arr(kvl(b=s("c"), n=AnyValue(int_value=3)), arr(s("deep"))),
                    m=kvl(),
                    z=AnyValue(bytes_value=b"\x01"),
                ),
            ),
        ]
    )
    # a second record with a structured body and no ids
    lr2 = sl.log_records.add()
    lr2.time_unix_nano = 1
    lr2.body.CopyFrom(kvl(text=s("hello"), count=AnyValue(int_value=2)))
    return req


# ---------------------------------------------------------------------------------------------------------------
# logs: protobuf and JSON agree


@pytest.mark.parametrize("ints_as_numbers", [False, True], ids=["intValue-string", "intValue-number"])
def test_protobuf_and_json_give_identical_log_events(ints_as_numbers):
    req = rich_logs_request()
    from_pb = logs_from_protobuf(req.SerializeToString())
    from_json = logs_from_json(otlp_json(req, ints_as_numbers=ints_as_numbers))
    assert len(from_pb) == len(from_json) == 2
    for a, b in zip(from_pb, from_json, strict=True):
        assert fields(a) == fields(b)


def test_decoded_values_are_plain_python():
    (ev, ev2) = logs_from_json(otlp_json(rich_logs_request()))
    a = ev.attributes
    assert a["event.sequence"] == 7
    assert a["big"] == 2**62 + 1
    assert a["negative"] == -42
    assert a["cost_usd"] == 0.011228
    assert math.isnan(a["nan"])
    assert a["inf"] == math.inf
    assert a["ninf"] == -math.inf
    assert a["ok"] is True
    assert a["no"] is False
    assert a["raw"] == base64.b64encode(b"\x00\xff\x10binary").decode()
    assert a["empty"] is None
    assert a["unicode"] == "grüße ✓ 日本"
    assert a["sources"] == []
    assert a["list"] == ["a", 1, 1.5, False]
    assert a["nested"] == {"a": [{"b": "c", "n": 3}, ["deep"]], "m": {}, "z": "AQ=="}
    assert ev.trace_id == TRACE_ID.hex()
    assert ev.span_id == SPAN_ID.hex()
    assert ev.flags == 1
    assert ev.severity_number == 9
    assert ev.resource == {"service.name": "claude-code", "service.version": "2.1.332", "os.type": "linux"}
    assert ev.scope_name == "com.anthropic.claude_code.events"
    assert ev2.body == {"text": "hello", "count": 2}
    assert ev2.trace_id == ""
    assert ev2.span_id == ""


def test_intvalue_as_string_or_number_and_times_as_string_or_number():
    def doc(int_value: Any, time_value: Any) -> bytes:
        lr = {"timeUnixNano": time_value, "attributes": [{"key": "n", "value": {"intValue": int_value}}]}
        return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [lr]}]}]})

    for int_value in (61, "61", 61.0):
        for time_value in (1_795_643_845_897_000_000, "1795643845897000000"):
            (ev,) = logs_from_json(doc(int_value, time_value))
            assert ev.attributes["n"] == 61
            assert type(ev.attributes["n"]) is int
            assert ev.time_unix_nano == 1_795_643_845_897_000_000
    for bad in ("61.5", "sixty", True, 61.5, [61]):
        with pytest.raises(DecodeError, match="intValue"):
            logs_from_json(doc(bad, "0"))


@pytest.mark.parametrize(
    ("raw", "check"),
    [
        ("NaN", math.isnan),
        ("Infinity", lambda v: v == math.inf),
        ("-Infinity", lambda v: v == -math.inf),
        (1.5, lambda v: v == 1.5),
        (2, lambda v: v == 2.0 and isinstance(v, float)),
        ("2.5", lambda v: v == 2.5),
    ],
)
def test_json_double_values(raw, check):
    lr = {"attributes": [{"key": "d", "value": {"doubleValue": raw}}]}
    (ev,) = logs_from_json(orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [lr]}]}]}))
    assert check(ev.attributes["d"])


def test_bytes_value_is_base64_in_both_forms_and_invalid_base64_is_refused():
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().attributes.append(
        kv("b", AnyValue(bytes_value=bytes(range(256))))
    )
    (pb,) = logs_from_protobuf(req.SerializeToString())
    (js,) = logs_from_json(otlp_json(req))
    assert pb.attributes["b"] == js.attributes["b"] == base64.b64encode(bytes(range(256))).decode()
    bad = {"attributes": [{"key": "b", "value": {"bytesValue": "not base64!"}}]}
    with pytest.raises(DecodeError, match="bytesValue"):
        logs_from_json(orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [bad]}]}]}))


# ---------------------------------------------------------------------------------------------------------------
# ids


def _record_with(**fields_: Any) -> bytes:
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [fields_]}]}]})


def test_hex_ids_are_lowercased():
    (ev,) = logs_from_json(_record_with(traceId=TRACE_ID.hex().upper(), spanId=SPAN_ID.hex().upper()))
    assert ev.trace_id == TRACE_ID.hex()
    assert ev.span_id == SPAN_ID.hex()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("traceId", base64.b64encode(TRACE_ID).decode()),
        ("spanId", base64.b64encode(SPAN_ID).decode()),
        ("traceId", base64.b64encode(TRACE_ID + SPAN_ID).decode()),  # 32 characters, but not hex
        ("spanId", "zz" * 8),
    ],
)
def test_base64_or_non_hex_ids_are_refused_with_a_message_naming_the_field(key, value):
    with pytest.raises(DecodeError) as exc:
        logs_from_json(_record_with(**{key: value}))
    assert key in str(exc.value)
    assert "hex" in str(exc.value)


# ---------------------------------------------------------------------------------------------------------------
# depth limit


def nested_any(levels: int, leaf: AnyValue | None = None) -> AnyValue:
    v = leaf or s("x")
    for i in range(levels):
        v = arr(v) if i % 2 == 0 else kvl(k=v)
    return v


def logs_with(value: AnyValue, where: str) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    if where == "attribute":
        lr.attributes.append(kv("deep", value))
    elif where == "body":
        lr.body.CopyFrom(value)
    else:
        req.resource_logs[0].resource.attributes.append(kv("deep", value))
    return req


def _ld(field_number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    size = len(payload)
    varint = bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        varint.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([(field_number << 3) | 2]) + bytes(varint) + payload


def _outcome(fn: Any, data: bytes, max_depth: int) -> str:
    try:
        fn(data, max_depth)
    except DecodeError as exc:
        assert "nested deeper than" in str(exc)
        return "refused"
    return "accepted"


@pytest.mark.parametrize("where", ["attribute", "body", "resource"])
@pytest.mark.parametrize("max_depth", [1, 2, 5, 32])
def test_depth_limit_is_the_same_for_protobuf_and_json(where, max_depth):
    outcomes = []
    for levels in range(max_depth + 3):
        req = logs_with(nested_any(levels), where)
        pb = _outcome(logs_from_protobuf, req.SerializeToString(), max_depth)
        js = _outcome(logs_from_json, otlp_json(req), max_depth)
        assert pb == js, (levels, pb, js)
        outcomes.append(pb)
    # scalars always pass, and once refused, deeper values stay refused
    assert outcomes[0] == "accepted"
    assert outcomes[-1] == "refused"
    assert outcomes == sorted(outcomes)  # "accepted" < "refused"


def test_body_nested_exactly_max_depth_levels_is_accepted_and_one_more_is_refused():
    for fn, enc in ((logs_from_protobuf, lambda r: r.SerializeToString()), (logs_from_json, otlp_json)):
        assert _outcome(fn, enc(logs_with(nested_any(4), "body")), 4) == "accepted"
        assert _outcome(fn, enc(logs_with(nested_any(5), "body")), 4) == "refused"


def test_attribute_nested_exactly_max_depth_levels_is_accepted():
    for fn, enc in ((logs_from_protobuf, lambda r: r.SerializeToString()), (logs_from_json, otlp_json)):
        assert _outcome(fn, enc(logs_with(nested_any(4), "attribute")), 4) == "accepted"
        assert _outcome(fn, enc(logs_with(nested_any(5), "attribute")), 4) == "refused"


def test_the_log_stream_parses_at_once_and_walks_lazily():
    with pytest.raises(DecodeError, match="not a valid protobuf ExportLogsServiceRequest"):
        log_stream_from_protobuf(b"\x0a\xff\xff", 4)  # refused before any event is asked for
    req = logs_with(AnyValue(string_value="ok"), "attribute")
    req.resource_logs[0].scope_logs[0].log_records.add().attributes.append(kv("deep", nested_any(5)))
    stream = log_stream_from_protobuf(req.SerializeToString(), 4)
    assert next(stream).attributes == {"deep": "ok"}
    with pytest.raises(DecodeError, match="nested deeper than 4 levels"):
        next(stream)  # the second record is too deep: found when it is walked
    assert logs_from_protobuf(logs_with(AnyValue(string_value="x"), "body").SerializeToString())[0].body == "x"


def test_bytes_value_is_not_nesting():
    req = logs_with(AnyValue(bytes_value=b"\x01\x02"), "attribute")
    assert logs_from_protobuf(req.SerializeToString(), 1)[0].attributes["deep"] == "AQI="


def _deep_body_protobuf(levels: int) -> bytes:
    value = s("x").SerializeToString()
    for _ in range(levels):
        value = _ld(5, _ld(1, value))  # AnyValue.array_value -> ArrayValue.values -> AnyValue
    return _ld(1, _ld(2, _ld(2, _ld(5, value))))  # resource_logs -> scope_logs -> log_records -> body


def _deep_body_json(levels: int) -> bytes:
    j = '{"stringValue":"x"}'
    for _ in range(levels):
        j = '{"arrayValue":{"values":[' + j + "]}}"
    return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + j + "}]}]}]}").encode()


def test_the_largest_configurable_depth_is_honoured_for_protobuf_as_for_json():
    # upb stops near 48 AnyValue levels, so the config caps max_attribute_depth below that; at the cap both
    # encodings accept the same nesting and refuse one level more with the same error
    from collector.config import MAX_ATTRIBUTE_DEPTH

    assert logs_from_json(_deep_body_json(MAX_ATTRIBUTE_DEPTH), MAX_ATTRIBUTE_DEPTH)
    assert logs_from_protobuf(_deep_body_protobuf(MAX_ATTRIBUTE_DEPTH), MAX_ATTRIBUTE_DEPTH)
    for decode, body in ((logs_from_json, _deep_body_json), (logs_from_protobuf, _deep_body_protobuf)):
        with pytest.raises(DecodeError, match="nested deeper"):
            decode(body(MAX_ATTRIBUTE_DEPTH + 1), MAX_ATTRIBUTE_DEPTH)


def test_very_deep_values_are_refused_not_a_crash():
    # 10,000 levels: beyond protobuf's and orjson's own recursion limits (hand-encoded: the protobuf classes
    # themselves refuse to build such a message)
    with pytest.raises(DecodeError, match=r"(?i)depth|nested"):
        logs_from_protobuf(_deep_body_protobuf(10_000), 1000)
    with pytest.raises(DecodeError, match=r"(?i)depth|nested"):
        logs_from_json(_deep_body_json(10_000), 1000)


# ---------------------------------------------------------------------------------------------------------------
# malformed bodies


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"resourceLogs": {}}', "resourceLogs must be an array"),
        (b'{"resourceLogs": [1]}', "resourceLogs[0] must be an object"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}', "timeUnixNano"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"a": 1, "b": 2}}]}]}]}', "exactly one"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"fooValue": 1}}]}]}]}', "fooValue"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": 1}}]}]}]}', "stringValue"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": 1}]}]}]}]}', "key"),
    ],
)
def test_malformed_json_is_a_decode_error_naming_the_place(body, fragment):
    with pytest.raises(DecodeError) as exc:
        logs_from_json(body)
    assert fragment in str(exc.value)


def test_empty_json_object_and_empty_protobuf_are_empty_requests():
    assert logs_from_json(b"{}") == []
    assert logs_from_protobuf(b"") == []
    assert metrics_from_protobuf(b"") == []
    assert spans_from_json(b"{}") == []


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff\xff", rich_logs_request().SerializeToString()[:-5]])
def test_invalid_protobuf_is_a_decode_error(body):
    with pytest.raises(DecodeError, match="not a valid protobuf ExportLogsServiceRequest"):
        logs_from_protobuf(body)


def test_protobuf_string_with_invalid_utf8_is_a_decode_error():
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "claude_code.AAAA"
    data = req.SerializeToString().replace(b"AAAA", b"\xff\xfe\xfd\xfc")
    with pytest.raises(DecodeError, match="UTF-8"):
        logs_from_protobuf(data)


def test_severity_number_enum_name_is_accepted():
    (ev,) = logs_from_json(_record_with(severityNumber="SEVERITY_NUMBER_INFO"))
    assert ev.severity_number == 9


# ---------------------------------------------------------------------------------------------------------------
# traces and metrics: protobuf and JSON agree as well


def spans_request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", s("claude-code")))
    ss = rs.scope_spans.add()
    ss.scope.name = "com.anthropic.claude_code.tracing"
    ss.scope.version = "1.0.0"
    span = ss.spans.add()
    span.trace_id = TRACE_ID
    span.span_id = SPAN_ID
    span.parent_span_id = PARENT_ID
    span.name = "claude_code.tool"
    span.kind = Span.SPAN_KIND_INTERNAL
    span.start_time_unix_nano = 1_795_643_845_897_000_000
    span.end_time_unix_nano = 1_795_643_845_999_000_000
    span.attributes.extend([kv("file_path", s("/home/dev/project/hello.txt")), kv("n", AnyValue(int_value=2574))])
    span.status.code = 2
    span.status.message = "boom"
    ev = span.events.add()
    ev.name = "exception"
    ev.time_unix_nano = 5
    ev.attributes.append(kv("x", AnyValue(bool_value=True)))
    return req


def test_spans_protobuf_and_json_agree():
    req = spans_request()
    pb = spans_from_protobuf(req.SerializeToString())
    js = spans_from_json(otlp_json(req))
    assert pb == js
    assert pb[0]["kind"] == "internal"
    assert pb[0]["parent_span_id"] == PARENT_ID.hex()
    assert pb[0]["status"] == {"code": 2, "message": "boom"}


def metrics_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", s("claude-code")))
    sm = rm.scope_metrics.add()
    sm.scope.name = "com.anthropic.claude_code"
    sm.scope.version = "2.1.332"
    m = sm.metrics.add()
    m.name = "claude_code.cost.usage"
    m.unit = "USD"
    m.description = "Cost"
    m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    m.sum.is_monotonic = True
    p = m.sum.data_points.add()
    p.start_time_unix_nano = 1
    p.time_unix_nano = 2
    p.as_double = 0.25
    p.attributes.append(kv("model", s("claude-opus-5-5")))
    g = sm.metrics.add()
    g.name = "gauge"
    gp = g.gauge.data_points.add()
    gp.as_int = 2**60
    gp.time_unix_nano = 3
    h = sm.metrics.add()
    h.name = "hist"
    h.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    hp = h.histogram.data_points.add()
    hp.count = 3
    hp.sum = 6.5
    hp.bucket_counts.extend([1, 2])
    hp.explicit_bounds.extend([1.0])
    return req


def test_metrics_protobuf_and_json_agree():
    req = metrics_request()
    pb = metrics_from_protobuf(req.SerializeToString())
    js = metrics_from_json(otlp_json(req))
    assert pb == js
    assert [p["type"] for p in pb] == ["sum", "gauge", "histogram"]
    assert pb[0]["temporality"] == "delta"
    assert pb[1]["value"] == 2**60
    assert pb[2]["bucket_counts"] == [1, 2]


@pytest.mark.parametrize("kind", ["summary", "exponential_histogram"])
def test_summary_and_exponential_histogram_are_decoded_the_same_from_both_encodings(kind):
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "latency"
    point = getattr(m, kind).data_points.add()
    point.count = 4
    point.sum = 10.0
    point.time_unix_nano = 7
    point.attributes.append(kv("route", s("/v1/logs")))
    pb = metrics_from_protobuf(req.SerializeToString())
    js = metrics_from_json(otlp_json(req))
    assert len(pb) == 1
    assert pb == js
    assert pb[0]["type"] == kind
    assert (pb[0]["count"], pb[0]["sum"], pb[0]["attributes"]) == (4, 10.0, {"route": "/v1/logs"})
