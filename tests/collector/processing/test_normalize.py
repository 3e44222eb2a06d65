"""The pure normalizer (``collector.processing.normalize``) on hand-built :class:`LogEvent` objects.

Each test builds exactly the OTLP shape it is about (as ``decode`` would hand it over) and checks the audit record,
so a failure points at one rule of the event catalogue ("Monitoring usage",
 https://docs.claude.com/en/docs/claude-code/monitoring-usage) as the recorded runs show it.
"""

from __future__ import annotations

from typing import Any

import pytest

from collector.processing.decode import LogEvent
from collector.processing.normalize import (
    APPROVAL_MODE_BY_SOURCE,
    KIND_BY_EVENT,
    KINDS,
    event_name_of,
    normalize_log,
    normalize_logs,
    record_id,
    rfc3339_ms,
)

T0 = 1_795_643_845_897_000_000  # 2026-11-25T21:57:25.897Z
T0_TEXT = "2026-11-25T21:57:25.897Z"
RECEIVED = T0 + 5_000_000_000  # 5 s later
RECEIVED_TEXT = "2026-11-25T21:57:30.897Z"
SESSION = "7c2e6f0e-3a59-4c39-8a51-0d3c8f7e7a10"
RESOURCE = {"service.name": "claude-code", "service.version": "2.1.332", "os.type": "linux"}


def make_event(
    body: Any = "claude_code.user_prompt",
    attrs: dict[str, Any] | None = None,
    *,
    resource: dict[str, Any] | None = None,
    event_name: str = "",
    time_unix_nano: int = T0,
    observed_time_unix_nano: int | None = None,
    severity_number: int = 0,
    severity_text: str = "",
    trace_id: str = "",
    span_id: str = "",
) -> LogEvent:
    return LogEvent(
        resource=dict(RESOURCE) if resource is None else resource,
        scope_name="com.anthropic.claude_code.events",
        scope_version="2.1.332",
        time_unix_nano=time_unix_nano,
        observed_time_unix_nano=time_unix_nano if observed_time_unix_nano is None else observed_time_unix_nano,
        severity_number=severity_number,
        severity_text=severity_text,
        body=body,
        event_name=event_name,
        attributes=dict(attrs or {}),
        trace_id=trace_id,
        span_id=span_id,
        flags=0,
    )


def std(name: str, sequence: int = 0, **extra: Any) -> dict[str, Any]:
    """The attributes every real record carries, plus ``extra``."""
    return {
        "user.id": "a" * 64,
        "session.id": SESSION,
        "terminal.type": "vscode",
        "event.name": name,
        "event.timestamp": T0_TEXT,
        "event.sequence": sequence,
        **extra,
    }


def one(ev: LogEvent, **kw: Any) -> dict[str, Any]:
    out = normalize_log(ev, RECEIVED, **kw)
    assert len(out) == 1, out
    return out[0]


# ---------------------------------------------------------------------------------------------------------------
# event name


def test_event_name_from_body_wins_over_everything_else():
    ev = make_event("claude_code.tool_decision", {"event.name": "user_prompt"}, event_name="claude_code.api_error")
    assert event_name_of(ev) == "claude_code.tool_decision"
    rec = one(ev)
    assert rec["event"] == "claude_code.tool_decision"
    assert rec["kind"] == "tool_decision"
    assert "body" not in rec  # the body only repeated the event name


@pytest.mark.parametrize(
    ("event_name", "expected"),
    [
        ("tool_result", "claude_code.tool_result"),
        ("claude_code.tool_result", "claude_code.tool_result"),
        ("com.example.other", "com.example.other"),
    ],
)
def test_event_name_from_log_record_event_name(event_name, expected):
    ev = make_event(body=None, attrs={"event.name": "user_prompt"}, event_name=event_name)
    assert event_name_of(ev) == expected


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("api_request", "claude_code.api_request"),
        ("claude_code.api_request", "claude_code.api_request"),
    ],
)
def test_event_name_from_event_name_attribute_bare_name_is_prefixed(attr, expected):
    ev = make_event(body=None, attrs={"event.name": attr})
    assert event_name_of(ev) == expected
    assert one(ev)["kind"] == "api_request"


