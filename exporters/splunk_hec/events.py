"""Audit records as HEC ``/event`` envelopes: metadata, index routing, indexed fields, request splitting.

One envelope per record::

    {"time":1764107883.512,"host":"bridge-1","source":"ccbridge","sourcetype":"claude:code:audit",
     "index":"ai_audit","fields":{"cc_kind":"tool_decision","cc_decision":"reject",...},"event":{...record...}}

``time`` is the record's ``time`` in epoch seconds with exactly three decimals (millisecond precision). ``event``
is the audit record after the destination's field policy (byte for byte the stored record when the policy keeps
everything, Splunk's default). ``fields`` are flat, string-valued indexed fields for fast ``tstats`` searches,
derived from the record *after* the field policy, so a dropped or hashed field never leaks through them; missing
values are omitted. They carry a ``cc_`` prefix so they never collide with the fields Splunk extracts from the JSON
``event`` at search time (a shared name would show every value twice).

With ``schema: ocsf`` the ``event`` is the record (after the policy) mapped to OCSF by :mod:`exporters.ocsf`; the
indexed fields still come from the audit record.

``index`` is the first matching routing rule's index, else the configured ``index``, else omitted (the token's
default index). Requests are concatenated envelopes separated by newlines (no array), split so that none holds more
than ``max_request_events`` envelopes or ``max_request_bytes`` bytes before compression; a single envelope larger
than the limit is sent alone (the server decides; a 413 then dead-letters it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from exporters.base import DeliveryRecord
from exporters.fieldpolicy import FieldPolicy

_MISSING = object()

INDEXED_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cc_kind", ("kind",)),
    ("cc_event", ("event",)),
    ("cc_user", ("user.email", "user.id")),
    ("cc_tool", ("tool.name",)),
    ("cc_decision", ("tool.decision",)),
    ("cc_approval_mode", ("tool.approval_mode",)),
    ("cc_org", ("organization.id",)),
    ("cc_model", ("model",)),
    ("cc_permission_mode", ("permission_mode.to", "tool.permission_mode")),
    ("cc_mcp_server", ("mcp.server", "tool.mcp_server")),
    ("cc_hook_event", ("hook.event", "hook_event.name")),
    ("cc_hook_outcome", ("hook.outcome",)),
    ("cc_agent", ("agent.id",)),
)
"""Indexed field name -> record paths tried in order (the first present string wins)."""

_INDEXED_PARTS = tuple((name, tuple(tuple(p.split(".")) for p in paths)) for name, paths in INDEXED_FIELDS)
_SECOND_CACHE: dict[str, int] = {}


def lookup(node: Any, parts: Sequence[str]) -> Any:
    """The value at a dotted path, trying the longest key first at each level (attribute keys contain dots)."""
    if not parts:
        return node
    if not isinstance(node, dict):
        return _MISSING
    for cut in range(len(parts), 0, -1):
        key = ".".join(parts[:cut])
        if key in node:
            found = lookup(node[key], parts[cut:])
            if found is not _MISSING:
                return found
    return _MISSING


def as_text(value: Any) -> str | None:
    """A scalar as Splunk would compare it (``true``/``false`` for booleans); None for objects, lists, null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def _epoch_ms(text: str) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time with a zone; None if it is not one."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z":  # the record's own format, 2026-11-25T21:58:03.512Z
        secs = _SECOND_CACHE.get(text[:19])
        if secs is None:
            try:
                secs = int(datetime.fromisoformat(text[:19] + "+00:00").timestamp())
            except ValueError:
                return None
            if len(_SECOND_CACHE) > 4096:
                _SECOND_CACHE.clear()
            _SECOND_CACHE[text[:19]] = secs
        frac = text[20:23]
        return secs * 1000 + int(frac) if frac.isdigit() else None
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    return round(parsed.timestamp() * 1000) if parsed.tzinfo is not None else None


def epoch_millis_text(record: dict[str, Any], fallback_ms: int) -> bytes:
    """``time`` as epoch seconds with three decimals, from the record's RFC 3339 ``time`` (else ``fallback_ms``)."""
    text = record.get("time")
    ms = _epoch_ms(text) if isinstance(text, str) else None
    ms = max(fallback_ms if ms is None else ms, 0)
    return f"{ms // 1000}.{ms % 1000:03d}".encode()


