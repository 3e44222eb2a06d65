"""Property-based fuzzing of :func:`collector.processing.normalize.normalize_log` on decoded values directly.

Whatever plain values a decoder can produce (str, bool, int64, float incl. NaN/inf, lists, dicts, None)
in any attribute, body, time or id, normalization never raises and every record it returns validates against the
audit record schema and can be stored.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from collector.processing.decode import LogEvent
from tests.fuzz.fuzz_support import check_records, examples, guarded, normalize_all
from tests.fuzz.test_fuzz_decode import CLAUDE_KEYS

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),  # what the decoders can produce (OTLP intValue is int64)
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["true", "False", "12", " 7 ", "1e3", "NaN", "inf", "", "<REDACTED>", "2026-11-25T21:57:26.254Z"]),
    st.dictionaries(st.sampled_from(["full_command", "file_path", "command", "path"]), st.text(max_size=10)).map(
        lambda d: __import__("orjson").dumps(d).decode()
    ),
)
value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
attrs = st.dictionaries(st.one_of(st.sampled_from(CLAUDE_KEYS), st.text(max_size=10)), value, max_size=14)
event_names = st.one_of(
    st.sampled_from(
        [
            "claude_code.tool_decision",
            "claude_code.tool_result",
            "claude_code.api_request",
            "claude_code.api_error",
            "claude_code.user_prompt",
            "tool_result",
            "",
        ]
    ),
    st.text(max_size=20),
)
times = st.one_of(st.just(0), st.integers(0, 2**64 - 1))


@st.composite
def log_events(draw: st.DrawFn) -> LogEvent:
    a = draw(attrs)
    if draw(st.booleans()):
        a["event.name"] = draw(st.sampled_from(["tool_decision", "tool_result", "api_request", "user_prompt"]))
    body: Any = draw(st.one_of(event_names, value))
    return LogEvent(
        resource=draw(attrs),
        scope_name=draw(st.text(max_size=10)),
        scope_version=draw(st.text(max_size=10)),
        time_unix_nano=draw(times),
        observed_time_unix_nano=draw(times),
        severity_number=draw(st.integers(0, 24)),
        severity_text=draw(st.text(max_size=5)),
        body=body,
        event_name=draw(st.one_of(st.just(""), event_names)),
        attributes=a,
        trace_id=draw(st.one_of(st.just(""), st.binary(min_size=16, max_size=16).map(bytes.hex))),
        span_id=draw(st.one_of(st.just(""), st.binary(min_size=8, max_size=8).map(bytes.hex))),
        flags=draw(st.integers(0, 2**32 - 1)),
    )


@examples(400)
@given(events=st.lists(log_events(), min_size=1, max_size=4))
def test_normalize_never_raises_and_records_validate(events: list[LogEvent]) -> None:
    with guarded(0, floor=32 * 2**20):
        records = normalize_all(events)
    check_records(records)
    assert len(records) >= len(events)
