"""Property-based fuzzing of OTLP decoding and normalization (logs, metrics, spans; protobuf and JSON).

For any input, decoding returns values or raises :class:`DecodeError`, nothing else; it finishes quickly and within
a memory bound; and every log record that decodes normalizes into records that validate against the audit record
schema. Inputs: random bytes, the recorded Claude Code bodies mutated (bit flips, truncations, insertions,
duplicated chunks), and generated OTLP/JSON documents with random AnyValues, numbers as strings, huge and empty
values (see ``tests/fuzz/fuzz_support.py`` for profiles and guards).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
from google.protobuf import json_format
from hypothesis import assume, given
from hypothesis import strategies as st

from collector.processing.decode import DECODERS, DecodeError, LogEvent
from tests.fuzz.fuzz_support import check_records, examples, guarded, known_decode_gap, normalize_all, recorded_bodies

SIGNALS = ("logs", "metrics", "traces")
MEDIA = ("protobuf", "json")
BODIES = recorded_bodies()
MAX_DEPTH = 32


def decode_or_error(signal: str, media: str, body: bytes, *, skip_known_gaps: bool = True) -> list[Any] | None:
    """Decode ``body``; None for a DecodeError. Any other exception fails the test.

    Inputs that only show a reported, not yet fixed bug (:func:`known_decode_gap`) are discarded with ``assume``.
    """
    try:
        items = list(DECODERS[(signal, media)](body, MAX_DEPTH))  # log streams are walked lazily: walk them here
    except DecodeError as exc:
        assert str(exc), "a DecodeError must say what is wrong"
        return None
    assert isinstance(items, list)
    if skip_known_gaps:
        assume(known_decode_gap(items) is None)
    if signal == "logs":
        assert all(isinstance(ev, LogEvent) for ev in items)
        check_records(normalize_all(items))
    else:
        for item in items:
            assert isinstance(item, dict)
            orjson.dumps(item)
    return items


def test_every_recorded_body_decodes_and_normalizes() -> None:
    assert len(BODIES) >= 17
    for signal, media, body in BODIES:
        items = decode_or_error(signal, media, body, skip_known_gaps=False)
        assert items, f"a recorded {signal}/{media} body must decode to something"


@examples(300)
@given(signal=st.sampled_from(SIGNALS), media=st.sampled_from(MEDIA), body=st.binary(max_size=4096))
def test_random_bytes(signal: str, media: str, body: bytes) -> None:
    with guarded(len(body)):
        decode_or_error(signal, media, body)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, bytes]:
    signal, media, body = draw(st.sampled_from(BODIES))
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "duplicate", "byte")))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        else:
            n = draw(st.integers(1, 256))
            data[i:i] = data[i : i + n] * draw(st.integers(1, 4))
    return signal, media, bytes(data)


@examples(400)
@given(case=mutated())
def test_mutated_recorded_bodies(case: tuple[str, str, bytes]) -> None:
    signal, media, body = case
    with guarded(len(body)):
        decode_or_error(signal, media, body)


# ---------------------------------------------------------------------------------------------------------------
# generated OTLP/JSON

HUGE = 70_000
text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "true", "false", "True", "1", "0", "NaN", "-0", "1e309", "<REDACTED>", "{", "[]", "{}"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "\x00", "💥"]), st.integers(HUGE - 10, HUGE)),
)
int_like = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**70), 2**70),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.sampled_from(["", " 12 ", "1.5", "12abc", "9" * 30, "-" + "9" * 19, "0x10", "1e3"]),
    st.floats(allow_nan=True, allow_infinity=True),
)
CLAUDE_KEYS = [
    "session.id",
    "event.sequence",
    "event.name",
    "event.timestamp",
    "prompt.id",
    "user.id",
    "user.email",
    "user.account_uuid",
    "organization.id",
    "terminal.type",
    "app.version",
    "tool_name",
    "tool_use_id",
    "decision",
    "source",
    "decision_type",
    "decision_source",
    "success",
    "duration_ms",
    "tool_parameters",
    "tool_input",
    "tool_input_size_bytes",
    "model",
    "cost_usd",
    "cost_usd_micros",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "request_id",
    "status_code",
    "attempt",
    "error",
    "prompt",
    "prompt_length",
    "permission_mode",
    "enduser.id",
    "user.groups",
    "ttft_ms",
]
keys = st.one_of(st.sampled_from(CLAUDE_KEYS), st.text(max_size=12))


def any_value(depth: int = 0) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.builds(lambda s: {"stringValue": s}, text),
        st.builds(lambda i: {"intValue": i}, int_like),
        st.builds(
            lambda f: {"doubleValue": f}, st.one_of(st.floats(), st.sampled_from(["NaN", "Infinity", "1.5", "x"]))
        ),
        st.builds(lambda b: {"boolValue": b}, st.one_of(st.booleans(), st.sampled_from(["true", 1]))),
        st.builds(lambda b: {"bytesValue": base64.b64encode(b).decode()}, st.binary(max_size=32)),
        st.sampled_from([{}, {"bytesValue": "!!"}, {"stringValue": "a", "intValue": 1}, {"otherValue": 1}, None, 7]),
    )
    if depth >= 3:
        return leaves
    return st.one_of(
        leaves,
        st.builds(lambda xs: {"arrayValue": {"values": xs}}, st.lists(any_value(depth + 1), max_size=4)),
        st.builds(lambda kvs: {"kvlistValue": {"values": kvs}}, st.lists(key_value(depth + 1), max_size=4)),
    )


def key_value(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda k, v: {"key": k, "value": v}, keys, any_value(depth))


def json_value_for(key: str) -> st.SearchStrategy[Any]:
    """Claude Code-shaped values for a known key, some of them JSON text (tool_parameters / tool_input)."""
    params = st.dictionaries(
        st.sampled_from(["full_command", "command", "file_path", "path", "notebook_path", "bash_command"]),
        st.one_of(text, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
        max_size=4,
    ).map(json.dumps)
    return st.one_of(params, text)


attributes = st.lists(key_value(), max_size=12)
claude_attributes = st.lists(
    st.sampled_from(CLAUDE_KEYS).flatmap(
        lambda k: (
            st.builds(lambda v: {"key": k, "value": {"stringValue": v}}, json_value_for(k))
            | st.builds(lambda v: {"key": k, "value": {"intValue": v}}, int_like)
        )
    ),
    max_size=16,
)
hex_id = st.one_of(st.binary(min_size=16, max_size=16).map(bytes.hex), st.sampled_from(["", "zz" * 16, "ab", None]))
span_hex = st.one_of(st.binary(min_size=8, max_size=8).map(bytes.hex), st.sampled_from(["", "0" * 15, None]))
times = st.one_of(int_like, st.none())


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


log_record = st.builds(
    lambda t, o, body, en, attrs, cattrs, tid, sid, sev: _drop_none(
        {
            "timeUnixNano": t,
            "observedTimeUnixNano": o,
            "body": body,
            "eventName": en,
            "attributes": attrs + cattrs,
            "traceId": tid,
            "spanId": sid,
            "severityNumber": sev,
        }
    ),
    times,
    times,
    st.one_of(
        st.sampled_from(
            [
                {"stringValue": f"claude_code.{n}"}
                for n in (
                    "tool_decision",
                    "tool_result",
                    "api_request",
                    "api_error",
                    "user_prompt",
                    "assistant_response",
                )
            ]
        ),
        any_value(),
    ),
    st.one_of(st.none(), text),
    attributes,
    claude_attributes,
    hex_id,
    span_hex,
    st.one_of(st.none(), st.integers(-5, 30), st.sampled_from(["SEVERITY_NUMBER_INFO", "bogus"])),
)
logs_doc = st.builds(
    lambda res, scope, recs: {
        "resourceLogs": [{"resource": {"attributes": res}, "scopeLogs": [{"scope": scope, "logRecords": recs}]}]
    },
    attributes,
    st.one_of(st.none(), st.builds(lambda n, v: {"name": n, "version": v}, text, text), st.just(7)),
    st.lists(log_record, max_size=6),
)
number_point = st.builds(
    lambda attrs, t, st_, value: _drop_none(
        {"attributes": attrs, "timeUnixNano": t, "startTimeUnixNano": st_, **value}
    ),
    attributes,
    times,
    times,
    st.one_of(
        st.builds(lambda v: {"asDouble": v}, st.one_of(st.floats(), st.sampled_from(["NaN", "1.5", "x"]))),
        st.builds(lambda v: {"asInt": v}, int_like),
        st.just({}),
    ),
)
metric = st.builds(
    lambda name, unit, kind, points, temporality: {
        "name": name,
        "unit": unit,
        kind: {"dataPoints": points, **({"aggregationTemporality": temporality} if kind == "sum" else {})},
    },
    text,
    text,
    st.sampled_from(["sum", "gauge", "histogram", "summary", "exponentialHistogram"]),
    st.lists(number_point, max_size=4),
    st.one_of(st.integers(-1, 3), st.sampled_from(["AGGREGATION_TEMPORALITY_DELTA", "nope"])),
)
metrics_doc = st.builds(
    lambda res, ms: {"resourceMetrics": [{"resource": {"attributes": res}, "scopeMetrics": [{"metrics": ms}]}]},
    attributes,
    st.lists(metric, max_size=4),
)
span = st.builds(
    lambda tid, sid, pid, name, kind, s, e, attrs, status, events: _drop_none(
        {
            "traceId": tid,
            "spanId": sid,
            "parentSpanId": pid,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": s,
            "endTimeUnixNano": e,
            "attributes": attrs,
            "status": status,
            "events": events,
        }
    ),
    hex_id,
    span_hex,
    span_hex,
    st.one_of(st.sampled_from(["claude_code.tool", "claude_code.interaction"]), text),
    st.one_of(st.integers(-1, 6), st.sampled_from(["SPAN_KIND_INTERNAL", "x"]), st.none()),
    times,
    times,
    st.one_of(attributes, claude_attributes),
    st.one_of(st.none(), st.builds(lambda c, m: {"code": c, "message": m}, st.integers(-1, 3), text)),
    st.lists(
        st.builds(lambda n, t, a: {"name": n, "timeUnixNano": t, "attributes": a}, text, times, attributes), max_size=2
    ),
)
traces_doc = st.builds(
    lambda res, spans: {"resourceSpans": [{"resource": {"attributes": res}, "scopeSpans": [{"spans": spans}]}]},
    attributes,
    st.lists(span, max_size=4),
)
DOCS = {"logs": logs_doc, "metrics": metrics_doc, "traces": traces_doc}


def _to_protobuf(signal: str, doc: dict[str, Any]) -> bytes | None:
    """The same request as protobuf, when protobuf's own JSON parser accepts the document (else None)."""
    from tests.contract.make_golden import REQUEST_TYPES, _convert_ids

    try:
        converted = _convert_ids(doc, lambda h: base64.b64encode(bytes.fromhex(h)).decode())
        return json_format.ParseDict(converted, REQUEST_TYPES[signal]()).SerializeToString()
    except Exception:
        return None


