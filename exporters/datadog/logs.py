"""Audit records as Datadog log entries (``POST /api/v2/logs``), and how batches are cut to the intake's limits.

One record becomes one entry:

- ``ddsource: claude-code``, ``service`` and ``hostname`` from the configuration;
- ``ddtags``: the configured tags, then ``kind``, ``tool``, ``decision``, ``model`` and ``organization`` when the
  record has them (values sanitised: Datadog tags cannot hold commas and are best kept to ``[A-Za-z0-9_.:/-]``);
- ``status`` (the log level) from :func:`status_of`;
- ``message``: one short human line (:func:`summary`), e.g. ``alice approved Bash: rm -rf build (manual)``, made from
  the record *after* the destination's field policy (a hashed e-mail stays hashed);
- ``timestamp`` (epoch milliseconds of the event, which Datadog's date remapper reads) and ``claude_code.time`` (the
  same instant as text; Datadog ingests entries older than 18 hours without their own time, the attribute keeps it);
- facet-ready attributes: Datadog's standard ``usr.id`` / ``usr.email`` (after the policy: a hash by default) and
  ``evt.name`` / ``evt.outcome``, and ``claude_code``: the whole policed record, once (its raw ``attributes`` and
  ``resource`` included), so ``@claude_code.tool.decision``, ``@claude_code.session.id`` etc. can be facets.

Limits (spec: 5 MB per request, 1 MB per entry, 1000 entries per array): batches are split into consecutive groups
of at most :data:`MAX_ENTRIES` entries and :data:`MAX_PAYLOAD_BYTES` bytes of JSON array. An entry above
:data:`MAX_ENTRY_BYTES` is **cut visibly** rather than dead-lettered: tags, status and the small facet
attributes stay, values over 1 KiB are removed from ``claude_code`` (the whole object as a last resort),
``ccbridge.truncated`` is ``true`` and ``ccbridge.record_bytes`` holds the size of the record as it was. The full
record stays in the bridge's own store (and any system-of-record destination); Datadog would silently truncate it
anyway.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from collector.jsonbytes import dumps_kept
from exporters.base import DeliveryRecord
from exporters.fieldpolicy import FieldPolicy

DDSOURCE = "claude-code"
MAX_ENTRIES = 1000
MAX_PAYLOAD_BYTES = 5_000_000
MAX_ENTRY_BYTES = 1_000_000 - 1024  # the spec's 1 MB per log, read as 10^6 bytes, less a margin
LARGE_ATTRIBUTE_BYTES = 1024
_TAG_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.:/\-]+")
_MAX_TAG_VALUE = 200
MAX_MESSAGE_CHARS = 300
_TAGS_CACHE_MAX = 4096


def status_of(record: dict[str, Any]) -> str:
    """The Datadog log level of a record.

    ``error`` for ``api_error``; ``warning`` for a rejected ``tool_decision`` and for a ``tool_result`` /
    ``file_change`` with ``tool.success`` false; ``info`` for everything else.
    """
    kind = record.get("kind")
    tool = record.get("tool") or {}
    if kind == "api_error":
        return "error"
    if kind == "tool_decision" and tool.get("decision") == "reject":
        return "warning"
    if kind in ("tool_result", "file_change") and tool.get("success") is False:
        return "warning"
    return "info"


def tag_value(value: Any) -> str:
    """A value made safe for a Datadog tag: no commas or spaces, at most 200 characters."""
    if isinstance(value, str | int | float):  # bools too: typed=True keeps True apart from 1
        return _tag_text(value)
    return _clean(orjson.dumps(value).decode())


@functools.lru_cache(maxsize=4096, typed=True)
def _tag_text(value: str | int | float) -> str:
    return _clean(value if isinstance(value, str) else orjson.dumps(value).decode())


def _clean(text: str) -> str:
    return _TAG_VALUE_BAD.sub("_", text).strip("_")[:_MAX_TAG_VALUE]


def record_tags(record: dict[str, Any]) -> list[str]:
    """Tags derived from a record: ``kind``, ``tool``, ``decision``, ``model``, ``organization`` when present."""
    tool = record.get("tool") or {}
    org = record.get("organization") or {}
    pairs = (
        ("kind", record.get("kind")),
        ("tool", tool.get("name")),
        ("decision", tool.get("decision")),
        ("model", record.get("model")),
        ("organization", org.get("id") if isinstance(org, dict) else None),
    )
    out = []
    for key, value in pairs:
        if value is None or value == "":
            continue
        text = tag_value(value)
        if text:
            out.append(f"{key}:{text}")
    return out


def _outcome(record: dict[str, Any]) -> str | None:
    kind = record.get("kind")
    if kind in ("tool_result", "file_change"):
        success = (record.get("tool") or {}).get("success")
        return None if success is None else ("success" if success else "failure")
    if kind == "api_request":
        return "success"
    if kind == "api_error":
        return "failure"
    return None


def _who(rec: dict[str, Any]) -> str:
    """The person: the e-mail's local part (``alice`` of alice@example.com), else the e-mail or id as policed."""
    user = rec.get("user")
    if isinstance(user, dict):
        email = user.get("email")
        if isinstance(email, str) and email:
            local, at, _ = email.partition("@")
            return local if at and local else email
        uid = user.get("id")
        if isinstance(uid, str) and uid:
            return f"user {uid[:12]}"
    return "someone"