def test_body_that_is_not_an_event_name_is_kept_and_the_attribute_names_the_event():
    ev = make_event(body="the model said something long", attrs={"event.name": "assistant_response"})
    rec = one(ev)
    assert rec["event"] == "claude_code.assistant_response"
    assert rec["kind"] == "event"
    assert rec["body"] == "the model said something long"


def test_no_name_anywhere_is_unknown():
    rec = one(make_event(body=None, attrs={}))
    assert rec["event"] == "unknown"
    assert rec["kind"] == "event"


# ---------------------------------------------------------------------------------------------------------------
# kinds


@pytest.mark.parametrize(("event", "kind"), sorted(KIND_BY_EVENT.items()))
def test_every_documented_event_maps_to_its_kind(event, kind):
    rec = one(make_event(event, std(event.removeprefix("claude_code."))))
    assert rec["kind"] == kind
    assert rec["event"] == event
    assert rec["schema_version"] == "1.0"


def test_kind_list_has_every_kind_the_normalizer_produces():
    assert set(KINDS) >= {
        "tool_decision",
        "tool_result",
        "api_request",
        "api_error",
        "user_prompt",
        "file_change",
        "event",
    }


def test_unknown_event_is_kept_as_kind_event_with_all_attributes():
    attrs = std(
        "managed_settings_resolved",
        7,
        **{
            "managed_settings.trigger": "startup",
            "managed_settings.sources": [],
            "managed_settings.source_behavior": "first-wins",
            "nested": {"a": [1, 2, {"b": None}]},
            "model": "claude-opus-5-5",
        },
    )
    rec = one(make_event("claude_code.managed_settings_resolved", attrs))
    assert rec["kind"] == "event"
    assert rec["event"] == "claude_code.managed_settings_resolved"
    assert rec["attributes"] == attrs
    assert rec["resource"] == RESOURCE
    assert rec["model"] == "claude-opus-5-5"
    assert rec["sequence"] == 7
    assert rec["session"] == {"id": SESSION}


# ---------------------------------------------------------------------------------------------------------------
# coercion of string-typed numbers and booleans


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False), (True, True), (0, False)],
)
def test_tool_result_success_is_coerced_to_bool(raw, expected):
    rec = one(make_event("claude_code.tool_result", std("tool_result", tool_name="Bash", success=raw)))
    assert rec["tool"]["success"] is expected


def test_unparseable_boolean_is_left_out():
    rec = one(make_event("claude_code.tool_result", std("tool_result", tool_name="Bash", success="perhaps")))
    assert "success" not in rec["tool"]


@pytest.mark.parametrize(("raw", "expected"), [("61", 61), ("61.5", 61.5), (61, 61), (61.0, 61), (" 7 ", 7)])
def test_duration_strings_become_numbers(raw, expected):
    rec = one(make_event("claude_code.tool_result", std("tool_result", tool_name="Bash", duration_ms=raw)))
    assert rec["tool"]["duration_ms"] == expected
    assert type(rec["tool"]["duration_ms"]) is type(expected)


def test_string_sizes_and_lengths_become_integers():
    rec = one(
        make_event(
            "claude_code.tool_result",
            std("tool_result", tool_name="Bash", tool_input_size_bytes="108", tool_result_size_bytes="4000"),
        )
    )
    assert rec["tool"]["input_size_bytes"] == 108
    assert rec["tool"]["result_size_bytes"] == 4000
    prompt = one(make_event("claude_code.user_prompt", std("user_prompt", prompt_length="47")))
    assert prompt["prompt"]["length"] == 47