@dataclass(frozen=True)
class CompiledRule:
    conditions: tuple[tuple[tuple[str, ...], frozenset[str]], ...]
    index: str

    def matches(self, record: dict[str, Any]) -> bool:
        for parts, allowed in self.conditions:
            value = as_text(lookup(record, parts))
            if value is None or value not in allowed:
                return False
        return True


def compile_rules(rules: Sequence[Any]) -> list[CompiledRule]:
    """Routing rules (``RoutingRule``) in a form that is cheap to evaluate per record."""
    out = []
    for rule in rules:
        conditions = tuple(
            (tuple(path.split(".")), frozenset(str(as_text(x)) for x in (v if isinstance(v, list) else [v])))
            for path, v in rule.match.items()
        )
        out.append(CompiledRule(conditions, rule.index))
    return out


@dataclass(frozen=True)
class Envelope:
    """One encoded event and the index it names ("" = the token's default)."""

    data: bytes
    index: str


class EventEncoder:
    """Builds envelopes for one destination (metadata, routing, field policy, indexed fields)."""

    def __init__(
        self,
        *,
        host: str,
        source: str,
        sourcetype: str,
        index: str,
        rules: Sequence[CompiledRule],
        policy: FieldPolicy,
        event_body: Callable[[dict[str, Any]], bytes] | None = None,
    ) -> None:
        self.default_index = index
        self.rules = list(rules)
        self.policy = policy
        self.event_body = event_body
        self._base = {"host": host, "source": source, "sourcetype": sourcetype}
        self._meta_by_index: dict[str, bytes] = {}

    def _meta(self, index: str) -> bytes:
        """``"host":..,"source":..,"sourcetype":..[,"index":..]`` (cached per index)."""
        cached = self._meta_by_index.get(index)
        if cached is None:
            meta = dict(self._base)
            if index:
                meta["index"] = index
            cached = orjson.dumps(meta)[1:-1]
            self._meta_by_index[index] = cached
        return cached

    def route(self, record: dict[str, Any]) -> str:
        """The index for ``record``: the first matching rule's, else the configured one ("" = token default)."""
        for rule in self.rules:
            if rule.matches(record):
                return rule.index
        return self.default_index

    @staticmethod
    def indexed_fields(record: dict[str, Any]) -> dict[str, str]:
        """The non-empty string values at :data:`INDEXED_FIELDS`, read through the record's own nesting."""
        out: dict[str, str] = {}
        for name, paths in _INDEXED_PARTS:
            for parts in paths:
                node: Any = record
                for part in parts:
                    node = node.get(part) if node.__class__ is dict else None
                if node.__class__ is str and node:
                    out[name] = node
                    break
        return out

    def envelope(self, rec: DeliveryRecord) -> Envelope:
        """The envelope of ``rec``; its parsed record is dropped afterwards (a batch never holds all of them)."""
        record = rec.record
        rec.forget()
        index = self.route(record)
        shown = record if self.policy.is_noop else self.policy.apply(record)
        if self.event_body is not None:
            body = self.event_body(shown)
        elif shown is record:
            body = rec.body
        else:
            body = orjson.dumps(shown)
        data = b"".join(
            (
                b'{"time":',
                epoch_millis_text(record, rec.time_ms),
                b",",
                self._meta(index),
                b',"fields":',
                orjson.dumps(self.indexed_fields(shown)),
                b',"event":',
                body,
                b"}",
            )
        )
        return Envelope(data, index)


def split_envelopes(sizes: Sequence[int], max_bytes: int, max_events: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of consecutive envelopes (one newline after each) within both limits, in order.

    An envelope larger than ``max_bytes`` on its own gets a range of its own.
    """
    ranges: list[tuple[int, int]] = []
    start = 0
    size = 0
    for i, n in enumerate(sizes):
        cost = n + 1
        if i > start and (size + cost > max_bytes or i - start >= max_events):
            ranges.append((start, i))
            start, size = i, 0
        size += cost
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges
