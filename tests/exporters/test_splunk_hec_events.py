"""HEC envelope encoding (pure): epoch time with milliseconds, flat string-only indexed fields derived after the field
policy, index routing (first match wins, dotted paths, lists, booleans), and request splitting under both limits.
"""

from __future__ import annotations

import gzip
import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exporters
from exporters.base import DeliveryRecord
from exporters.splunk_hec import SplunkHecExporter
from exporters.splunk_hec.events import as_text, epoch_millis_text, lookup, split_envelopes

TOKEN = "11111111-2222-3333-4444-555555555555"
T0 = "2026-11-25T21:58:03.512Z"
T0_EPOCH = int(datetime(2026, 11, 25, 21, 58, 3, tzinfo=UTC).timestamp())


def make(**section: Any) -> SplunkHecExporter:
    cfg = exporters.build_configs({"splunk_hec/t": {"endpoint": "http://127.0.0.1:9", "token": TOKEN, **section}})
    exp = exporters.create("splunk_hec/t", cfg["splunk_hec/t"])
    assert isinstance(exp, SplunkHecExporter)
    return exp


def audit(i: int = 0, *, drop: tuple[str, ...] = (), **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema_version": "1.0",
        "id": f"{i:032x}",
        "kind": "tool_decision",
        "event": "claude_code.tool_decision",
        "time": T0,
        "session": {"id": "5b0c6f39-6c2d-4f51-9d77-0a1f1e0f4c3a"},
        "user": {"id": "ab" * 32, "email": "dev@example.com"},
        "organization": {"id": "org-42"},
        "tool": {"name": "Bash", "decision": "reject", "approval_mode": "automatic", "command": "rm -f x"},
        "attributes": {"event.name": "tool_decision", "user.email": "dev@example.com", "decision": "reject"},
    }
    for key in drop:
        rec.pop(key, None)
    rec.update(over)
    return rec


def drec(i: int = 0, **kw: Any) -> DeliveryRecord:
    rec = audit(i, **kw)
    return DeliveryRecord(i + 1, rec["id"], orjson.dumps(rec), 1_000 + i)