def _short(text: Any, limit: int = 120) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _target(rec: dict[str, Any]) -> str:
    tool = rec.get("tool") or {}
    name = tool.get("name") or "a tool"
    what = tool.get("command") or (rec.get("file") or {}).get("path")
    return f"{name}: {_short(what)}" if what else str(name)


def summary(rec: dict[str, Any]) -> str:
    """One human line for the log explorer, e.g. ``alice approved Bash: rm -rf build (manual)``."""
    kind = rec.get("kind")
    who = _who(rec)
    tool = rec.get("tool") or {}
    if kind == "tool_decision":
        verb = {"accept": "approved", "reject": "rejected"}.get(str(tool.get("decision")), "decided on")
        mode = tool.get("approval_mode") or tool.get("decision_source")
        text = f"{who} {verb} {_target(rec)}" + (f" ({mode})" if mode else "")
    elif kind == "tool_result":
        ok = tool.get("success")
        outcome = "succeeded" if ok is True else "failed" if ok is False else "finished"
        text = f"{who} ran {_target(rec)}: {outcome}"
        if ok is False and tool.get("error_type"):
            text += f" ({tool['error_type']})"
    elif kind == "file_change":
        f = rec.get("file") or {}
        text = f"{who} changed {_short(f.get('path') or '?')} ({f.get('operation') or tool.get('name') or 'edit'})"
    elif kind == "api_request":
        tokens = rec.get("tokens") or {}
        cost = rec.get("cost_usd")
        text = (
            f"{who}: {rec.get('model') or 'model'} request, {tokens.get('input', 0)} in / {tokens.get('output', 0)} out"
            " tokens" + (f", ${cost:.4f}" if isinstance(cost, int | float) else "")
        )
    elif kind == "api_error":
        api = rec.get("api") or {}
        detail = api.get("error")
        status = api.get("status_code")
        text = f"{who}: {rec.get('model') or 'model'} request failed" + (f" ({status})" if status else "")
        text += f": {_short(detail)}" if detail else ""
    elif kind == "user_prompt":
        length = (rec.get("prompt") or {}).get("length")
        text = f"{who} sent a prompt" + (f" ({length} characters)" if length is not None else "")
    elif kind == "chain_head":
        head = rec.get("chain_head") or {}
        text = f"chain head of shard {head.get('shard')} at seq {head.get('seq')}"
    else:
        text = f"{who}: {rec.get('event') or kind or 'event'}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


