"""Claude Code log records -> versioned audit records (``schemas/audit_record.v1.json``). Pure: no I/O, no clock.

One log record yields exactly one audit record; a ``tool_result`` of a file-editing tool whose input names a file
yields a second, ``file_change`` record. Records of any other event name are kept as kind ``event``.

What the real CLI sends differs from its documentation ("Monitoring usage",
https://docs.claude.com/en/docs/claude-code/monitoring-usage), and this module absorbs the differences:

- the event name is the log *body* (``claude_code.tool_decision``); fall back to ``LogRecord.event_name`` and to
  the ``event.name`` attribute (prefixed with ``claude_code.`` when bare);
- numbers and booleans often arrive as strings (``success: "true"``, ``duration_ms: "61"``) and are coerced;
- file paths appear only in ``tool_result.tool_input`` (a JSON string) or in ``tool_parameters``;
- identity may only be in ``OTEL_RESOURCE_ATTRIBUTES`` keys such as ``enduser.id``;
- ``time_unix_nano`` can be missing; then ``observed_time_unix_nano``, ``event.timestamp`` or the receive time is used.

Record ids are stable: a hash of the authenticated sender's identity (when receiver auth is on), session id,
``event.sequence`` and event name, so an exporter retry of the same event maps to the same id and is stored once,
and no other sender can send a record with that id.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

import orjson

from collector.processing.decode import LogEvent

SCHEMA_VERSION = "1.0"
EVENT_PREFIX = "claude_code."

KIND_BY_EVENT = {
    "claude_code.tool_decision": "tool_decision",
    "claude_code.tool_result": "tool_result",
    "claude_code.api_request": "api_request",
    "claude_code.api_error": "api_error",
    "claude_code.user_prompt": "user_prompt",
}
KINDS = (*KIND_BY_EVENT.values(), "file_change", "event", "chain_head", "trail_access")

FILE_TOOLS = {"Write": "write", "Edit": "edit", "MultiEdit": "edit", "NotebookEdit": "notebook_edit"}
APPROVAL_MODE_BY_SOURCE = {
    "config": "automatic",
    "hook": "hook",
    "user_permanent": "manual",
    "user_temporary": "manual",
    "user_abort": "manual",
    "user_reject": "manual",
}
_DECISIONS = {"accept": "accept", "reject": "reject", "allow": "accept", "deny": "reject"}
_TRUE = {"true", "1", "yes", "True", "TRUE"}
_FALSE = {"false", "0", "no", "False", "FALSE"}
_REDACTED = "<REDACTED>"


def to_int(v: Any) -> int | None:
    """Coerce an attribute to int: ints pass, integral floats and decimal strings convert, anything else is None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v.is_integer() else None
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                return None
            return int(f) if math.isfinite(f) and f.is_integer() else None
    return None


def to_float(v: Any) -> float | None:
    """Coerce an attribute to a finite float, or None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def to_number(v: Any) -> int | float | None:
    """Coerce to a number, as an int when integral (``"61"`` -> 61, ``"61.5"`` -> 61.5)."""
    f = to_float(v)
    if f is None:
        return None
    return int(f) if f.is_integer() and abs(f) < 2**63 else f


def to_count(v: Any) -> int | None:
    """A non-negative integer (token counts, sizes, lengths), or None."""
    n = to_int(v)
    return n if n is not None and n >= 0 else None


def to_amount(v: Any) -> int | float | None:
    """A non-negative number (durations, costs), or None."""
    n = to_number(v)
    return n if n is not None and n >= 0 else None


def to_bool(v: Any) -> bool | None:
    """Coerce ``true``/``"true"``/``"True"``/``1`` (and the false forms) to bool, or None."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return None
    if isinstance(v, int):
        return bool(v) if v in (0, 1) else None
    return None


def to_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v if v != "" else None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return None


def parse_json_text(v: Any) -> Any:
    """A JSON-encoded attribute (``tool_parameters``, ``tool_input``) as an object or array; otherwise as text."""
    if isinstance(v, dict | list):
        return v
    if not isinstance(v, str):
        return to_str(v)
    s = v.strip()
    if not s or s[0] not in "{[":
        return v
    try:
        parsed = orjson.loads(s)
    except orjson.JSONDecodeError:
        return v
    return parsed if isinstance(parsed, dict | list) else v


