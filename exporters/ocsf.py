"""Audit records as OCSF 1.8.0 events (``exporters.<key>.schema: ocsf``). Pure: :func:`to_ocsf` maps one record.

Classes (OCSF schema 1.x, https://schema.ocsf.io/):

- ``tool_result`` of a shell tool (``Bash``) -> **Process Activity** (1007, System Activity), activity 1 *Launch*:
  ``process.uid`` is the ``tool_use_id`` (Claude Code reports no pid), ``process.cmd_line`` the command (present only
  with ``OTEL_LOG_TOOL_DETAILS=1``; Claude Code truncates long ones, so ``unmapped.truncated`` is set),
  ``process.name`` its first word;
- ``file_change`` -> **File System Activity** (1001, System Activity): ``Write`` is 1 *Create*, ``Edit``,
  ``MultiEdit``, ``NotebookEdit`` are 3 *Update* (Claude Code does not say whether a written file existed);
- ``tool_decision`` -> **API Activity** (6003, Application Activity) with the decision in
  ``actor.authorizations[].decision`` (``allowed`` / ``denied``) and ``policy.name`` = the decision source,
  ``status_id`` 1 *Success* / 2 *Failure* and ``severity_id`` 1 / 2 (a denial is Low);
- any other ``tool_result`` -> API Activity, activity by the tool's semantics (2 *Read* for Read/Grep/Glob/LS/
  WebFetch/WebSearch/NotebookRead, 1 *Create* for Write, 3 *Update* for the edit tools, else 99 *Other*);
- ``api_request`` / ``api_error`` -> API Activity 1 *Create* on service ``anthropic`` (a Messages API call) with the
  ``ai_operation`` profile's ``ai_model``; an error is *Failure*, severity 3 *Medium*, with its HTTP status;
- ``user_prompt`` -> API Activity 1 *Create* (the prompt text is never mapped; its length is in ``unmapped``);
  ``permission_mode_changed`` -> 3 *Update* on resource ``permission_mode``; every other event -> 99 *Other*.

Every event has the base attributes (``class_uid``, ``category_uid``, ``activity_id``, ``type_uid`` = class_uid *
100 + activity_id, ``severity_id``, ``time`` in epoch ms, ``metadata`` with ``version`` 1.8.0 and ``product``) and
their captions, an ``actor`` (``user`` with ``uid`` and ``email_addr``, ``session.uid``, ``app_name``
``claude-code``), ``device`` (``type_id`` 0 Unknown, ``hostname`` when the resource has ``host.name``) for System
Activity classes and ``src_endpoint`` for API Activity. What OCSF has no home for (tool name and use id, decision
source, approval mode, the bridge's record kind and authenticated sender) is under ``unmapped``.

The mapper reads only the normalized fields of the record, never ``attributes`` or ``resource`` wholesale, so a
field removed by the destination's field policy before mapping stays removed.
"""

from __future__ import annotations

import os
from typing import Any

from collector.jsonbytes import dumps_kept
from collector.processing.normalize import parse_rfc3339

OCSF_VERSION = "1.8.0"
PRODUCT = {"name": "Claude Code", "vendor_name": "Anthropic"}

SYSTEM = (1, "System Activity")
APPLICATION = (6, "Application Activity")
FILE_SYSTEM_ACTIVITY = (1001, "File System Activity", SYSTEM)
PROCESS_ACTIVITY = (1007, "Process Activity", SYSTEM)
API_ACTIVITY = (6003, "API Activity", APPLICATION)

ACTIVITY_NAMES: dict[int, dict[int, str]] = {
    1001: {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Rename", 6: "Set Attributes",
           7: "Set Security", 8: "Get Attributes", 9: "Get Security", 10: "Encrypt", 11: "Decrypt", 12: "Mount",
           13: "Unmount", 14: "Open", 99: "Other"},
    1007: {0: "Unknown", 1: "Launch", 2: "Terminate", 3: "Open", 4: "Inject", 5: "Set User ID", 99: "Other"},
    6003: {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"},
}  # fmt: skip
SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal",
                  99: "Other"}  # fmt: skip
STATUS_NAMES = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}

SHELL_TOOLS = frozenset({"Bash", "BashOutput", "PowerShell"})
READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "WebFetch", "WebSearch", "NotebookRead"})
UPDATE_TOOLS = frozenset({"Edit", "MultiEdit", "NotebookEdit"})
FILE_ACTIVITY = {"write": 1, "edit": 3, "notebook_edit": 3}


def _epoch_ms(text: Any) -> int | None:
    ns = parse_rfc3339(text)
    return None if ns is None else ns // 1_000_000