@examples(150)
@given(signal=st.sampled_from(SIGNALS), data=st.data())
def test_generated_otlp_json_documents(signal: str, data: st.DataObject) -> None:
    doc = data.draw(DOCS[signal])
    body = json.dumps(doc).encode("utf-8", "surrogatepass")  # stdlib: big ints and NaN tokens pass through
    with guarded(len(body)):
        decode_or_error(signal, "json", body)
    pb = _to_protobuf(signal, doc)
    if pb is not None:
        with guarded(len(pb)):
            decode_or_error(signal, "protobuf", pb)


@examples(60)
@given(depth=st.integers(30, 200), kind=st.sampled_from(["arrayValue", "kvlistValue"]))
def test_deeply_nested_values_are_refused_not_crashed(depth: int, kind: str) -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = (
            {"arrayValue": {"values": [value]}}
            if kind == "arrayValue"
            else {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
        )
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": "a", "value": value}]}]}]}]}
    body = json.dumps(doc).encode()
    with guarded(len(body)):
        items = decode_or_error("logs", "json", body)
    assert (items is None) == (depth > MAX_DEPTH), "more than max_depth nested values are refused, fewer accepted"
    pb = _to_protobuf("logs", doc)
    if pb is not None:
        with guarded(len(pb)):
            decode_or_error("logs", "protobuf", pb)