_second_cache: dict[int, str] = {}


def rfc3339_ms(unix_nano: int) -> str:
    """``2026-11-25T21:57:25.897Z`` for a Unix time in nanoseconds (millisecond precision, UTC)."""
    ms = unix_nano // 1_000_000
    secs, rem = divmod(ms, 1000)
    prefix = _second_cache.get(secs)
    if prefix is None:
        try:
            prefix = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):
            prefix = "1970-01-01T00:00:00"
        if len(_second_cache) > 4096:
            _second_cache.clear()
        _second_cache[secs] = prefix
    return f"{prefix}.{rem:03d}Z"


def parse_rfc3339(text: Any) -> int | None:
    """Unix nanoseconds from an ISO-8601/RFC 3339 string, or None."""
    if not isinstance(text, str) or len(text) < 10:
        return None
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000) * 1_000_000


def event_name_of(ev: LogEvent) -> str:
    """The full ``claude_code.*`` name: body first, then ``LogRecord.event_name``, then the ``event.name`` attribute."""
    body = ev.body
    if isinstance(body, str) and body.startswith(EVENT_PREFIX) and len(body) < 200 and "\n" not in body:
        return body
    if ev.event_name:
        return ev.event_name if "." in ev.event_name else EVENT_PREFIX + ev.event_name
    name = ev.attributes.get("event.name")
    if isinstance(name, str) and name:
        return name if name.startswith(EVENT_PREFIX) or "." in name else EVENT_PREFIX + name
    if isinstance(body, str) and body and len(body) < 200 and "\n" not in body and " " not in body:
        return body
    return "unknown"


def event_time_ns(ev: LogEvent, received_unix_nano: int) -> int:
    """When the event happened: record time, else observed time, else ``event.timestamp``, else receive time."""
    return (
        ev.time_unix_nano
        or ev.observed_time_unix_nano
        or parse_rfc3339(ev.attributes.get("event.timestamp"))
        or received_unix_nano
    )