def test_api_request_string_numbers_are_coerced():
    attrs = std(
        "api_request",
        model="claude-opus-5-5",
        input_tokens="1200",
        output_tokens=34,
        cache_read_tokens="0",
        cache_creation_tokens=5.0,
        cost_usd="0.011228",
        duration_ms="2574",
        ttft_ms="880.5",
    )
    rec = one(make_event("claude_code.api_request", attrs))
    assert rec["tokens"] == {"input": 1200, "output": 34, "cache_read": 0, "cache_creation": 5}
    assert rec["cost_usd"] == pytest.approx(0.011228)
    assert rec["api"]["duration_ms"] == 2574
    assert rec["api"]["ttft_ms"] == 880.5


def test_sequence_as_string_is_coerced():
    rec = one(make_event("claude_code.user_prompt", std("user_prompt", sequence="12")))  # type: ignore[arg-type]
    assert rec["sequence"] == 12


# ---------------------------------------------------------------------------------------------------------------
# approval mode


DOCUMENTED_SOURCES = {
    "config": "automatic",
    "hook": "hook",
    "user_permanent": "manual",
    "user_temporary": "manual",
    "user_abort": "manual",
    "user_reject": "manual",
}


def test_mapping_table_covers_every_documented_source():
    assert dict(APPROVAL_MODE_BY_SOURCE) == DOCUMENTED_SOURCES


@pytest.mark.parametrize(("source", "mode"), sorted(DOCUMENTED_SOURCES.items()))
def test_tool_decision_approval_mode(source, mode):
    rec = one(
        make_event(
            "claude_code.tool_decision", std("tool_decision", tool_name="Bash", decision="accept", source=source)
        )
    )
    assert rec["tool"]["decision_source"] == source
    assert rec["tool"]["approval_mode"] == mode
    assert rec["tool"]["decision"] == "accept"


@pytest.mark.parametrize(("source", "mode"), sorted(DOCUMENTED_SOURCES.items()))
def test_tool_result_decision_source_gives_approval_mode(source, mode):
    attrs = std("tool_result", tool_name="Bash", decision_type="accept", decision_source=source)
    rec = one(make_event("claude_code.tool_result", attrs))
    assert rec["tool"]["approval_mode"] == mode
    assert rec["tool"]["decision"] == "accept"


def test_no_source_means_no_approval_mode():
    rec = one(make_event("claude_code.tool_decision", std("tool_decision", tool_name="Bash", decision="reject")))
    assert rec["tool"]["decision"] == "reject"
    assert "approval_mode" not in rec["tool"]
    assert "decision_source" not in rec["tool"]


# ---------------------------------------------------------------------------------------------------------------
# file_change


FILE_TOOL_OPS = {"Write": "write", "Edit": "edit", "MultiEdit": "edit", "NotebookEdit": "notebook_edit"}


@pytest.mark.parametrize(("tool", "operation"), sorted(FILE_TOOL_OPS.items()))
def test_file_change_derived_from_file_tool_result(tool, operation):
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    tool_input = f'{{"{key}":"/home/dev/project/hello.txt","content":"hi\\n"}}'
    attrs = std("tool_result", 4, tool_name=tool, success="true", tool_input=tool_input, tool_use_id="toolu_1")
    recs = normalize_log(make_event("claude_code.tool_result", attrs), RECEIVED)
    assert [r["kind"] for r in recs] == ["tool_result", "file_change"]
    result, change = recs
    assert result["file"] == {"path": "/home/dev/project/hello.txt", "operation": operation}
    assert change["file"] == {"path": "/home/dev/project/hello.txt", "operation": operation}
    assert change["derived_from"] == result["id"]
    assert change["id"] != result["id"]
    assert change["event"] == "claude_code.tool_result"
    assert change["tool"]["name"] == tool
    assert change["tool"]["input"]["content"] == "hi\n"
    assert result["tool"]["input"][key] == "/home/dev/project/hello.txt"


