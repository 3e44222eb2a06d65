"""The per-destination field policy: actions by dotted path, longest-key matching, copy-on-write, hashing."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.configtypes import ConfigError, Secret
from exporters.fieldpolicy import PRIVACY_DEFAULTS, Action, FieldPolicy, FieldPolicyConfig, hash_value

SALT = "s3cret-salt"


def reference(record: dict[str, Any], actions: dict[str, Action], salt: str) -> dict[str, Any]:
    """The policy's meaning, path by path on a deep copy: deeper paths first (a parent's hash sees what its
    children's actions left), and at each level the longest present key wins."""
    out = copy.deepcopy(record)

    def walk(node: dict[str, Any], parts: list[str], action: Action) -> None:
        for cut in range(len(parts), 0, -1):
            key = ".".join(parts[:cut])
            if key not in node:
                continue
            rest = parts[cut:]
            if not rest:
                if action == "drop":
                    del node[key]
                elif action == "hash":
                    node[key] = hash_value(node[key], salt)
            elif isinstance(node[key], dict):
                walk(node[key], rest, action)
            return

    for path, action in sorted(actions.items(), key=lambda item: -item[0].count(".")):
        walk(out, path.split("."), action)
    return out


def record() -> dict[str, Any]:
    return {
        "kind": "tool_result",
        "user": {"id": "u1", "email": "alice@example.com"},
        "tool": {"name": "Bash", "command": "curl -H x https://x", "parameters": {"full_command": "ls"}},
        "attributes": {"user.email": "alice@example.com", "tool_parameters": "{}", "session.id": "s1"},
        "resource": {"service.name": "claude-code", "user.email": "alice@example.com"},
        "prompt": {"id": "p1", "text": "hello"},
    }


def test_privacy_defaults_hash_emails_and_drop_commands() -> None:
    policy = FieldPolicy(PRIVACY_DEFAULTS, SALT)
    rec = record()
    before = copy.deepcopy(rec)
    out = policy.apply(rec)
    assert rec == before, "the input record is never modified"
    digest = "sha256:" + hashlib.sha256(SALT.encode() + b"\x00alice@example.com").hexdigest()
    assert out["user"] == {"id": "u1", "email": digest}
    assert out["attributes"] == {"user.email": digest, "session.id": "s1"}
    assert out["resource"] == {"service.name": "claude-code", "user.email": digest}
    assert out["tool"] == {"name": "Bash"}
    assert out["prompt"] == {"id": "p1"}
    assert out["kind"] == "tool_result"
    assert out == reference(rec, PRIVACY_DEFAULTS, SALT)


def test_unchanged_parts_are_shared_and_a_noop_returns_the_record() -> None:
    rec = record()
    out = FieldPolicy({"user.email": "hash"}, SALT).apply(rec)
    assert out is not rec and out["user"] is not rec["user"]
    assert out["attributes"] is rec["attributes"] and out["tool"] is rec["tool"]
    assert FieldPolicy({"nothing.here": "drop"}, SALT).apply(rec) is rec
    assert FieldPolicy({}, SALT).apply(rec) is rec and FieldPolicy({}, SALT).is_noop


def test_longest_key_wins_and_settles_the_path() -> None:
    rec = {"attributes": {"user.email": "a@x", "user": {"email": "nested@x"}}}
    out = FieldPolicy({"attributes.user.email": "drop"}, SALT).apply(rec)
    assert out == {"attributes": {"user": {"email": "nested@x"}}}
    rec2 = {"a.b": {"c": 1}, "a": {"b": {"c": 2}}}
    assert FieldPolicy({"a.b.c": "drop"}, SALT).apply(rec2) == {"a.b": {}, "a": {"b": {"c": 2}}}


def test_a_parent_hash_sees_what_its_children_left_whatever_the_order() -> None:
    rec = {"a": {"a": None, "b": 1}}
    expected = {"a": hash_value({"b": 1}, SALT)}
    assert FieldPolicy({"a.a": "drop", "a": "hash"}, SALT).apply(rec) == expected
    assert FieldPolicy({"a": "hash", "a.a": "drop"}, SALT).apply(rec) == expected


def test_keep_overrides_a_default_and_parent_drop_wins_over_child_hash() -> None:
    policy = FieldPolicy.build(PRIVACY_DEFAULTS, FieldPolicyConfig({"user.email": "keep"}, Secret(SALT)))
    assert policy.apply(record())["user"]["email"] == "alice@example.com"
    out = FieldPolicy({"tool": "drop", "tool.name": "hash"}, SALT).apply(record())
    assert "tool" not in out


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"exporters.datadog.fields: invalid field path '.x'"):
        FieldPolicyConfig({".x": "drop"}).validate("exporters.datadog")
    with pytest.raises(ConfigError, match="hash_salt: required"):
        FieldPolicyConfig({"user.email": "hash"}).validate("exporters.datadog")


KEYS = st.sampled_from(["a", "b", "a.b", "b.c", "c", "a.b.c", "user", "email", "user.email"])
VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.text(max_size=3), st.integers(0, 3), st.none()),
    lambda inner: st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    rec=st.dictionaries(KEYS, VALUES, max_size=5),
    actions=st.dictionaries(
        st.lists(st.sampled_from(["a", "b", "c", "user", "email"]), min_size=1, max_size=3).map(".".join),
        st.sampled_from(["drop", "hash", "keep"]),
        max_size=5,
    ),
)
def test_merged_walk_matches_the_path_by_path_meaning(rec: dict[str, Any], actions: dict[str, Action]) -> None:
    before = copy.deepcopy(rec)
    out = FieldPolicy(actions, SALT).apply(rec)
    assert rec == before
    assert out == reference(rec, {k: v for k, v in actions.items() if v != "keep"}, SALT)