def record_id(
    session_id: str | None, sequence: int | None, event: str, fallback: Any, identity: str | None = None
) -> str:
    """Stable 32-hex id: session + sequence + event name, or a hash of the record's content when those are absent;
    with an authenticated sender, its ``identity`` is part of the id, so no other sender can produce it (anonymous
    senders keep the identity-less derivation of schema 1.0)."""
    if identity:
        key = b"identity\x1f" + orjson.dumps(
            [identity, session_id, sequence, event] if session_id and sequence is not None else [identity, fallback],
            option=orjson.OPT_SORT_KEYS,
            default=str,
        )
    elif session_id and sequence is not None:
        key = f"{session_id}\x1f{sequence}\x1f{event}".encode()
    else:
        key = b"content\x1f" + orjson.dumps(fallback, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(key).hexdigest()[:32]


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


def _file_path_of(tool_input: Any, parameters: Any) -> str | None:
    for src in (tool_input, parameters):
        if isinstance(src, dict):
            for key in ("file_path", "notebook_path", "path"):
                v = src.get(key)
                if isinstance(v, str) and v:
                    return v
    return None


def _pick(attrs: dict[str, Any], resource: dict[str, Any], key: str) -> str | None:
    v = attrs.get(key)
    if v.__class__ is str and v:
        return v
    if v is None or v == "":
        v = resource.get(key)
        if v.__class__ is str:
            return v or None
    return to_str(v)


def _identity(attrs: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    v = _pick(attrs, resource, "user.id")
    if v:
        user["id"] = v
    v = _pick(attrs, resource, "user.account_uuid")
    if v:
        user["account_uuid"] = v
    v = _pick(attrs, resource, "user.account_id")
    if v:
        user["account_id"] = v
    email = _pick(attrs, resource, "user.email")
    enduser = _pick(attrs, resource, "enduser.id")
    if enduser:
        user["enduser_id"] = enduser
    if email:
        user["email"] = email
        user["identity_source"] = "user.email"
    elif enduser and "@" in enduser:
        user["email"] = enduser
        user["identity_source"] = "enduser.id"
    groups = attrs.get("user.groups", resource.get("user.groups"))
    if groups is not None:
        user["groups"] = groups
    return user


def normalize_log(
    ev: LogEvent,
    received_unix_nano: int,
    transport: str = "",
    source_identity: str | None = None,
) -> list[dict[str, Any]]:
    """Turn one OTLP log record into its audit record (and a ``file_change`` record where one applies)."""
    attrs = ev.attributes
    resource = ev.resource
    event = event_name_of(ev)
    kind = KIND_BY_EVENT.get(event, "event")

    time_ns = event_time_ns(ev, received_unix_nano)
    observed_ns = ev.observed_time_unix_nano or time_ns

    session_id = _pick(attrs, resource, "session.id")
    sequence = attrs.get("event.sequence")
    if sequence.__class__ is not int:
        sequence = to_int(sequence)
    if sequence is not None and sequence < 0:
        sequence = None

    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": "",
        "kind": kind,
        "event": event,
        "time": rfc3339_ms(time_ns),
        "observed_time": rfc3339_ms(observed_ns),
        "received_time": rfc3339_ms(received_unix_nano),
    }
    if sequence is not None:
        rec["sequence"] = sequence
    if session_id:
        rec["session"] = {"id": session_id}
    prompt: dict[str, Any] = {}
    prompt_id = attrs.get("prompt.id")
    if prompt_id:
        prompt_id = prompt_id if prompt_id.__class__ is str else to_str(prompt_id)
        if prompt_id:
            prompt["id"] = prompt_id

    user = _identity(attrs, resource)
    if user:
        rec["user"] = user
    org = _pick(attrs, resource, "organization.id")
    if org:
        rec["organization"] = {"id": org}
    terminal = attrs.get("terminal.type")
    if terminal:
        terminal = terminal if terminal.__class__ is str else to_str(terminal)
        if terminal:
            rec["terminal"] = {"type": terminal}
    version = _pick(attrs, resource, "app.version") or _pick(attrs, resource, "service.version")
    entrypoint = attrs.get("app.entrypoint")
    if version or entrypoint:
        app: dict[str, Any] = {}
        if version:
            app["version"] = version
        entrypoint = to_str(entrypoint) if entrypoint else None
        if entrypoint:
            app["entrypoint"] = entrypoint
        rec["app"] = app

    file_op: str | None = None
    file_path: str | None = None
    if kind in ("tool_decision", "tool_result"):
        tool: dict[str, Any] = {}
        tool_name = to_str(attrs.get("tool_name"))
        _put(tool, "name", tool_name)
        _put(tool, "use_id", to_str(attrs.get("tool_use_id")))
        _put(tool, "source", to_str(attrs.get("tool_source")))
        parameters = parse_json_text(attrs.get("tool_parameters"))
        tool_input = parse_json_text(attrs.get("tool_input"))
        if kind == "tool_decision":
            raw_decision = to_str(attrs.get("decision"))
            decision_source = to_str(attrs.get("source"))
        else:
            raw_decision = to_str(attrs.get("decision_type"))
            decision_source = to_str(attrs.get("decision_source"))
            _put(tool, "success", to_bool(attrs.get("success")))
            _put(tool, "duration_ms", to_amount(attrs.get("duration_ms")))
            _put(tool, "error", to_str(attrs.get("error")))
            _put(tool, "error_type", to_str(attrs.get("error_type")))
            _put(tool, "input_size_bytes", to_count(attrs.get("tool_input_size_bytes")))
            _put(tool, "result_size_bytes", to_count(attrs.get("tool_result_size_bytes")))
        decision = _DECISIONS.get(raw_decision.lower()) if raw_decision else None
        if decision:
            tool["decision"] = decision
        if decision_source:
            tool["decision_source"] = decision_source
            mode = APPROVAL_MODE_BY_SOURCE.get(decision_source)
            if mode is None and decision_source.startswith("user"):
                mode = "manual"
            _put(tool, "approval_mode", mode)
        _put(tool, "permission_mode", to_str(attrs.get("permission_mode")))
        if parameters is not None:
            tool["parameters"] = parameters
            if isinstance(parameters, dict):
                _put(tool, "command", to_str(parameters.get("full_command")))
        if tool_input is not None:
            tool["input"] = tool_input
            if "command" not in tool and isinstance(tool_input, dict) and tool_name == "Bash":
                _put(tool, "command", to_str(tool_input.get("command")))
        rec["tool"] = tool
        file_path = _file_path_of(tool_input, parameters)
        if tool_name in FILE_TOOLS:
            file_op = FILE_TOOLS[tool_name]
        if file_path:
            rec["file"] = {"path": file_path, **({"operation": file_op} if file_op else {})}
        _put(rec, "request_id", to_str(attrs.get("request_id")))
    elif kind in ("api_request", "api_error"):
        _put(rec, "model", to_str(attrs.get("model")))
        api: dict[str, Any] = {}
        _put(api, "request_id", to_str(attrs.get("request_id")))
        _put(api, "duration_ms", to_number(attrs.get("duration_ms")))
        _put(api, "query_source", to_str(attrs.get("query_source")))
        _put(api, "speed", to_str(attrs.get("speed")))
        _put(api, "effort", to_str(attrs.get("effort")))
        if kind == "api_request":
            cost = to_amount(attrs.get("cost_usd"))
            if cost is None:
                micros = to_count(attrs.get("cost_usd_micros"))
                cost = micros / 1_000_000 if micros is not None else None
            _put(rec, "cost_usd", cost)
            tokens: dict[str, Any] = {}
            _put(tokens, "input", to_count(attrs.get("input_tokens")))
            _put(tokens, "output", to_count(attrs.get("output_tokens")))
            _put(tokens, "cache_read", to_count(attrs.get("cache_read_tokens")))
            _put(tokens, "cache_creation", to_count(attrs.get("cache_creation_tokens")))
            if tokens:
                rec["tokens"] = tokens
            _put(api, "ttft_ms", to_number(attrs.get("ttft_ms")))
        else:
            _put(api, "status_code", to_int(attrs.get("status_code")))
            _put(api, "attempt", to_int(attrs.get("attempt")))
            _put(api, "error", to_str(attrs.get("error")))
        if api:
            rec["api"] = api
    elif kind == "user_prompt":
        _put(prompt, "length", to_count(attrs.get("prompt_length")))
        text = to_str(attrs.get("prompt"))
        if text and text != _REDACTED:
            prompt["text"] = text
    else:
        _put(rec, "model", to_str(attrs.get("model")))

    if prompt:
        rec["prompt"] = prompt
    if ev.trace_id:
        rec["trace"] = {"trace_id": ev.trace_id, **({"span_id": ev.span_id} if ev.span_id else {})}
    src: dict[str, Any] = {}
    _put(src, "transport", transport or None)
    _put(src, "identity", source_identity)
    if src:
        rec["source"] = src
    rec["scope"] = {"name": ev.scope_name, "version": ev.scope_version}
    if ev.severity_number or ev.severity_text:
        rec["severity"] = {"number": ev.severity_number, "text": ev.severity_text}
    if not (isinstance(ev.body, str) and ev.body == event):
        rec["body"] = ev.body
    rec["attributes"] = attrs
    rec["resource"] = resource

    keyed = bool(session_id) and sequence is not None
    fallback = None if keyed else [time_ns, event, attrs, resource, ev.body]
    rec["id"] = record_id(session_id, sequence, event, fallback, source_identity)
    out = [rec]
    if kind == "tool_result" and file_op and file_path:
        fc = dict(rec)
        fc["kind"] = "file_change"
        fc["id"] = record_id(session_id, sequence, event + "#file_change", [rec["id"], "file_change"], source_identity)
        fc["derived_from"] = rec["id"]
        out.append(fc)
    return out


def normalize_logs(
    events: list[LogEvent], received_unix_nano: int, transport: str = "", source_identity: str | None = None
) -> list[dict[str, Any]]:
    """All audit records of one request, in request order."""
    out: list[dict[str, Any]] = []
    for ev in events:
        out.extend(normalize_log(ev, received_unix_nano, transport, source_identity))
    return out