def test_file_change_from_tool_parameters_when_input_has_no_path():
    attrs = std("tool_result", tool_name="Write", tool_parameters='{"file_path":"/p/a.txt"}', tool_input="{}")
    recs = normalize_log(make_event("claude_code.tool_result", attrs), RECEIVED)
    assert [r["kind"] for r in recs] == ["tool_result", "file_change"]
    assert recs[1]["file"]["path"] == "/p/a.txt"


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param({"tool_name": "Bash", "tool_input": '{"command":"cat /etc/passwd","file_path":"/x"}'}, id="bash"),
        pytest.param({"tool_name": "Write"}, id="no-tool-input"),
        pytest.param({"tool_name": "Write", "tool_input": '{"content":"x"}'}, id="input-without-path"),
        pytest.param({"tool_name": "Edit", "tool_input": '{"file_path": "/p/a.txt", '}, id="unparseable-input"),
        pytest.param({"tool_name": "Edit", "tool_input": "/p/a.txt"}, id="input-is-plain-text"),
        pytest.param({"tool_name": "Write", "tool_input": '{"file_path":""}'}, id="empty-path"),
    ],
)
def test_no_file_change(attrs):
    recs = normalize_log(make_event("claude_code.tool_result", std("tool_result", **attrs)), RECEIVED)
    assert [r["kind"] for r in recs] == ["tool_result"]


def test_unparseable_tool_input_is_kept_as_text():
    text = '{"file_path": "/p/a.txt", '
    rec = one(make_event("claude_code.tool_result", std("tool_result", tool_name="Edit", tool_input=text)))
    assert rec["tool"]["input"] == text
    assert "file" not in rec


def test_file_tool_decision_never_derives_a_file_change():
    attrs = std("tool_decision", tool_name="Write", decision="accept", source="config", tool_input='{"file_path":"/a"}')
    recs = normalize_log(make_event("claude_code.tool_decision", attrs), RECEIVED)
    assert [r["kind"] for r in recs] == ["tool_decision"]


def test_bash_command_from_parameters_or_input():
    params = '{"bash_command":"rm","full_command":"rm -f hello.txt","description":"Remove"}'
    dec = one(make_event("claude_code.tool_decision", std("tool_decision", tool_name="Bash", tool_parameters=params)))
    assert dec["tool"]["command"] == "rm -f hello.txt"
    assert dec["tool"]["parameters"]["bash_command"] == "rm"
    res = one(
        make_event("claude_code.tool_result", std("tool_result", tool_name="Bash", tool_input='{"command":"ls"}'))
    )
    assert res["tool"]["command"] == "ls"


# ---------------------------------------------------------------------------------------------------------------
# ids


def test_id_is_stable_for_the_same_session_sequence_and_event():
    a = one(make_event("claude_code.tool_result", std("tool_result", 3, tool_name="Bash")))
    # a retry: same event, received later, even with other attribute values and time
    b_ev = make_event(
        "claude_code.tool_result", std("tool_result", 3, tool_name="Bash", success="true"), time_unix_nano=T0 + 1
    )
    b = normalize_log(b_ev, RECEIVED + 10**9)[0]
    assert a["id"] == b["id"]
    assert a["id"] == record_id(SESSION, 3, "claude_code.tool_result", None)
    assert len(a["id"]) == 32
    assert int(a["id"], 16) >= 0


def test_id_differs_by_event_sequence_and_session():
    base = one(make_event("claude_code.tool_result", std("tool_result", 3)))["id"]
    other_event = one(make_event("claude_code.tool_decision", std("tool_decision", 3)))["id"]
    other_seq = one(make_event("claude_code.tool_result", std("tool_result", 4)))["id"]
    other_session = one(make_event("claude_code.tool_result", {**std("tool_result", 3), "session.id": "s2"}))["id"]
    assert len({base, other_event, other_seq, other_session}) == 4


def test_session_id_from_resource_is_used_for_the_id():
    attrs = std("user_prompt", 9)
    del attrs["session.id"]
    rec = one(make_event("claude_code.user_prompt", attrs, resource={**RESOURCE, "session.id": SESSION}))
    assert rec["session"] == {"id": SESSION}
    assert rec["id"] == record_id(SESSION, 9, "claude_code.user_prompt", None)


