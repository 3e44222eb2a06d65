"""Minimal reproductions of the bugs the fuzzers found in code outside this suite, as strict expected failures.

Each test states the correct behaviour and is marked ``xfail(strict=True)``: while the bug is there it is reported as
an expected failure; once it is fixed the test passes, ``strict`` turns that into a failure, and whoever fixed it
removes the mark here and the matching entry of :func:`tests.fuzz.fuzz_support.known_bug` (so the fuzzers cover
the case again).
"""

from __future__ import annotations

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
    check_records(normalize_all(events))


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
    check_records(normalize_all(logs_from_json(body)))


def test_unknown_decision_value_gives_a_valid_record() -> None:
    """A ``tool_decision`` with ``decision: "ask"`` (or any value other than accept/reject/allow/deny) is stored
    with ``tool.decision: "ask"``, which ``schemas/audit_record.v1.json`` refuses (enum accept/reject). Either the
    schema should allow other values or the normalizer should put them elsewhere."""
    body = _logs([*SESSION, {"key": "decision", "value": {"stringValue": "ask"}}])
    check_records(normalize_all(logs_from_json(body)))
