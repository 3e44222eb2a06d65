"""OCSF mapping: every record of the recorded Claude Code runs maps to a valid OCSF 1.8.0 event of its class.

The class definitions below are a minimal transcription of OCSF 1.8.0 for the classes the mapper emits
(OCSF schema, https://schema.ocsf.io/): required attributes of the base event and of each class, the activity, severity
and status enums with their captions, the ``type_uid`` arithmetic, and the constraints of the objects used
("at least one of" for ``actor``, ``user``, ``process``, ``src_endpoint``; required ``file.name``/``type_id``,
``device.type_id``, ``api.operation``, ``ai_model.name``/``ai_provider``; the ``ai_operation`` profile only on the
classes it is wired into in 1.8.0).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from collector.config import ConfigError, load_text
from exporters.base import DeliveryRecord
from exporters.http import HttpExporter, HttpExporterConfig
from exporters.ocsf import to_ocsf
from tests.collector.compliance.approvals_support import replay_runs

BASE_REQUIRED = ("class_uid", "category_uid", "activity_id", "type_uid", "severity_id", "time", "metadata")
CATEGORIES = {1: "System Activity", 3: "Identity & Access Management", 6: "Application Activity"}
SEVERITIES = {
    0: "Unknown",
    1: "Informational",
    2: "Low",
    3: "Medium",
    4: "High",
    5: "Critical",
    6: "Fatal",
    99: "Other",
}
STATUSES = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}
DEVICE_TYPES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 99}
FILE_TYPES = {0, 1, 2, 3, 4, 5, 6, 7, 99}
CLASSES: dict[int, dict[str, Any]] = {
    1001: {
        "name": "File System Activity",
        "category": 1,
        "activities": {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Rename",
                       6: "Set Attributes", 7: "Set Security", 8: "Get Attributes", 9: "Get Security",
                       10: "Encrypt", 11: "Decrypt", 12: "Mount", 13: "Unmount", 14: "Open", 99: "Other"},
        "required": ("actor", "device", "file"),
        "profiles": set(),
    },
    1007: {
        "name": "Process Activity",
        "category": 1,
        "activities": {0: "Unknown", 1: "Launch", 2: "Terminate", 3: "Open", 4: "Inject", 5: "Set User ID",
                       99: "Other"},
        "required": ("actor", "device", "process"),
        "profiles": {"ai_operation"},
    },
    6003: {
        "name": "API Activity",
        "category": 6,
        "activities": {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"},
        "required": ("actor", "api", "src_endpoint"),
        "profiles": {"ai_operation"},
    },
}  # fmt: skip


def violations(ev: dict[str, Any]) -> list[str]:
    """Everything in ``ev`` that breaks the class definitions above (empty when valid)."""
    out: list[str] = []
    for key in BASE_REQUIRED:
        if key not in ev:
            out.append(f"missing {key}")
    cls = CLASSES.get(ev.get("class_uid"))  # type: ignore[arg-type]
    if cls is None:
        return [*out, f"unknown class_uid {ev.get('class_uid')}"]
    for key in cls["required"]:
        if key not in ev:
            out.append(f"class {ev['class_uid']}: missing {key}")
    if ev.get("category_uid") != cls["category"]:
        out.append("category_uid does not match the class")
    if ev.get("category_name") not in (None, CATEGORIES[cls["category"]]):
        out.append("category_name caption")
    if ev.get("class_name") not in (None, cls["name"]):
        out.append("class_name caption")
    activity = ev.get("activity_id")
    if activity not in cls["activities"]:
        out.append(f"activity_id {activity} not in the class enum")
    elif ev.get("activity_name") not in (None, cls["activities"][activity]):
        out.append("activity_name caption")
    if ev.get("type_uid") != ev.get("class_uid", 0) * 100 + (activity or 0):
        out.append("type_uid != class_uid * 100 + activity_id")
    if ev.get("severity_id") not in SEVERITIES:
        out.append("severity_id enum")
    elif ev.get("severity") not in (None, SEVERITIES[ev["severity_id"]]):
        out.append("severity caption")
    if "status_id" in ev:
        if ev["status_id"] not in STATUSES:
            out.append("status_id enum")
        elif ev.get("status") not in (None, STATUSES[ev["status_id"]]):
            out.append("status caption")
    if not isinstance(ev.get("time"), int) or ev["time"] < 10**12:
        out.append("time must be epoch milliseconds")
    meta = ev.get("metadata") or {}
    if meta.get("version") != "1.8.0":
        out.append("metadata.version")
    product = meta.get("product") or {}
    if not product.get("name") or not product.get("vendor_name"):
        out.append("metadata.product needs name and vendor_name")
    profiles = set(meta.get("profiles") or [])
    if not profiles <= cls["profiles"]:
        out.append(f"profiles {profiles - cls['profiles']} not wired into class {ev['class_uid']} in 1.8.0")
    if "ai_model" in ev:
        if "ai_operation" not in profiles:
            out.append("ai_model without the ai_operation profile")
        if not ev["ai_model"].get("name") or not ev["ai_model"].get("ai_provider"):
            out.append("ai_model needs name and ai_provider")
    actor = ev.get("actor") or {}
    if not any(k in actor for k in ("process", "user", "invoked_by", "session", "app_name", "app_uid")):
        out.append("actor needs one of process, user, invoked_by, session, app_name, app_uid")
    if "user" in actor and not any(k in actor["user"] for k in ("account", "name", "uid")):
        out.append("user needs one of account, name, uid")
    for authz in actor.get("authorizations", []):
        if "decision" in authz and authz["decision"] not in ("allowed", "denied"):
            out.append("authorization decision")
    if "device" in ev and ev["device"].get("type_id") not in DEVICE_TYPES:
        out.append("device.type_id")
    if "process" in ev and not any(k in ev["process"] for k in ("pid", "uid", "cpid")):
        out.append("process needs one of pid, uid, cpid")
    if "file" in ev and (not ev["file"].get("name") or ev["file"].get("type_id") not in FILE_TYPES):
        out.append("file needs name and type_id")
    if "api" in ev and not ev["api"].get("operation"):
        out.append("api.operation")
    if "src_endpoint" in ev and not any(k in ev["src_endpoint"] for k in ("ip", "uid", "name", "hostname")):
        out.append("src_endpoint needs one of ip, uid, name, hostname")
    return out


def test_the_validator_catches_broken_events() -> None:
    good = to_ocsf({"kind": "tool_decision", "time": "2026-11-25T21:57:26.254Z", "tool": {"name": "Read",
                    "decision": "accept", "decision_source": "config"}})  # fmt: skip
    assert violations(good) == []
    assert good["type_uid"] == 600302 and good["activity_name"] == "Read"
    broken = [
        ({"type_uid": 600301}, "type_uid != class_uid * 100 + activity_id"),
        ({"activity_id": 7}, "activity_id 7 not in the class enum"),
        ({"severity_id": 9}, "severity_id enum"),
        ({"api": {"service": {"name": "x"}}}, "api.operation"),
        ({"actor": {"user": {"email_addr": "a@b"}}}, "user needs one of account, name, uid"),
        ({"time": 1795643846}, "time must be epoch milliseconds"),
        ({"ai_model": {"name": "m", "ai_provider": "Anthropic"}}, "ai_model without the ai_operation profile"),
    ]
    for patch, message in broken:
        assert message in violations({**good, **patch}), patch
    assert "class 6003: missing src_endpoint" in violations({k: v for k, v in good.items() if k != "src_endpoint"})


async def test_every_recorded_record_maps_to_a_valid_event(bridge: Any) -> None:
    await replay_runs(bridge.http_url, bridge.grpc_target)
    records = bridge.records()
    classes: Counter[tuple[str | None, int]] = Counter()
    for rec in records:
        ev = to_ocsf(rec)
        assert violations(ev) == [], (rec.get("kind"), rec.get("event"), violations(ev))
        assert orjson.loads(orjson.dumps(ev)) == ev
        classes[(rec.get("kind"), ev["class_uid"])] += 1
    assert classes == {
        ("tool_decision", 6003): 17,
        ("tool_result", 1007): 6,  # the Bash results
        ("tool_result", 6003): 10,  # Write and Edit results
        ("file_change", 1001): 2,  # the details run's Write and Edit
        ("api_request", 6003): 24,
        ("user_prompt", 6003): 6,
        ("event", 6003): 40,  # assistant_response, plugin_loaded, managed_settings_resolved
    }

    by_id = {r["id"]: r for r in records}
    echo = to_ocsf(by_id["77d55924221bea01edd0a68435cc6c61"])  # details run: Bash echo hi, tool_result
    assert (echo["class_uid"], echo["activity_id"], echo["type_uid"]) == (1007, 1, 100701)
    assert echo["process"] == {"uid": "toolu_fake_6223f58903ad448e9aa5", "cmd_line": "echo hi", "name": "echo"}
    assert (echo["status_id"], echo["severity_id"], echo["duration"]) == (1, 1, 66)
    assert echo["actor"]["user"] == {
        "uid": "5448c1186c797c02ca15e5490625490054db05759b7316e897d0504e3f296665",
        "email_addr": "jdoe@example.com",
        "name": "jdoe@example.com",
    }
    assert echo["actor"]["session"] == {"uid": "d2369f49-d11c-4322-b8a2-818d9c23de10"}
    assert echo["metadata"]["product"] == {"name": "Claude Code", "vendor_name": "Anthropic", "version": "2.1.332"}
    assert echo["metadata"]["correlation_uid"] == "45a82b7e-0bc3-441c-ab9c-cad24dc9389a"
    assert echo["time"] == 1795643846326
    assert echo["unmapped"]["truncated"] is True

    write = to_ocsf(by_id["9161a6cece6e8d80f8269829d7a7ebbe"])  # details run: file_change of the Write
    assert (write["class_uid"], write["activity_id"], write["type_uid"]) == (1001, 1, 100101)
    assert write["file"] == {"name": "hello.txt", "type_id": 1, "type": "Regular File",
                             "path": "/home/dev/project/hello.txt"}  # fmt: skip
    edit = to_ocsf(by_id["a836970224e3093bac15c2feb0a3baf8"])
    assert (edit["class_uid"], edit["activity_id"], edit["type_uid"]) == (1001, 3, 100103)

    reject = to_ocsf(by_id["7134ee20d4646350183df15d9e7634d1"])  # deny run: the rm rejected by a rule
    assert (reject["class_uid"], reject["activity_id"], reject["type_uid"]) == (6003, 99, 600399)
    assert (reject["status_id"], reject["status"], reject["severity_id"]) == (2, "Failure", 2)
    assert reject["actor"]["authorizations"] == [{"decision": "denied", "policy": {"name": "config"}}]
    assert reject["status_detail"] == "config"
    assert reject["api"] == {"operation": "Bash", "service": {"name": "claude-code"},
                             "request": {"uid": "toolu_fake_2f638537e7244ed983e7"}}  # fmt: skip
    assert reject["unmapped"]["approval_mode"] == "automatic"

    accept = to_ocsf(by_id["51b450e4815dd55dff3bf3ef918c8f63"])  # details run: Write accepted
    assert (accept["activity_id"], accept["status_id"], accept["severity_id"]) == (1, 1, 1)
    assert accept["actor"]["authorizations"] == [{"decision": "allowed", "policy": {"name": "config"}}]

    api = to_ocsf(by_id["6c59d988e1f6cd8ca89246ca0aad832a"])  # details run: first api_request
    assert api["ai_model"] == {"name": "claude-opus-5-5", "ai_provider": "Anthropic"}
    assert api["metadata"]["profiles"] == ["ai_operation"]
    assert api["api"]["service"] == {"name": "anthropic"}


def test_edge_records_map_to_valid_events() -> None:
    t = "2026-11-25T21:57:26.254Z"
    cases = [
        {"kind": "api_error", "time": t, "model": "m", "api": {"status_code": 529, "error": "overloaded"}},
        {"kind": "tool_result", "time": t, "tool": {"name": "mcp__github__create_issue", "success": False}},
        {"kind": "tool_result", "time": t, "tool": {"name": "Bash"}},
        {"kind": "file_change", "time": t, "tool": {"name": "Write"}, "file": {"operation": "write"}},
        {"kind": "event", "event": "claude_code.permission_mode_changed", "time": t},
        {"kind": "event", "time": "not a time"},
        {"kind": "tool_decision", "time": t, "tool": {"decision": "ask"}},
        {},
    ]
    for rec in cases:
        ev = to_ocsf(rec)
        problems = [p for p in violations(ev) if not (rec.get("time") != t and p.startswith("time"))]
        assert problems == [], (rec, problems)
    mcp = to_ocsf(cases[1])
    assert mcp["api"]["service"] == {"name": "github"} and mcp["status_id"] == 2
    err = to_ocsf(cases[0])
    assert (err["status_id"], err["severity_id"], err["status_code"], err["status_detail"]) == (
        2,
        3,
        "529",
        "overloaded",
    )
    assert to_ocsf(cases[4])["activity_id"] == 3
    assert (
        "secret plan" not in orjson.dumps(to_ocsf({"kind": "user_prompt", "prompt": {"text": "secret plan"}})).decode()
    )


def test_http_destination_with_schema_ocsf_sends_ocsf_and_keeps_the_records() -> None:
    recs = [
        {"id": "a", "kind": "tool_decision", "time": "2026-11-25T21:57:26.254Z",
         "tool": {"name": "Bash", "decision": "reject", "decision_source": "user_reject"}},
        {"id": "b", "kind": "user_prompt", "time": "2026-11-25T21:57:27.000Z", "prompt": {"length": 12}},
    ]  # fmt: skip
    delivery = [DeliveryRecord(i + 1, r["id"], orjson.dumps(r), 1795643846254 + i) for i, r in enumerate(recs)]
    exp = HttpExporter("http/siem", HttpExporterConfig(url="http://127.0.0.1:9/ingest", schema="ocsf"))
    payloads = exp.encode(delivery)
    assert len(payloads) == 1
    assert payloads[0].records == delivery, "dead letters keep the audit records, not the OCSF events"
    lines = [orjson.loads(line) for line in payloads[0].data.splitlines()]
    assert [(e["class_uid"], e["activity_id"], e["metadata"]["uid"]) for e in lines] == [
        (6003, 99, "a"),
        (6003, 1, "b"),
    ]
    assert all(violations(e) == [] for e in lines)
    small = HttpExporter("http/x", HttpExporterConfig(url="http://127.0.0.1:9/", schema="ocsf", max_request_bytes=1024))
    assert [len(p.records) for p in small.encode(delivery)] == [1, 1], "split on the size of the OCSF bodies"
    plain = HttpExporter("http/y", HttpExporterConfig(url="http://127.0.0.1:9/"))
    assert plain.encode(delivery)[0].data == b"\n".join(d.body for d in delivery) + b"\n"


def test_schema_option_in_config() -> None:
    cfg = load_text("exporters: {http/siem: {url: 'https://siem.example/in', schema: ocsf}}")
    assert cfg.exporters["http/siem"].schema == "ocsf"
    assert load_text("exporters: {http/siem: {url: 'https://siem.example/in'}}").exporters["http/siem"].schema == (
        "ccbridge"
    )
    with pytest.raises(ConfigError, match=r"exporters.http/siem.schema: must be one of ccbridge, ocsf; got 'cef'"):
        load_text("exporters: {http/siem: {url: 'https://siem.example/in', schema: cef}}")
