"""Metrics for Datadog (``POST /api/v2/series``): what is counted, how counts are aggregated, and the request bodies.

Two sources feed the same counters, both read from the store by :mod:`exporters.datadog.tailer`:

- **Audit records** (event-derived counters, :func:`record_increments`): ``claude_code.audit.records`` by ``kind``;
  ``claude_code.audit.tool_decisions`` by ``tool``, ``decision``, ``source`` and ``approval_mode``;
  ``claude_code.audit.tool_results`` by ``tool`` and ``success``; ``claude_code.audit.file_changes`` by ``tool`` and
  ``operation``; ``claude_code.audit.api_requests``, ``claude_code.audit.cost_usd`` and ``claude_code.audit.tokens``
  (with ``type``) by ``model``; ``claude_code.audit.api_errors`` by ``model`` and ``status_code``. The bridge's
  own records (``chain_head``) are not counted.
- **Claude Code's own metric points** (:class:`PointConverter`): ``claude_code.cost.usage``, ``token.usage``,
  ``lines_of_code.count``, ``commit.count``, ``pull_request.count``, ``session.count``,
  ``code_edit_tool.decision``, ``active_time.total`` under their own names. DELTA points are counted as sent;
  CUMULATIVE points are turned into deltas per stream (name, attributes, resource, start time). The first point of
  a cumulative stream counts in full when the stream started inside the metrics window, otherwise it only sets the
  baseline (its earlier increase cannot be placed in time). Only ``sum`` points are supported; others are skipped.

Tags are bounded: configured tags, ``ccbridge_worker:<n>`` (each bridge worker process submits its own series, so
two workers never overwrite each other's points) and a fixed allow-list of low-cardinality attributes
(:data:`POINT_TAG_ATTRIBUTES`, plus configured extras). Never e-mails, user, session or prompt ids.

Every series is a Datadog **count** (type 1) with ``interval`` = the bucket width. Increments are summed into buckets
of ``interval`` seconds by event time. Datadog keeps the *last* value submitted for a (metric, tags, timestamp), so
a bucket is always submitted with its full total: when late data changes a bucket that was already sent, the new
total replaces the old one rather than adding to it.

The metrics API only takes points from the last hour (:data:`MAX_AGE_SECONDS` leaves a margin): increments with an
older bucket are not aggregated, and buckets that could not be sent before they became that old are dropped; both
are counted (reason ``too_old``). Event times more than a minute in the future are taken as now.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from collector.jsonbytes import dumps_kept
from exporters.base import gzip_compress
from exporters.datadog.logs import tag_value

COUNT = 1
MAX_AGE_SECONDS = 3300.0
FUTURE_SLACK_SECONDS = 60.0
MAX_PAYLOAD_BYTES = 500_000
MAX_DECOMPRESSED_BYTES = 5_000_000
CHUNK_DECOMPRESSED_BYTES = 2_000_000
STREAM_TTL_SECONDS = 7200.0

POINT_TAG_ATTRIBUTES: dict[str, str] = {
    "model": "model",
    "query_source": "query_source",
    "type": "type",
    "tool_name": "tool",
    "tool": "tool",
    "decision": "decision",
    "source": "source",
    "language": "language",
    "start_type": "start_type",
    "terminal.type": "terminal_type",
    "app.version": "app_version",
    "app.entrypoint": "entrypoint",
    "organization.id": "organization",
}
FORBIDDEN_TAG_ATTRIBUTES = frozenset(
    {"user.email", "enduser.id", "user.id", "session.id", "prompt.id", "user.account_uuid", "user.account_id"}
)
UNITS = {"USD": "dollar", "tokens": "token", "s": "second", "ms": "millisecond", "By": "byte"}
BRIDGE_KINDS = frozenset({"chain_head"})
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation")
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]+")


class Increment(NamedTuple):
    """One contribution to a count: ``value`` added to ``metric`` with ``tags`` at ``time_s`` (epoch seconds).

    ``item`` marks the one increment per record or data point that stands for it in skip accounting (a record
    yields several increments; only its ``claude_code.audit.records`` one is the item).
    """

    metric: str
    tags: tuple[str, ...]
    time_s: float
    value: float
    unit: str | None = None
    item: bool = True


def _tags(pairs: Iterable[tuple[str, Any]]) -> tuple[str, ...]:
    out = []
    for key, value in pairs:
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = tag_value(value)
        if text:
            out.append(f"{key}:{text}")
    return tuple(out)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


_TAGS_CACHE: dict[tuple[tuple[str, ...], tuple[Any, ...]], tuple[str, ...]] = {}
_TAGS_CACHE_MAX = 4096
_MAX_CACHED_TAG_VALUE = 200
_KIND = ("kind",)
_DECISION = ("tool", "decision", "source", "approval_mode")
_RESULT = ("tool", "success")
_CHANGE = ("tool", "operation")
_MODEL = ("model",)
_MODEL_TYPE = ("model", "type")
_ERROR = ("model", "status_code")


def _tags_of(names: tuple[str, ...], values: tuple[Any, ...]) -> tuple[str, ...]:
    """``_tags(zip(names, values))``, remembered for values that are short strings, booleans or None (a record's
    tool, decision, model... take few distinct values); anything else is worked out each time, so that ``1`` and
    ``True``, which hash alike, never share an entry."""
    for value in values:
        if value is not None and (
            (value.__class__ is not str and value.__class__ is not bool)
            or (value.__class__ is str and len(value) > _MAX_CACHED_TAG_VALUE)
        ):
            return _tags(zip(names, values, strict=True))
    key = (names, values)
    found = _TAGS_CACHE.get(key)
    if found is None:
        if len(_TAGS_CACHE) >= _TAGS_CACHE_MAX:
            _TAGS_CACHE.clear()
        found = _TAGS_CACHE[key] = _tags(zip(names, values, strict=True))
    return found


def record_increments(record: dict[str, Any], time_s: float) -> list[Increment]:
    """The event-derived counter increments of one audit record (see the module docstring).

    The bridge's own records (``chain_head``, event ``ccbridge.*``) are logs only: they count nothing.
    """
    kind = record.get("kind")
    if kind in BRIDGE_KINDS or str(record.get("event", "")).startswith("ccbridge."):
        return []
    out = [Increment("claude_code.audit.records", _tags_of(_KIND, (kind,)), time_s, 1.0)]
    tool = record.get("tool") or {}
    if kind == "tool_decision":
        values = (tool.get("name"), tool.get("decision"), tool.get("decision_source"), tool.get("approval_mode"))
        tags = _tags_of(_DECISION, values)
        out.append(Increment("claude_code.audit.tool_decisions", tags, time_s, 1.0, None, False))
    elif kind == "tool_result":
        tags = _tags_of(_RESULT, (tool.get("name"), tool.get("success")))
        out.append(Increment("claude_code.audit.tool_results", tags, time_s, 1.0, None, False))
    elif kind == "file_change":
        file = record.get("file") or {}
        tags = _tags_of(_CHANGE, (tool.get("name"), file.get("operation")))
        out.append(Increment("claude_code.audit.file_changes", tags, time_s, 1.0, None, False))
    elif kind == "api_request":
        model = record.get("model")
        model_tags = _tags_of(_MODEL, (model,))
        out.append(Increment("claude_code.audit.api_requests", model_tags, time_s, 1.0, None, False))
        cost = _number(record.get("cost_usd"))
        if cost is not None:
            out.append(Increment("claude_code.audit.cost_usd", model_tags, time_s, cost, "dollar", False))
        tokens = record.get("tokens") or {}
        for token_type in TOKEN_TYPES:
            count = _number(tokens.get(token_type))
            if count:
                tags = _tags_of(_MODEL_TYPE, (model, token_type))
                out.append(Increment("claude_code.audit.tokens", tags, time_s, count, "token", False))
    elif kind == "api_error":
        api = record.get("api") or {}
        tags = _tags_of(_ERROR, (record.get("model"), api.get("status_code")))
        out.append(Increment("claude_code.audit.api_errors", tags, time_s, 1.0, None, False))
    return out


def metric_name(name: str) -> str:
    """A Datadog-valid metric name (ASCII letters, digits, ``_`` and ``.``)."""
    return _METRIC_NAME_BAD.sub("_", name).strip("_.")[:200] or "claude_code.unnamed"


class PointConverter:
    """Claude Code metric points to increments, remembering the last value of each cumulative stream."""

    def __init__(self, tag_attributes: dict[str, str]) -> None:
        self.tag_attributes = tag_attributes
        self._last: dict[bytes, tuple[float, float]] = {}

    def convert(self, point: dict[str, Any], now: float, window: float = MAX_AGE_SECONDS) -> Increment | str:
        """The increment of ``point``, or a skip reason (``unsupported``, ``baseline``, ``invalid``)."""
        if point.get("type") != "sum":
            return "unsupported"
        value = _number(point.get("value"))
        t_ns = point.get("time_unix_nano")
        if value is None or not isinstance(t_ns, int) or isinstance(t_ns, bool):
            return "invalid"
        time_s = t_ns / 1e9
        if point.get("temporality") == "cumulative":
            stream = self._stream_key(point)
            previous = self._last.get(stream)
            self._last[stream] = (value, now)
            if previous is not None:
                value = value - previous[0] if value >= previous[0] else value
            else:
                start = point.get("start_time_unix_nano")
                started_in_window = isinstance(start, int) and start / 1e9 >= now - window
                if not started_in_window:
                    return "baseline"
        attrs = point.get("attributes") or {}
        tags = _tags((tag, attrs.get(attr)) for attr, tag in self.tag_attributes.items() if attr in attrs)
        unit = UNITS.get(str(point.get("unit") or ""))
        return Increment(metric_name(str(point.get("name") or "")), tuple(sorted(set(tags))), time_s, value, unit)

    @staticmethod
    def _stream_key(point: dict[str, Any]) -> bytes:
        ident = (point.get("name"), point.get("attributes"), point.get("resource"), point.get("start_time_unix_nano"))
        return hashlib.blake2b(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()

    def prune(self, now: float, ttl: float = STREAM_TTL_SECONDS) -> None:
        """Forget cumulative streams not seen for ``ttl`` seconds."""
        self._last = {k: v for k, v in self._last.items() if now - v[1] <= ttl}

    def __len__(self) -> int:
        return len(self._last)


@dataclass
class _Bucket:
    total: float = 0.0
    items: int = 0


SeriesKey = tuple[str, tuple[str, ...]]


@dataclass
class Aggregator:
    """Count totals per (metric, tags) and ``interval``-second bucket, and which buckets changed since sent."""

    interval: int
    base_tags: tuple[str, ...] = ()
    host: str = ""
    max_age: float = MAX_AGE_SECONDS
    buckets: dict[SeriesKey, dict[int, _Bucket]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    dirty: set[tuple[SeriesKey, int]] = field(default_factory=set)

    def add(self, inc: Increment, now: float, *, mark_dirty: bool = True) -> bool:
        """Add an increment; False (nothing added) when its bucket starts more than ``max_age`` ago."""
        t = inc.time_s
        if t > now + FUTURE_SLACK_SECONDS:
            t = now
        bucket = int(t // self.interval) * self.interval
        if bucket < now - self.max_age:
            return False
        key = (inc.metric, inc.tags)
        slots = self.buckets.get(key)
        if slots is None:
            slots = self.buckets[key] = {}
        slot = slots.get(bucket)
        if slot is None:
            slot = slots[bucket] = _Bucket()
        slot.total += inc.value
        slot.items += inc.item
        if inc.unit:
            self.units[inc.metric] = inc.unit
        if mark_dirty:
            self.dirty.add((key, bucket))
        return True

    def expire(self, now: float) -> int:
        """Drop buckets older than ``max_age``; returns how many records / data points (items) of *unsent* buckets
        were dropped."""
        cutoff = now - self.max_age
        lost = 0
        for key in list(self.buckets):
            slots = self.buckets[key]
            for bucket in [b for b in slots if b < cutoff]:
                if (key, bucket) in self.dirty:
                    self.dirty.discard((key, bucket))
                    lost += slots[bucket].items
                del slots[bucket]
            if not slots:
                del self.buckets[key]
        return lost

    def pending(self) -> list[dict[str, Any]]:
        """Series objects for every changed bucket, with the bucket's full total."""
        by_key: dict[SeriesKey, list[int]] = {}
        for key, bucket in self.dirty:
            by_key.setdefault(key, []).append(bucket)
        out = []
        for (metric, tags), buckets in sorted(by_key.items()):
            slots = self.buckets[(metric, tags)]
            series: dict[str, Any] = {
                "metric": metric,
                "type": COUNT,
                "interval": self.interval,
                "points": [{"timestamp": b, "value": slots[b].total} for b in sorted(buckets)],
                "tags": [*self.base_tags, *tags],
            }
            if self.host:
                series["resources"] = [{"type": "host", "name": self.host}]
            if metric in self.units:
                series["unit"] = self.units[metric]
            out.append(series)
        return out

    def mark_sent(self, series: Sequence[dict[str, Any]]) -> None:
        """Forget the changed-flag of the buckets in ``series`` (sent, or refused for good)."""
        for item in series:
            key = (item["metric"], tuple(item["tags"][len(self.base_tags) :]))
            for point in item["points"]:
                self.dirty.discard((key, point["timestamp"]))