@pytest.mark.parametrize("missing", ["session.id", "event.sequence"])
def test_fallback_id_is_a_content_hash(missing):
    attrs = std("user_prompt", 1, prompt_length="5")
    del attrs[missing]
    a = one(make_event("claude_code.user_prompt", attrs))
    same = normalize_log(make_event("claude_code.user_prompt", dict(attrs)), RECEIVED + 10**9)[0]
    changed = one(make_event("claude_code.user_prompt", {**attrs, "prompt_length": "6"}))
    later = one(make_event("claude_code.user_prompt", attrs, time_unix_nano=T0 + 10**6))
    assert a["id"] == same["id"]  # received time does not matter
    assert a["id"] != changed["id"]
    assert a["id"] != later["id"]
    assert a["id"] != record_id(SESSION, 1, "claude_code.user_prompt", None)
    assert len(a["id"]) == 32


# ---------------------------------------------------------------------------------------------------------------
# time


def test_record_time_is_used_first():
    rec = one(make_event(attrs=std("user_prompt"), time_unix_nano=T0, observed_time_unix_nano=T0 + 10**9))
    assert rec["time"] == T0_TEXT
    assert rec["observed_time"] == "2026-11-25T21:57:26.897Z"
    assert rec["received_time"] == RECEIVED_TEXT


def test_time_falls_back_to_observed_time():
    rec = one(make_event(attrs=std("user_prompt"), time_unix_nano=0, observed_time_unix_nano=T0 + 10**9))
    assert rec["time"] == "2026-11-25T21:57:26.897Z"
    assert rec["observed_time"] == rec["time"]


def test_time_falls_back_to_event_timestamp():
    attrs = std("user_prompt", **{"event.timestamp": "2026-11-24T08:00:00.123Z"})
    rec = one(make_event(attrs=attrs, time_unix_nano=0, observed_time_unix_nano=0))
    assert rec["time"] == "2026-11-24T08:00:00.123Z"
    assert rec["observed_time"] == rec["time"]
    assert rec["received_time"] == RECEIVED_TEXT


@pytest.mark.parametrize("stamp", [None, "", "not a time", 12345])
def test_time_falls_back_to_received_time(stamp):
    attrs = std("user_prompt")
    attrs["event.timestamp"] = stamp
    rec = one(make_event(attrs=attrs, time_unix_nano=0, observed_time_unix_nano=0))
    assert rec["time"] == RECEIVED_TEXT
    assert rec["received_time"] == RECEIVED_TEXT


def test_rfc3339_has_millisecond_precision_in_utc():
    assert rfc3339_ms(T0 + 999_999) == T0_TEXT
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"


# ---------------------------------------------------------------------------------------------------------------
# identity


def test_identity_from_enduser_id_email():
    attrs = std("user_prompt", **{"enduser.id": "alice@example.com"})
    rec = one(make_event(attrs=attrs))
    assert rec["user"]["email"] == "alice@example.com"
    assert rec["user"]["identity_source"] == "enduser.id"
    assert rec["user"]["enduser_id"] == "alice@example.com"
    assert rec["user"]["id"] == "a" * 64


def test_identity_from_enduser_id_on_the_resource():
    rec = one(make_event(attrs=std("user_prompt"), resource={**RESOURCE, "enduser.id": "bob@example.com"}))
    assert rec["user"]["email"] == "bob@example.com"
    assert rec["user"]["identity_source"] == "enduser.id"


def test_enduser_id_that_is_not_an_email_is_not_an_email():
    rec = one(make_event(attrs=std("user_prompt", **{"enduser.id": "alice"})))
    assert rec["user"]["enduser_id"] == "alice"
    assert "email" not in rec["user"]
    assert "identity_source" not in rec["user"]


def test_user_email_wins_over_enduser_id():
    attrs = std("user_prompt", **{"user.email": "carol@example.com", "enduser.id": "alice@example.com"})
    rec = one(make_event(attrs=attrs))
    assert rec["user"]["email"] == "carol@example.com"
    assert rec["user"]["identity_source"] == "user.email"


