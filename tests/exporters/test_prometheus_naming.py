"""Naming rules of the Prometheus destination: metric names, units, labels, model/tool values, per-user labels."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from exporters.prometheus import naming
from exporters.prometheus.naming import (
    CLAUDE_CODE_METRICS,
    UserLabeler,
    fixed_labels,
    generic_labels,
    label_name,
    label_value,
    metric_name,
    normalize_model,
    point_identity,
    tool_label,
    unit_suffix,
)

VALID_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
VALID_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# The names other engineers write alert rules and dashboards against (fixed).
REQUIRED = {
    "claude_code.session.count": ("claude_code_session_count_total", ()),
    "claude_code.lines_of_code.count": ("claude_code_lines_of_code_count_total", ("type", "model")),
    "claude_code.pull_request.count": ("claude_code_pull_request_count_total", ()),
    "claude_code.commit.count": ("claude_code_commit_count_total", ()),
    "claude_code.cost.usage": ("claude_code_cost_usage_usd_total", ("model", "query_source")),
    "claude_code.token.usage": ("claude_code_token_usage_tokens_total", ("model", "type")),
    "claude_code.code_edit_tool.decision": (
        "claude_code_code_edit_tool_decision_total",
        ("tool_name", "decision", "source", "language"),
    ),
    "claude_code.active_time.total": ("claude_code_active_time_seconds_total", ("type",)),
}
WIRE_UNITS = {  # units as Claude Code sends them (fixture datapoints: "" for the counts)
    "claude_code.session.count": "",
    "claude_code.lines_of_code.count": "",
    "claude_code.pull_request.count": "",
    "claude_code.commit.count": "",
    "claude_code.cost.usage": "USD",
    "claude_code.token.usage": "tokens",
    "claude_code.code_edit_tool.decision": "",
    "claude_code.active_time.total": "s",
}


def test_fixed_names_and_label_sets() -> None:
    assert {k: (v.name, v.labels) for k, v in CLAUDE_CODE_METRICS.items()} == REQUIRED


@pytest.mark.parametrize("otel_name", sorted(REQUIRED))
def test_fixed_names_follow_the_generic_rule(otel_name: str) -> None:
    """The fixed table is not arbitrary: it is what the generic rule gives for the units Claude Code sends."""
    assert metric_name(otel_name, WIRE_UNITS[otel_name], counter=True) == REQUIRED[otel_name][0]


@pytest.mark.parametrize(
    ("name", "unit", "counter", "expected"),
    [
        ("claude_code.active_time.total", "s", True, "claude_code_active_time_seconds_total"),
        ("claude_code.cache.size", "By", False, "claude_code_cache_size_bytes"),
        ("claude_code.spend", "USD", True, "claude_code_spend_usd_total"),
        ("claude_code.thinking.usage", "tokens", True, "claude_code_thinking_usage_tokens_total"),
        ("claude_code.ratio", "1", False, "claude_code_ratio"),
        ("claude_code.plain", "", True, "claude_code_plain_total"),
        ("claude_code.requests", "{request}", True, "claude_code_requests_total"),
        ("claude_code.latency", "ms", False, "claude_code_latency_milliseconds"),
        ("claude_code.throughput", "By/s", False, "claude_code_throughput_bytes_per_second"),
        ("claude_code.rate", "1/s", False, "claude_code_rate_per_second"),
        ("claude_code.wait_seconds", "s", True, "claude_code_wait_seconds_total"),
        ("claude_code.weird-name!x", "", False, "claude_code_weird_name_x"),
        ("claude_code.depth", "furlongs", False, "claude_code_depth_furlongs"),
        ("claude_code.total", "", True, "claude_code_total"),
    ],
)
def test_generic_metric_names(name: str, unit: str, counter: bool, expected: str) -> None:
    got = metric_name(name, unit, counter=counter)
    assert got == expected
    assert VALID_METRIC.match(got)


def test_unit_suffix_table() -> None:
    assert unit_suffix("s") == "seconds"
    assert unit_suffix("By") == "bytes"
    assert unit_suffix("USD") == "usd"
    assert unit_suffix("tokens") == "tokens"
    assert unit_suffix("") == ""
    assert unit_suffix("1") == ""
    assert unit_suffix(None) == ""
    assert unit_suffix("{tokens}") == ""
    assert unit_suffix("KiBy") == "kibibytes"
    assert unit_suffix("%") == "percent"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("terminal.type", "terminal_type"),
        ("app.version", "app_version"),
        ("9lives", "key_9lives"),
        ("__reserved", "key__reserved"),
        ("a-b c", "a_b_c"),
        ("", ""),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    got = label_name(key)
    assert got == expected
    if got:
        assert VALID_LABEL.match(got) and not got.startswith("__")


def test_label_values() -> None:
    assert label_value("x") == "x"
    assert label_value(True) == "true"
    assert label_value(False) == "false"
    assert label_value(500) == "500"
    assert label_value(2.0) == "2"
    assert label_value(0.5) == "0.5"
    assert label_value(None) == ""
    assert label_value({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("claude-opus-4-8[1m]", "claude-opus-4-8"),
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("claude-sonnet-4-5 [200k]", "claude-sonnet-4-5"),
        ("weird[1m]x", "weird[1m]x"),
        (None, ""),
    ],
)
def test_model_suffix_is_stripped(raw: object, expected: str) -> None:
    assert normalize_model(raw) == expected


def test_tool_labels_bound_mcp_tools() -> None:
    assert tool_label("Bash") == "Bash"
    assert tool_label("NotebookEdit") == "NotebookEdit"
    assert tool_label("mcp__github__create_issue") == "mcp:github"
    assert tool_label("mcp__github__list_prs") == "mcp:github"
    assert tool_label("mcp__jira__search") == "mcp:jira"
    assert tool_label("mcp__") == "mcp"
    assert tool_label("mcp____x") == "mcp"
    assert tool_label(None) == ""
    allow = frozenset({"github"})
    assert tool_label("mcp__github__create_issue", allow) == "mcp:github"
    assert tool_label("mcp__evil__exfiltrate", allow) == "mcp:other"


def test_generic_labels_drop_identities_and_resource_copies() -> None:
    resource = {"service.name": "claude-code", "department": "eng", "team.id": "platform"}
    attrs = {
        "user.id": "d5af2f62",
        "user.email": "jdoe@example.com",
        "enduser.id": "jdoe@example.com",
        "session.id": "88a2e22f",
        "prompt.id": "p1",
        "organization.id": "org",
        "user.account_uuid": "u",
        "request_id": "req_1",
        "workspace.uuid": "w",
        "department": "eng",  # copied from OTEL_RESOURCE_ATTRIBUTES
        "team.id": "platform",
        "terminal.type": "dumb",
        "anthropic.custom_base_url": True,
        "user": "reserved",
        "a.b": "1",
        "a_b": "2",
        "empty": "",
    }
    assert generic_labels(attrs, resource) == {
        "terminal_type": "dumb",
        "anthropic_custom_base_url": "true",
        "a_b": "1;2",
    }


def test_fixed_labels_use_only_the_listed_attributes() -> None:
    spec = CLAUDE_CODE_METRICS["claude_code.code_edit_tool.decision"]
    attrs = {
        "tool_name": "mcp__fs__write",
        "decision": "reject",
        "source": "user_reject",
        "session.id": "s",
        "user.email": "a@b.c",
    }
    assert fixed_labels(spec, attrs) == {
        "tool_name": "mcp:fs",
        "decision": "reject",
        "source": "user_reject",
        "language": "",
    }
    cost = CLAUDE_CODE_METRICS["claude_code.cost.usage"]
    assert fixed_labels(cost, {"model": "claude-opus-4-8[1m]", "query_source": "main", "effort": "high"}) == {
        "model": "claude-opus-4-8",
        "query_source": "main",
    }


def test_per_user_off_allowlist_hash() -> None:
    off = UserLabeler()
    assert not off.enabled and off.label("a@example.com", "u1") == ""

    allow = UserLabeler("allowlist", ["Alice@Example.com", "INSTALL-ID-1"])
    assert allow.label("alice@example.COM", "x") == "alice@example.com"
    assert allow.label("bob@example.com", "x") == "other"
    assert allow.label(None, "install-id-1") == "install-id-1"
    assert allow.label(None, None) == "other"

    salt = "s3cret-salt-0123456789"
    h = UserLabeler("hash", salt=salt)
    expected = hmac.new(salt.encode(), b"email:alice@example.com", hashlib.sha256).hexdigest()[:16]
    assert h.label("Alice@Example.com", "u1") == expected
    assert h.label("alice@example.com", "other-install") == expected  # keyed on the e-mail when known
    assert re.fullmatch(r"[0-9a-f]{16}", h.label(None, "u1"))
    assert h.label(None, "u1") != h.label(None, "u2")
    assert h.label(None, None) == ""
    assert UserLabeler("hash", salt="another-salt-0123456").label("alice@example.com", None) != expected
    assert salt not in repr(h) and "alice" not in repr(allow).lower()
    with pytest.raises(ValueError, match="per-user mode"):
        UserLabeler("everyone")


def test_point_identity() -> None:
    assert point_identity({"user.email": "a@b.c", "user.id": "u"}, {}) == ("a@b.c", "u")
    assert point_identity({"enduser.id": "jdoe@example.com", "user.id": "u"}, {}) == ("jdoe@example.com", "u")
    assert point_identity({"user.id": "u"}, {"enduser.id": "jdoe@example.com"}) == ("jdoe@example.com", "u")
    assert point_identity({"enduser.id": "svc-account"}, {}) == (None, None)


def test_identity_attribute_rule() -> None:
    for key in ("user.id", "session.id", "prompt.id", "tool_use_id", "foo.uuid", "bar_id", "x.email", "enduser.id"):
        assert naming.is_identity_attribute(key), key
    for key in ("terminal.type", "model", "decision", "idle", "identity_source"):
        assert not naming.is_identity_attribute(key), key
