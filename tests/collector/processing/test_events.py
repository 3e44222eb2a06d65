"""The event catalogue: every documented Claude Code event has a kind of its own, mapped field by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from collector.processing.events import CATALOGUE, KIND_BY_EVENT, KINDS
from collector.processing.normalize import normalize_log, normalize_logs
from tests.collector.processing.test_normalize import RESOURCE, T0, make_event, std

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "schemas" / "audit_record.v1.json").read_text())

# the 26 events of the Claude Code monitoring docs, plus managed_settings_resolved seen on the wire
DOCUMENTED = [
    "user_prompt",
    "assistant_response",
    "api_request",
    "api_error",
    "api_refusal",
    "api_retries_exhausted",
    "api_request_body",
    "api_response_body",
    "tool_decision",
    "tool_result",
    "permission_mode_changed",
    "auth",
    "mcp_server_connection",
    "internal_error",
    "plugin_installed",
    "plugin_loaded",
    "skill_activated",
    "at_mention",
    "hook_registered",
    "hook_execution_start",
    "hook_execution_complete",
    "hook_plugin_metrics",
    "compaction",
    "subagent_completed",
    "feedback_survey",
    "retention_sweep",
]


def one(ev: Any) -> dict[str, Any]:
    return normalize_log(ev, T0 + 5_000_000, "http")[0]


def validate(rec: dict[str, Any]) -> None:
    cls = jsonschema.validators.validator_for(SCHEMA)
    errors = list(cls(SCHEMA).iter_errors(rec))
    assert not errors, [e.message for e in errors]


def test_every_documented_event_has_a_named_kind() -> None:
    assert len(DOCUMENTED) == 26
    for name in [*DOCUMENTED, "managed_settings_resolved"]:
        assert KIND_BY_EVENT["claude_code." + name] != "event", name
    assert set(CATALOGUE) == {"claude_code." + n for n in [*DOCUMENTED, "managed_settings_resolved"]}


def test_every_kind_is_in_the_schema_and_in_the_schema_doc() -> None:
    assert set(KINDS) <= set(SCHEMA["properties"]["kind"]["enum"])
    doc = (ROOT / "docs" / "schema.md").read_text()
    for name, spec in CATALOGUE.items():
        assert f"`{name}`" in doc, name
        assert f"`{spec.kind}`" in doc, spec.kind


@pytest.mark.parametrize(
    ("name", "attrs", "section", "expected"),
    [
        (
            "permission_mode_changed",
            {"from_mode": "default", "to_mode": "bypassPermissions", "trigger": "shift_tab"},
            "permission_mode",
            {"from": "default", "to": "bypassPermissions", "trigger": "shift_tab"},
        ),
        (
            "auth",
            {"action": "login", "success": "true", "auth_method": "oauth", "status_code": 200},
            "auth",
            {"action": "login", "success": True, "method": "oauth", "status_code": 200},
        ),
        (
            "internal_error",
            {"error_name": "TypeError", "error_code": "E_X"},
            "error",
            {"name": "TypeError", "code": "E_X"},
        ),
        (
            "at_mention",
            {"mention_type": "file", "success": "false"},
            "mention",
            {"type": "file", "success": False},
        ),
        (
            "plugin_installed",
            {"plugin.name": "p", "plugin.version": "1.2", "marketplace.name": "m", "has_hooks": True},
            "plugin",
            {"action": "installed", "name": "p", "version": "1.2", "marketplace": "m", "has_hooks": True},
        ),
        ("retention_sweep", {}, "housekeeping", {"name": "retention_sweep"}),
        (
            "api_response_body",
            {"body_length": "120", "body_truncated": "false", "request_id": "req_1"},
            "api_body",
            {"direction": "response", "length": 120, "truncated": False, "request_id": "req_1"},
        ),
        (
            "hook_plugin_metrics",
            {"hook_event": "Stop", "plugin.name": "p", "num_hooks": "2"},
            "hook",
            {"event": "Stop", "phase": "metrics", "plugin_name": "p", "num_hooks": 2},
        ),
    ],
)
def test_documented_fields_of_events_not_in_the_recordings(
    name: str, attrs: dict[str, Any], section: str, expected: dict[str, Any]
) -> None:
    rec = one(make_event("claude_code." + name, std(name, 3, **attrs)))
    assert rec["kind"] == KIND_BY_EVENT["claude_code." + name]
    assert rec[section] == expected
    assert rec["attributes"]["event.name"] == name  # every attribute is still kept
    validate(rec)


def test_api_retries_exhausted() -> None:
    attrs = std("api_retries_exhausted", 4, model="m", error="overloaded", status_code=529, total_attempts="11")
    attrs["total_retry_duration_ms"] = "61000"
    rec = one(make_event("claude_code.api_retries_exhausted", attrs))
    assert rec["kind"] == "api_retries_exhausted"
    assert rec["model"] == "m"
    assert rec["api"] == {
        "status_code": 529,
        "error": "overloaded",
        "total_attempts": 11,
        "total_retry_duration_ms": 61000,
    }
    validate(rec)


def test_assistant_response_text_only_when_sent() -> None:
    redacted = one(make_event("claude_code.assistant_response", std("assistant_response", 1, response="<REDACTED>")))
    assert redacted["kind"] == "assistant_response"
    assert "text" not in redacted.get("response", {})
    sent = one(
        make_event(
            "claude_code.assistant_response",
            std("assistant_response", 2, response="done", response_length=4, request_id="req_9"),
        )
    )
    assert sent["response"] == {"length": 4, "text": "done"}
    assert sent["api"] == {"request_id": "req_9"}
    validate(sent)


def test_subagent_cost_where_sent() -> None:
    attrs = std("subagent_completed", 9, agent_id="a1", agent_type="Explore", total_tokens=10, cost_usd="0.25")
    rec = one(make_event("claude_code.subagent_completed", attrs))
    assert rec["agent"] == {"id": "a1", "type": "Explore", "total_tokens": 10, "cost_usd": 0.25}
    validate(rec)


def test_mcp_tool_decision_names_server_and_tool() -> None:
    attrs = std(
        "tool_decision",
        5,
        tool_name="mcp_tool",
        tool_use_id="toolu_1",
        decision="accept",
        source="config",
        tool_source="mcp",
        tool_parameters='{"mcp_server_name":"audit","mcp_tool_name":"lookup"}',
    )
    rec = one(make_event("claude_code.tool_decision", attrs))
    assert (rec["tool"]["source"], rec["tool"]["mcp_server"], rec["tool"]["mcp_tool"]) == ("mcp", "audit", "lookup")


def test_desktop_app_is_claude_code_too() -> None:
    desktop = dict(RESOURCE, **{"service.name": "claude-code-desktop"})
    rec = one(make_event("claude_code.permission_mode_changed", std("permission_mode_changed", 1), resource=desktop))
    assert rec["kind"] == "permission_mode_change"
    assert rec["app"]["product"] == "claude-code-desktop"
    other = one(make_event("claude_code.user_prompt", std("user_prompt", 1), resource={"service.name": "x"}))
    assert "product" not in other.get("app", {})


def _hook(seq: int, event: str, blocking: int, prompt: str = "p1") -> Any:
    attrs = std("hook_execution_complete", seq, hook_event=event, hook_name=f"{event}:Bash")
    attrs |= {"num_hooks": "1", "num_success": str(1 - blocking), "num_blocking": str(blocking), "prompt.id": prompt}
    return make_event("claude_code.hook_execution_complete", attrs)


def _decision(seq: int, decision: str, source: str, prompt: str = "p1") -> Any:
    attrs = std("tool_decision", seq, tool_name="Bash", tool_use_id=f"toolu_{seq}", decision=decision, source=source)
    attrs["prompt.id"] = prompt
    return make_event("claude_code.tool_decision", attrs)


def test_hook_execution_is_linked_to_the_decision_it_caused() -> None:
    recs = normalize_logs([_decision(6, "reject", "hook"), _hook(5, "PreToolUse", 1)], T0)
    decision, hook = recs
    assert hook["hook"]["outcome"] == "blocking"
    assert hook["hook"]["decision"] == {
        "tool_use_id": "toolu_6",
        "tool_name": "Bash",
        "decision": "reject",
        "decision_source": "hook",
        "sequence": 6,
    }
    assert decision["tool"]["hook"] == {
        "event": "PreToolUse",
        "name": "PreToolUse:Bash",
        "outcome": "blocking",
        "sequence": 5,
    }
    validate(hook)
    validate(decision)


def test_hook_of_another_prompt_or_event_links_nothing() -> None:
    recs = normalize_logs(
        [_hook(1, "PreToolUse", 1, prompt="p0"), _hook(2, "Stop", 1), _decision(3, "reject", "hook")], T0
    )
    assert "decision" not in recs[0]["hook"] and "decision" not in recs[1]["hook"]
    assert "hook" not in recs[2]["tool"]