class LogEncoder:
    """Turns delivery records into encoded log entries (compact JSON bytes, each within the per-entry limit)."""

    def __init__(self, policy: FieldPolicy, *, service: str, hostname: str, tags: Sequence[str]) -> None:
        self.policy = policy
        self.service = service
        self.hostname = hostname
        self.tags = list(tags)
        self._tags_cache: dict[tuple[str | None, ...], str] = {}

    def entry(self, dr: DeliveryRecord) -> dict[str, Any]:
        """The log entry of one record, as a dict."""
        raw = dr.record
        rec = self.policy.apply(raw)
        entry: dict[str, Any] = {
            "ddsource": DDSOURCE,
            "service": self.service,
            "hostname": self.hostname,
            "ddtags": self._ddtags(rec),
            "status": status_of(raw),
            "message": summary(rec),
            "timestamp": dr.time_ms,
        }
        evt: dict[str, Any] = {"name": rec.get("event") or f"claude_code.{rec.get('kind', 'event')}"}
        outcome = _outcome(raw)
        if outcome is not None:
            evt["outcome"] = outcome
        entry["evt"] = evt
        user = rec.get("user")
        if isinstance(user, dict):
            usr = {k: user[k] for k in ("id", "email") if k in user}
            if usr:
                entry["usr"] = usr
        entry["claude_code"] = rec
        return entry

    def _ddtags(self, rec: dict[str, Any]) -> str:
        """The entry's ``ddtags``; remembered per combination of the tagged values (there are few)."""
        tool = rec.get("tool") or {}
        org = rec.get("organization") or {}
        key = (
            rec.get("kind"),
            tool.get("name"),
            tool.get("decision"),
            rec.get("model"),
            org.get("id") if isinstance(org, dict) else None,
        )
        for value in key:
            # 1 and True hash alike but tag differently; long values are not worth keeping
            if value is not None and (value.__class__ is not str or len(value) > _MAX_TAG_VALUE):
                return ",".join(self.tags + record_tags(rec))
        found = self._tags_cache.get(key)
        if found is None:
            if len(self._tags_cache) >= _TAGS_CACHE_MAX:
                self._tags_cache.clear()
            found = self._tags_cache[key] = ",".join(self.tags + record_tags(rec))
        return found

    def encode(self, dr: DeliveryRecord) -> bytes:
        """One entry as compact JSON, truncated (with a marker) to at most :data:`MAX_ENTRY_BYTES`. The record's
        parsed form is dropped afterwards, so a batch being encoded never holds all of them."""
        entry = self.entry(dr)
        dr.forget()
        data = dumps_kept(entry)
        if len(data) <= MAX_ENTRY_BYTES:
            return data
        return truncate_entry(entry)


def truncate_entry(entry: dict[str, Any]) -> bytes:
    """``entry`` shrunk below :data:`MAX_ENTRY_BYTES`: values over :data:`LARGE_ATTRIBUTE_BYTES` removed from the
    ``claude_code`` record (and, should it still be too large, the record left out); the short ``message``, tags
    and the small facets stay."""
    facets = entry.get("claude_code")
    size = len(orjson.dumps(facets)) if facets is not None else 0
    entry["ccbridge"] = {"truncated": True, "record_bytes": size}
    if isinstance(facets, dict):
        entry["claude_code"] = _without_large_values(facets)
    data = orjson.dumps(entry)
    if len(data) > MAX_ENTRY_BYTES:
        entry.pop("claude_code", None)
        data = orjson.dumps(entry)
    return memoryview(data).tobytes()


def _without_large_values(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out[key] = _without_large_values(value)
        elif len(orjson.dumps(value)) <= LARGE_ATTRIBUTE_BYTES:
            out[key] = value
    return out


def split_entries(entries: Iterable[tuple[DeliveryRecord, bytes]]) -> list[list[tuple[DeliveryRecord, bytes]]]:
    """Consecutive groups of at most :data:`MAX_ENTRIES` entries whose JSON array is at most
    :data:`MAX_PAYLOAD_BYTES` bytes (``[`` + entries joined by ``,`` + ``]``)."""
    groups: list[list[tuple[DeliveryRecord, bytes]]] = []
    current: list[tuple[DeliveryRecord, bytes]] = []
    size = 2
    for item in entries:
        extra = len(item[1]) + (1 if current else 0)
        if current and (len(current) >= MAX_ENTRIES or size + extra > MAX_PAYLOAD_BYTES):
            groups.append(current)
            current, size = [], 2
            extra = len(item[1])
        current.append(item)
        size += extra
    if current:
        groups.append(current)
    return groups


def json_array(entries: Sequence[bytes]) -> bytes:
    """The request body: a JSON array of already-encoded entries."""
    return b"[" + b",".join(entries) + b"]"