def test_organization_terminal_and_app():
    attrs = std("user_prompt", **{"organization.id": "org-1", "app.version": "2.1.332", "app.entrypoint": "sdk-cli"})
    rec = one(make_event(attrs=attrs))
    assert rec["organization"] == {"id": "org-1"}
    assert rec["terminal"] == {"type": "vscode"}
    assert rec["app"] == {"version": "2.1.332", "entrypoint": "sdk-cli"}


# ---------------------------------------------------------------------------------------------------------------
# prompts and API requests


def test_prompt_text_is_kept():
    rec = one(make_event(attrs=std("user_prompt", prompt="write hello.txt", **{"prompt.id": "p1"})))
    assert rec["prompt"] == {"id": "p1", "text": "write hello.txt"}


def test_redacted_prompt_text_is_dropped():
    rec = one(make_event(attrs=std("user_prompt", prompt="<REDACTED>", prompt_length="47", **{"prompt.id": "p1"})))
    assert rec["prompt"] == {"id": "p1", "length": 47}
    assert rec["attributes"]["prompt"] == "<REDACTED>"


def test_api_request_cost_from_micros_when_cost_usd_missing():
    rec = one(make_event("claude_code.api_request", std("api_request", cost_usd_micros=11228)))
    assert rec["cost_usd"] == pytest.approx(0.011228)
    rec = one(make_event("claude_code.api_request", std("api_request", cost_usd_micros="11228")))
    assert rec["cost_usd"] == pytest.approx(0.011228)


def test_api_request_cost_usd_wins_over_micros():
    rec = one(make_event("claude_code.api_request", std("api_request", cost_usd=0.5, cost_usd_micros=11228)))
    assert rec["cost_usd"] == 0.5


def test_api_request_without_any_cost_has_no_cost():
    rec = one(make_event("claude_code.api_request", std("api_request")))
    assert "cost_usd" not in rec


def test_api_error_fields():
    attrs = std("api_error", model="m", status_code="500", attempt=2, error="fake failure", duration_ms=611)
    rec = one(make_event("claude_code.api_error", attrs))
    assert rec["api"] == {"status_code": 500, "attempt": 2, "error": "fake failure", "duration_ms": 611}
    assert rec["model"] == "m"


# ---------------------------------------------------------------------------------------------------------------
# envelope


def test_trace_severity_scope_and_source():
    ev = make_event(
        attrs=std("user_prompt"), trace_id="ab" * 16, span_id="cd" * 8, severity_number=9, severity_text="INFO"
    )
    rec = one(ev, transport="grpc", source_identity="tenant-a")
    assert rec["trace"] == {"trace_id": "ab" * 16, "span_id": "cd" * 8}
    assert rec["severity"] == {"number": 9, "text": "INFO"}
    assert rec["scope"] == {"name": "com.anthropic.claude_code.events", "version": "2.1.332"}
    assert rec["source"] == {"transport": "grpc", "identity": "tenant-a"}


def test_normalize_logs_keeps_request_order_and_adds_derived_records():
    events = [
        make_event("claude_code.user_prompt", std("user_prompt", 0)),
        make_event(
            "claude_code.tool_result", std("tool_result", 1, tool_name="Write", tool_input='{"file_path":"/a"}')
        ),
        make_event("claude_code.api_request", std("api_request", 2)),
    ]
    kinds = [r["kind"] for r in normalize_logs(events, RECEIVED, "http")]
    assert kinds == ["user_prompt", "tool_result", "file_change", "api_request"]


def test_normalizer_does_not_mutate_its_input():
    attrs = std("tool_result", tool_name="Write", tool_input='{"file_path":"/a"}')
    snapshot = dict(attrs)
    ev = make_event("claude_code.tool_result", attrs)
    normalize_log(ev, RECEIVED)
    assert ev.attributes == snapshot
    assert ev.resource == RESOURCE