def envelopes(exp: SplunkHecExporter, rs: list[DeliveryRecord]) -> list[dict[str, Any]]:
    out = []
    for p in exp.encode(rs):
        data = gzip.decompress(p.data) if p.headers.get("Content-Encoding") == "gzip" else p.data
        out += [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return out


# ---------------------------------------------------------------------------------------------------------------
# envelope


def test_envelope_carries_metadata_time_fields_and_the_record_byte_for_byte():
    exp = make(index="ai_audit", host="bridge-1", compression="none")
    r = drec(0)
    (p,) = exp.encode([r])
    line = p.data.rstrip(b"\n")
    assert line.startswith(b'{"time":' + f"{T0_EPOCH}.512".encode() + b",")
    assert line.endswith(b',"event":' + r.body + b"}")  # the stored record, unchanged
    env = orjson.loads(line)
    assert env["host"] == "bridge-1"
    assert env["source"] == "ccbridge"
    assert env["sourcetype"] == "claude:code:audit"
    assert env["index"] == "ai_audit"
    assert env["fields"] == {
        "cc_kind": "tool_decision",
        "cc_event": "claude_code.tool_decision",
        "cc_user": "dev@example.com",
        "cc_tool": "Bash",
        "cc_decision": "reject",
        "cc_approval_mode": "automatic",
        "cc_org": "org-42",
    }
    assert set(env) == {"time", "host", "source", "sourcetype", "index", "fields", "event"}


def test_host_defaults_to_the_machine_hostname_and_index_is_omitted_when_unset():
    import socket

    exp = make()
    (env,) = envelopes(exp, [drec(0)])
    assert env["host"] == socket.gethostname()
    assert "index" not in env  # the token's default index


def test_fields_are_flat_strings_and_missing_values_are_omitted():
    exp = make()
    r = drec(
        0,
        drop=("tool", "organization"),
        kind="api_request",
        event="claude_code.api_request",
        user={"id": "cd" * 32},
        model="claude-opus-5-5",
        cost_usd=0.25,
    )
    (env,) = envelopes(exp, [r])
    assert env["fields"] == {
        "cc_kind": "api_request",
        "cc_event": "claude_code.api_request",
        "cc_user": "cd" * 32,  # no e-mail: the installation id
        "cc_model": "claude-opus-5-5",
    }
    assert all(isinstance(v, str) for v in env["fields"].values())


def test_non_string_values_never_become_indexed_fields():
    exp = make()
    (env,) = envelopes(exp, [drec(0, kind={"nested": True}, tool={"name": 7, "decision": ["x"]})])
    assert "cc_kind" not in env["fields"] and "cc_tool" not in env["fields"] and "cc_decision" not in env["fields"]


@pytest.mark.parametrize(
    ("text", "fallback", "expected"),
    [
        ("2026-11-25T21:58:03.512Z", 0, f"{T0_EPOCH}.512"),
        ("2026-11-25T21:58:03.000Z", 0, f"{T0_EPOCH}.000"),
        ("2026-11-25T21:58:03.007+00:00", 0, f"{T0_EPOCH}.007"),
        ("2026-11-25T22:58:03.512+01:00", 0, f"{T0_EPOCH}.512"),
        (None, 1_764_107_883_045, "1764107883.045"),
        ("not a time", 1_500, "1.500"),
        ("2026-11-25T21:58:03.512", 42, "0.042"),  # no zone: not trusted, the store's time is used
        ("2026-13-25T21:58:03.512Z", 42, "0.042"),
        ("2026-11-25T21:58:03.5x2Z", 42, "0.042"),
        ("2026-11-25T21:58:03.512345Z", 0, f"{T0_EPOCH}.512"),
    ],
)
def test_time_is_epoch_seconds_with_exactly_three_decimals(text, fallback, expected):
    rec = {} if text is None else {"time": text}
    assert epoch_millis_text(rec, fallback).decode() == expected


def test_field_policy_applies_to_the_event_and_to_the_indexed_fields():
    exp = make(fields={"user.email": "hash", "attributes.user.email": "hash", "tool.command": "drop"}, hash_salt="s")
    (env,) = envelopes(exp, [drec(0)])
    event = env["event"]
    assert event["user"]["email"].startswith("sha256:")
    assert event["attributes"]["user.email"] == event["user"]["email"]
    assert "command" not in event["tool"]
    assert env["fields"]["cc_user"] == event["user"]["email"]  # no raw e-mail leaks through the indexed fields
    assert b"dev@example.com" not in gzip.decompress(exp.encode([drec(0)])[0].data)


def test_splunk_keeps_everything_by_default():
    exp = make()
    (env,) = envelopes(exp, [drec(0)])
    assert env["event"] == audit(0)


# ---------------------------------------------------------------------------------------------------------------
# routing


def routed(exp: SplunkHecExporter, rs: list[DeliveryRecord]) -> list[str | None]:
    return [env.get("index") for env in envelopes(exp, rs)]


def test_routing_first_match_wins_and_falls_back_to_the_default_index():
    exp = make(
        index="ai_audit",
        routing=[
            {"match": {"kind": "tool_decision", "tool.decision": "reject"}, "index": "ai_rejections"},
            {"match": {"organization.id": ["org-1", "org-42"]}, "index": "ai_org"},
            {"match": {"kind": "tool_decision"}, "index": "never_reached_for_rejects"},
        ],
    )
    rs = [
        drec(0),  # reject -> rule 0
        drec(1, tool={"name": "Bash", "decision": "accept"}),  # org-42 -> rule 1
        drec(2, tool={"name": "Bash", "decision": "accept"}, organization={"id": "org-9"}),  # rule 2
        drec(3, kind="api_request", organization={"id": "org-9"}),  # no rule -> default
    ]
    assert routed(exp, rs) == ["ai_rejections", "ai_org", "never_reached_for_rejects", "ai_audit"]


def test_routing_matches_attribute_keys_with_dots_numbers_and_booleans():
    exp = make(
        routing=[
            {"match": {"attributes.user.email": "dev@example.com", "tool.success": True}, "index": "ok"},
            {"match": {"tool.duration_ms": 61}, "index": "numbers"},
        ]
    )
    rs = [
        drec(0, tool={"name": "Bash", "success": True}),
        drec(1, tool={"name": "Bash", "success": False, "duration_ms": 61}),
        drec(2, tool={"name": "Bash", "success": False}),
    ]
    assert routed(exp, rs) == ["ok", "numbers", None]


def test_routing_on_a_missing_field_or_an_object_does_not_match():
    exp = make(
        index="d", routing=[{"match": {"organization": "org-42"}, "index": "x"}, {"match": {"nope": "1"}, "index": "y"}]
    )
    assert routed(exp, [drec(0)]) == ["d"]


def test_lookup_and_as_text():
    node = {"a": {"b.c": {"d": 1}}, "a.b": 2, "x": None}
    assert lookup(node, ["a", "b", "c", "d"]) == 1
    assert lookup(node, ["a", "b"]) == 2  # longest key first
    assert lookup(node, ["x"]) is None
    assert as_text(lookup(node, ["nope"])) is None
    assert [as_text(v) for v in (True, False, 3, 1.5, "s", None, [1], {})] == ["true", "false", "3", "1.5", "s"] + [
        None
    ] * 3


# ---------------------------------------------------------------------------------------------------------------
# splitting


def test_requests_respect_max_request_bytes_and_max_request_events():
    exp = make(max_request_bytes="4KiB", max_request_events=7, compression="none")
    rs = [drec(i) for i in range(60)]
    payloads = exp.encode(rs)
    assert len(payloads) > 60 // 7
    assert all(len(p.data) <= 4096 for p in payloads)
    assert all(len(p.records) <= 7 for p in payloads)
    assert [r for p in payloads for r in p.records] == rs
    for p in payloads:  # re-encoding a payload's records (as the engine's 413 split does) gives exactly its body
        (again,) = exp.encode(p.records)
        assert again.data == p.data and again.meta == p.meta
        assert len(p.meta["indexes"]) == len(p.records)


def test_gzip_payload_is_the_compressed_plain_body():
    rs = [drec(i) for i in range(20)]
    (plain,) = make(compression="none").encode(rs)
    (packed,) = make().encode(rs)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data)
    assert "Authorization" not in packed.headers  # the token is added at send time, never kept in a payload


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3000), max_size=80),
    limit=st.integers(min_value=1024, max_value=8000),
    max_events=st.integers(min_value=1, max_value=20),
)
def test_split_property(sizes, limit, max_events):
    ranges = split_envelopes(sizes, limit, max_events)
    assert [i for lo, hi in ranges for i in range(lo, hi)] == list(range(len(sizes)))
    for lo, hi in ranges:
        assert 0 < hi - lo <= max_events
        total = sum(n + 1 for n in sizes[lo:hi])
        assert total <= limit or hi - lo == 1  # only a lone oversize envelope may exceed the limit
    for (lo, hi), (nlo, _) in itertools.pairwise(ranges):  # greedy
        assert hi - lo == max_events or sum(n + 1 for n in sizes[lo:hi]) + sizes[nlo] + 1 > limit


# ---------------------------------------------------------------------------------------------------------------
# schema: ocsf


def test_schema_ocsf_sends_the_ocsf_event_and_keeps_the_indexed_fields():
    ocsf = pytest.importorskip("exporters.ocsf")
    exp = make(schema="ocsf", sourcetype="claude:code:ocsf", fields={"tool.command": "drop"})
    r = drec(0)
    (env,) = envelopes(exp, [r])
    record = audit(0)
    del record["tool"]["command"]  # the policy applies before the mapping
    assert env["event"] == orjson.loads(ocsf.ocsf_body(record))
    assert "class_uid" in env["event"]
    assert env["sourcetype"] == "claude:code:ocsf"
    assert env["fields"]["cc_decision"] == "reject"
    assert env["time"] == pytest.approx(T0_EPOCH + 0.512)