def _get(rec: dict[str, Any], *path: str) -> Any:
    cur: Any = rec
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _s(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return None


def tool_activity(tool_name: str | None) -> int:
    """API Activity ``activity_id`` for a tool: 2 Read, 1 Create, 3 Update, else 99 Other."""
    if tool_name in READ_TOOLS:
        return 2
    if tool_name == "Write":
        return 1
    if tool_name in UPDATE_TOOLS:
        return 3
    return 99


def _service_of(tool_name: str | None) -> str:
    """``claude-code`` for built-in tools; the MCP server for ``mcp__<server>__<tool>``."""
    if tool_name and tool_name.startswith("mcp__"):
        server = tool_name[5:].split("__", 1)[0]
        if server:
            return server
    return "claude-code"


def _actor(rec: dict[str, Any]) -> dict[str, Any]:
    actor: dict[str, Any] = {"app_name": "claude-code"}
    user: dict[str, Any] = {}
    uid = _s(_get(rec, "user", "id")) or _s(_get(rec, "user", "account_uuid"))
    email = _s(_get(rec, "user", "email"))
    if uid:
        user["uid"] = uid
    if email:
        user["email_addr"] = email
        user.setdefault("uid", email)
        user["name"] = email
    if user:
        actor["user"] = user
    session = _s(_get(rec, "session", "id"))
    if session:
        actor["session"] = {"uid": session}
    return actor


def _host(rec: dict[str, Any]) -> str | None:
    return _s(_get(rec, "resource", "host.name"))


def _set_class(out: dict[str, Any], cls: tuple[int, str, tuple[int, str]], activity_id: int) -> None:
    class_uid, class_name, (category_uid, category_name) = cls
    activity_name = ACTIVITY_NAMES[class_uid].get(activity_id, "Other")
    out.update(
        {
            "class_uid": class_uid,
            "class_name": class_name,
            "category_uid": category_uid,
            "category_name": category_name,
            "activity_id": activity_id,
            "activity_name": activity_name,
            "type_uid": class_uid * 100 + activity_id,
            "type_name": f"{class_name}: {activity_name}",
        }
    )


def _set_status(out: dict[str, Any], status_id: int, severity_id: int) -> None:
    out["status_id"] = status_id
    out["status"] = STATUS_NAMES[status_id]
    out["severity_id"] = severity_id
    out["severity"] = SEVERITY_NAMES[severity_id]


def _metadata(rec: dict[str, Any]) -> dict[str, Any]:
    product: dict[str, Any] = dict(PRODUCT)
    version = _s(_get(rec, "app", "version"))
    if version:
        product["version"] = version
    meta: dict[str, Any] = {"version": OCSF_VERSION, "product": product}
    for key, value in (
        ("uid", _s(rec.get("id"))),
        ("log_name", _s(rec.get("event"))),
        ("original_time", _s(rec.get("time"))),
        ("tenant_uid", _s(_get(rec, "organization", "id"))),
        ("correlation_uid", _s(_get(rec, "prompt", "id")) or _s(_get(rec, "session", "id"))),
    ):
        if value:
            meta[key] = value
    return meta


def _unmapped(rec: dict[str, Any]) -> dict[str, Any]:
    un: dict[str, Any] = {"ccbridge_kind": rec.get("kind")}
    tool = rec.get("tool") if isinstance(rec.get("tool"), dict) else {}
    for src, dst in (
        ("name", "tool_name"),
        ("use_id", "tool_use_id"),
        ("decision_source", "decision_source"),
        ("approval_mode", "approval_mode"),
        ("permission_mode", "permission_mode"),
        ("source", "tool_source"),
    ):
        v = _s(tool.get(src))
        if v:
            un[dst] = v
    identity = _s(_get(rec, "source", "identity"))
    if identity:
        un["source_identity"] = identity
    return un


def _outcome_status(tool: dict[str, Any]) -> tuple[int, int]:
    success = tool.get("success")
    if success is True:
        return 1, 1
    if success is False or tool.get("error"):
        return 2, 2
    return 0, 1


def _resources(rec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    command = _s(_get(rec, "tool", "command"))
    path = _s(_get(rec, "file", "path"))
    if path:
        out.append({"name": path, "type": "file"})
    if command:
        out.append({"name": command, "type": "command"})
    return out


def _api(operation: str, service: str, request_uid: str | None = None) -> dict[str, Any]:
    api: dict[str, Any] = {"operation": operation, "service": {"name": service}}
    if request_uid:
        api["request"] = {"uid": request_uid}
    return api


def _src_endpoint(rec: dict[str, Any]) -> dict[str, Any]:
    ep: dict[str, Any] = {"name": "claude-code"}
    host = _host(rec)
    if host:
        ep["hostname"] = host
    identity = _s(_get(rec, "source", "identity"))
    if identity:
        ep["uid"] = identity
    return ep


def _device(rec: dict[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = {"type_id": 0, "type": "Unknown"}
    host = _host(rec)
    if host:
        device["hostname"] = host
    return device


def _ai_model(rec: dict[str, Any]) -> dict[str, Any] | None:
    model = _s(rec.get("model"))
    if not model:
        return None
    return {"name": model, "ai_provider": "Anthropic"}


def to_ocsf(record: dict[str, Any]) -> dict[str, Any]:
    """The OCSF 1.8.0 event for one audit record (see the module docstring for the mapping)."""
    rec = record
    kind = rec.get("kind")
    tool = rec.get("tool") if isinstance(rec.get("tool"), dict) else {}
    tool_name = _s(tool.get("name"))
    use_id = _s(tool.get("use_id"))
    out: dict[str, Any] = {}
    unmapped = _unmapped(rec)
    actor = _actor(rec)
    status_id, severity_id = 0, 1

    if kind == "file_change":
        _set_class(out, FILE_SYSTEM_ACTIVITY, FILE_ACTIVITY.get(_s(_get(rec, "file", "operation")) or "", 99))
        path = _s(_get(rec, "file", "path")) or ""
        out["file"] = {"name": os.path.basename(path) or path or "unknown", "type_id": 1, "type": "Regular File"}
        if path:
            out["file"]["path"] = path
        out["device"] = _device(rec)
        status_id, severity_id = _outcome_status(tool)
        model = _s(rec.get("model"))
        if model:
            unmapped["model"] = model
    elif kind == "tool_result" and tool_name in SHELL_TOOLS:
        _set_class(out, PROCESS_ACTIVITY, 1)
        process: dict[str, Any] = {"uid": use_id or _s(rec.get("id")) or "unknown"}
        command = _s(tool.get("command"))
        if command:
            process["cmd_line"] = command
            first = command.split(None, 1)
            if first:
                process["name"] = first[0]
            unmapped["truncated"] = True
        out["process"] = process
        out["device"] = _device(rec)
        status_id, severity_id = _outcome_status(tool)
        out["actor"] = actor
    elif kind == "tool_decision":
        _set_class(out, API_ACTIVITY, tool_activity(tool_name))
        decision = _s(tool.get("decision"))
        allowed = decision == "accept"
        denied = decision == "reject"
        authz: dict[str, Any] = {"decision": "allowed"} if allowed else {"decision": "denied"} if denied else {}
        source = _s(tool.get("decision_source"))
        if source:
            authz["policy"] = {"name": source}
            out["status_detail"] = source
        if decision and not (allowed or denied):
            unmapped["decision"] = decision
        if authz:
            actor["authorizations"] = [authz]
        status_id, severity_id = (1, 1) if allowed else (2, 2) if denied else (0, 1)
        out["api"] = _api(tool_name or "unknown", _service_of(tool_name), use_id)
        out["src_endpoint"] = _src_endpoint(rec)
        resources = _resources(rec)
        if resources:
            out["resources"] = resources
    elif kind == "tool_result":
        _set_class(out, API_ACTIVITY, tool_activity(tool_name))
        out["api"] = _api(tool_name or "unknown", _service_of(tool_name), use_id)
        out["src_endpoint"] = _src_endpoint(rec)
        resources = _resources(rec)
        if resources:
            out["resources"] = resources
        status_id, severity_id = _outcome_status(tool)
    elif kind in ("api_request", "api_error"):
        _set_class(out, API_ACTIVITY, 1)
        out["api"] = _api("messages", "anthropic", _s(_get(rec, "api", "request_id")))
        out["src_endpoint"] = _src_endpoint(rec)
        if kind == "api_error":
            status_id, severity_id = 2, 3
            code = _get(rec, "api", "status_code")
            if code is not None:
                out["status_code"] = str(code)
            error = _s(_get(rec, "api", "error"))
            if error:
                out["status_detail"] = error
        else:
            status_id, severity_id = 1, 1
        model = _ai_model(rec)
        if model is not None:
            out["ai_model"] = model
            out["metadata_profiles"] = ["ai_operation"]
        for key in ("cost_usd", "tokens"):
            if rec.get(key) is not None:
                unmapped[key] = rec[key]
    else:
        short = (_s(rec.get("event")) or "unknown").removeprefix("claude_code.")
        if kind == "user_prompt":
            activity = 1
        elif short == "permission_mode_changed":
            activity = 3
            out["resources"] = [{"name": "permission_mode", "type": "setting"}]
        else:
            activity = 99
        _set_class(out, API_ACTIVITY, activity)
        out["api"] = _api(short, "claude-code")
        out["src_endpoint"] = _src_endpoint(rec)
        length = _get(rec, "prompt", "length")
        if kind == "user_prompt" and isinstance(length, int):
            unmapped["prompt_length"] = length
        status_id = 1 if kind == "user_prompt" else 0

    _set_status(out, status_id, severity_id)
    time_ms = _epoch_ms(rec.get("time")) or _epoch_ms(rec.get("observed_time")) or _epoch_ms(rec.get("received_time"))
    out["time"] = time_ms if time_ms is not None else 0
    duration = tool.get("duration_ms") if kind in ("tool_result", "file_change") else _get(rec, "api", "duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
        out["duration"] = int(duration)
    meta = _metadata(rec)
    profiles = out.pop("metadata_profiles", None)
    if profiles:
        meta["profiles"] = profiles
    out["metadata"] = meta
    out["actor"] = actor
    out["unmapped"] = unmapped
    return out


def ocsf_body(record: dict[str, Any]) -> bytes:
    """:func:`to_ocsf` serialized as JSON (what a destination with ``schema: ocsf`` sends per record)."""
    return dumps_kept(to_ocsf(record))