def series_body(series: Sequence[dict[str, Any]]) -> bytes:
    """The JSON body of ``series`` (kept as it is while retried when not compressed, so sized exactly)."""
    return dumps_kept({"series": list(series)})


def build_bodies(series: Sequence[dict[str, Any]], compress: bool) -> list[tuple[list[dict[str, Any]], bytes]]:
    """Request bodies (gzip when ``compress``) for ``series``, each within the API's limits.

    A body is at most :data:`MAX_PAYLOAD_BYTES` on the wire and :data:`MAX_DECOMPRESSED_BYTES` decompressed; groups
    are cut by decompressed size first, then halved while the compressed body is still too large.
    """
    out: list[tuple[list[dict[str, Any]], bytes]] = []
    group: list[dict[str, Any]] = []
    size = 12
    for item in series:
        n = len(orjson.dumps(item)) + 1
        if group and size + n > CHUNK_DECOMPRESSED_BYTES:
            out.extend(_fit(group, compress))
            group, size = [], 12
        group.append(item)
        size += n
    if group:
        out.extend(_fit(group, compress))
    return out


def _fit(group: list[dict[str, Any]], compress: bool) -> list[tuple[list[dict[str, Any]], bytes]]:
    raw = series_body(group)
    data = gzip_compress(raw) if compress else raw
    if (len(data) <= MAX_PAYLOAD_BYTES and len(raw) <= MAX_DECOMPRESSED_BYTES) or len(group) == 1:
        return [(group, data)]
    mid = len(group) // 2
    return _fit(group[:mid], compress) + _fit(group[mid:], compress)


def split_series(series: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Halves of a series list (or of one series' points) for a resend after HTTP 413; [] when indivisible."""
    if len(series) > 1:
        mid = len(series) // 2
        return [series[:mid], series[mid:]]
    points = series[0]["points"]
    if len(points) < 2:
        return []
    mid = len(points) // 2
    return [[{**series[0], "points": points[:mid]}], [{**series[0], "points": points[mid:]}]]
