"""Pure in-memory accumulation of stored metric points and audit records into Prometheus series.

Two levels:

*Source series* — one per OTLP stream: metric name + every datapoint attribute + resource (+ the authenticated sender).
Each remembers the end time of its last point, and for cumulative streams the start time and value, so every new
point becomes a non-negative *increment* (or is ignored):

- **Delta** monotonic sum: the increment is the point's value. A point whose end time is not after the previous
  point's end is out of order (or a duplicate) and ignored, as in OpenTelemetry's ``accumulator.go``. A point whose
  start is not the previous end (a gap: a lost export or a restarted SDK) is what OTel treats as a reset — the
  stream's running total restarts with the new start time. Summed into the exported series below, a reset of one
  stream and a contiguous point both add exactly the point's value (that is also what Prometheus' own counter-reset
  handling would count had the stream been exposed alone), so the exported counter never goes down.
- **Cumulative** monotonic sum: the increment is ``value - previous value``. A value below the previous one, or a
  different start time, is a reset: the increment is the whole new value. The first point of a stream counts in
  full when the stream is younger than ``series_expiration`` (``time - start``); an older stream without state was
  either seen before a restart (the tailer's warm-up in :mod:`exporters.prometheus.tailer` normally re-learns it) or
  expired while idle, so its first point only sets the baseline instead of counting its whole history twice.
- **Gauge** (and non-monotonic cumulative sum): the last value of each stream; the exported gauge is the sum over
  the streams that map to it. Delta non-monotonic sums, unspecified temporality and histograms are dropped (as the
  OTel Prometheus exporter does) and counted.

*Exported series* — one per Prometheus name + label set (identities dropped, so many streams map to one series):
a monotonic total with a ``created`` time (when it started from zero in this process). Audit records add to the
event-derived counters directly, de-duplicated by record id (a client retry can land in two shards).

Each metric holds at most ``max_series_per_metric`` series; points of further label sets go to one overflow series
whose label values are ``__overflow__`` and are counted per metric. Streams and series idle for ``series_expiration``
are forgotten. All public methods are thread-safe (one lock): the tailer feeds from a worker thread while scrapes
read from the event loop.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from exporters.prometheus import naming
from exporters.prometheus.naming import OVERFLOW, USER_LABEL, UserLabeler

LabelKey = tuple[tuple[str, str], ...]

COUNTER = "counter"
GAUGE = "gauge"
DEFAULT_MAX_SERIES = 2000
DEFAULT_EXPIRATION = 3600.0
DEDUPE_IDS = 50_000
_NS = 1_000_000_000


@dataclass(frozen=True)
class EventSpec:
    """An event-derived counter: its name, labels, unit and help."""

    name: str
    labels: tuple[str, ...]
    unit: str
    help: str


EVENT_METRICS: dict[str, EventSpec] = {
    spec.name: spec
    for spec in (
        EventSpec(
            "claude_code_tool_decisions_total",
            ("tool", "decision", "source", "approval_mode"),
            "",
            "Tool permission decisions (tool_decision events): decision accept/reject, source and approval mode.",
        ),
        EventSpec(
            "claude_code_tool_results_total",
            ("tool", "success"),
            "",
            "Tool executions that finished (tool_result events), by success.",
        ),
        EventSpec("claude_code_api_requests_total", ("model",), "", "Model API requests (api_request events)."),
        EventSpec(
            "claude_code_api_errors_total",
            ("model", "status_code"),
            "",
            "Model API requests that failed after retries (api_error events).",
        ),
        EventSpec(
            "claude_code_api_cost_usd_total",
            ("model",),
            "usd",
            "Cost in US dollars reported on api_request events.",
        ),
        EventSpec(
            "claude_code_api_tokens_total",
            ("model", "type"),
            "tokens",
            "Tokens reported on api_request events, type input/output/cache_read/cache_creation.",
        ),
        EventSpec(
            "claude_code_file_changes_total",
            ("operation",),
            "",
            "File changes (file_change records: Write, Edit, NotebookEdit results naming a file).",
        ),
    )
}
EVENT_KINDS = frozenset({"tool_decision", "tool_result", "api_request", "api_error", "file_change"})
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation")
IGNORED_OUTCOMES = frozenset(
    {"not_claude_code", "invalid", "unsupported", "name_conflict", "out_of_order", "family_limit"}
)
DEFAULT_MAX_GENERIC_FAMILIES = 100
"""Generic ``claude_code.*`` metric families (beyond the fixed ones) at most; points of further names are ignored
and counted as ``family_limit`` (any client could otherwise create families without bound)."""


@dataclass(eq=False)
class Series:
    """One exported series: value, creation time (wall clock) and last update (monotonic clock)."""

    value: float
    created: float
    last_update: float
    overflow: bool = False
    contrib: dict[bytes, float] | None = None


@dataclass(eq=False)
class Family:
    """One exported metric: name, type, help, unit, declared label names, and its series by label key."""

    name: str
    kind: str
    help: str
    unit: str
    labelnames: tuple[str, ...]
    source: str
    series: dict[LabelKey, Series] = field(default_factory=dict)
    regular: int = 0


@dataclass(eq=False)
class _Stream:
    last_t: int
    start: int
    last_value: float
    last_seen: float
    gauge: tuple[Family, LabelKey] | None = None


@dataclass(frozen=True)
class FamilySnapshot:
    """A metric as a scrape sees it: label names in order, and (label values, value, created) per series."""

    name: str
    kind: str
    help: str
    unit: str
    labelnames: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float, float], ...]


@dataclass(frozen=True)
class Stats:
    """Counters about the accumulator itself (exposed as ``ccbridge_prometheus_*``)."""

    overflow: Mapping[str, int]
    ignored: Mapping[str, int]
    series: Mapping[str, int]
    points: int
    records: int


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """The identity of a label set: sorted pairs, empty values left out (an empty label is no label)."""
    return tuple(sorted((k, v) for k, v in labels.items() if v))


def _base(name: str, kind: str) -> str:
    """The family name as exposition writes it (a counter's without ``_total``): two metrics must not share it."""
    return name.removesuffix("_total") if kind == COUNTER else name


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _uint(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


class Accumulator:
    """Turns stored metric points and audit records into Prometheus series (see the module docstring)."""

    def __init__(
        self,
        *,
        max_series_per_metric: int = DEFAULT_MAX_SERIES,
        series_expiration: float = DEFAULT_EXPIRATION,
        users: UserLabeler | None = None,
        mcp_servers: Iterable[str] = (),
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        dedupe_ids: int = DEDUPE_IDS,
        max_generic_families: int = DEFAULT_MAX_GENERIC_FAMILIES,
    ) -> None:
        if max_series_per_metric < 1:
            raise ValueError("max_series_per_metric must be >= 1")
        if series_expiration <= 0:
            raise ValueError("series_expiration must be > 0")
        self.max_series = max_series_per_metric
        self.max_generic_families = max_generic_families
        self._generic_count = 0
        self.expiration = float(series_expiration)
        self.users = users or UserLabeler()
        self.mcp_servers = frozenset(mcp_servers)
        self._wall = wall
        self._mono = mono
        self._dedupe_ids = dedupe_ids
        self._lock = threading.Lock()
        self._families: dict[str, Family] = {}
        self._by_base: dict[str, Family] = {}
        self._streams: dict[bytes, _Stream] = {}
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._overflow: Counter[str] = Counter()
        self._ignored: Counter[str] = Counter()
        self._points = 0
        self._records = 0
        extra = (USER_LABEL,) if self.users.enabled else ()
        for otel_name, spec in naming.CLAUDE_CODE_METRICS.items():
            self._declare(spec.name, COUNTER, spec.help, spec.unit, spec.labels + extra, otel_name)
        for ev in EVENT_METRICS.values():
            self._declare(ev.name, COUNTER, ev.help, ev.unit, ev.labels + extra, "event")

    def _declare(
        self, name: str, kind: str, help_text: str, unit: str, labelnames: tuple[str, ...], source: str
    ) -> Family:
        fam = Family(name, kind, help_text, unit, labelnames, source)
        self._families[name] = fam
        self._by_base[_base(name, kind)] = fam
        return fam

    # -----------------------------------------------------------------------------------------------------------
    # metric points

    def add_point(self, point: Mapping[str, Any], *, count: bool = True) -> str:
        """Apply one stored metric point; returns what happened (``counted``, ``reset``, ``out_of_order``, ...).

        ``count=False`` (the tailer's warm-up after a restart) only teaches the stream state — last end time and
        cumulative value — so the next live point is judged correctly; nothing is added to exported series.
        """
        with self._lock:
            outcome = self._add_point(point, count)
            if count:
                if outcome in IGNORED_OUTCOMES:
                    self._ignored[outcome] += 1
                else:
                    self._points += 1
            return outcome

    def _add_point(self, p: Mapping[str, Any], count: bool) -> str:
        name = p.get("name")
        if not isinstance(name, str) or not name.startswith("claude_code."):
            return "not_claude_code"
        if len(name) > naming.MAX_METRIC_NAME_CHARS:
            return "invalid"
        value = _number(p.get("value"))
        t = _uint(p.get("time_unix_nano"))
        if value is None or not t:
            return "invalid"
        start = _uint(p.get("start_time_unix_nano"))
        mtype = p.get("type")
        temporality = p.get("temporality")
        monotonic = p.get("monotonic") is True
        if mtype == "sum" and monotonic and temporality in ("delta", "cumulative"):
            kind = COUNTER
        elif (mtype == "sum" and not monotonic and temporality == "cumulative") or mtype == "gauge":
            kind = GAUGE
        else:
            return "unsupported"
        if kind == COUNTER and value < 0:
            return "invalid"
        attrs = p.get("attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        resource = p.get("resource")
        resource = resource if isinstance(resource, dict) else {}

        spec = naming.CLAUDE_CODE_METRICS.get(name) if kind == COUNTER else None
        if spec is not None:
            fam = self._families[spec.name]
        else:
            unit = p.get("unit") if isinstance(p.get("unit"), str) else ""
            prom = naming.metric_name(name, unit, counter=kind == COUNTER)
            found = self._generic_family(prom, kind, name, p.get("description"), unit)
            if found is None:
                return "name_conflict"
            if isinstance(found, str):
                return found
            fam = found

        source = p.get("source")
        ident = source.get("identity") if isinstance(source, dict) else None
        skey = hashlib.blake2b(
            orjson.dumps((name, attrs, resource, ident), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS),
            digest_size=16,
        ).digest()
        now = self._mono()
        st = self._streams.get(skey)
        if st is not None and t <= st.last_t:
            return "out_of_order"

        outcome = "counted"
        if kind == GAUGE:
            increment = value
        elif temporality == "delta":
            increment = value
            if st is not None and start and start != st.last_t:
                outcome = "gap"
        elif st is None:
            young = start and t - start < self.expiration * _NS
            increment = value if young else 0.0
            outcome = "first" if young else "baseline"
        elif start != st.start or value < st.last_value:
            increment = value
            outcome = "reset"
        else:
            increment = value - st.last_value

        if st is None:
            st = _Stream(t, start, value, now)
            self._streams[skey] = st
        else:
            st.last_t, st.start, st.last_value, st.last_seen = t, start, value, now
        if not count:
            return "warmup"

        if spec is not None:
            labels = naming.fixed_labels(spec, attrs, self.mcp_servers)
        else:
            labels = self._labels(attrs, resource)
        if self.users.enabled:
            labels[USER_LABEL] = self.users.label(*naming.point_identity(attrs, resource))
        key, series = self._series(fam, label_key(labels), now)
        if kind == GAUGE:
            if st.gauge is not None and st.gauge != (fam, key):
                self._drop_contribution(skey, st)
            if series.contrib is None:
                series.contrib = {}
            series.contrib[skey] = increment
            series.value = math.fsum(series.contrib.values())
            st.gauge = (fam, key)
        else:
            series.value += increment
        return outcome

    def _labels(self, attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, str]:
        labels = naming.generic_labels(attrs, resource)
        if "model" in labels:
            labels["model"] = naming.normalize_model(labels["model"])
        if "tool_name" in labels:
            labels["tool_name"] = naming.tool_label(labels["tool_name"], self.mcp_servers)
        return labels

    def _generic_family(self, prom: str, kind: str, otel_name: str, description: Any, unit: str) -> Family | str | None:
        base = _base(prom, kind)
        fam = self._by_base.get(base)
        if fam is None:
            if self._generic_count >= self.max_generic_families:
                return "family_limit"
            self._generic_count += 1
            suffix = naming.unit_suffix(unit)
            help_text = description if isinstance(description, str) and description else f"Claude Code {otel_name}."
            help_text = naming.clean_text(f"{help_text} ({otel_name})", naming.MAX_HELP_CHARS)
            extra = (USER_LABEL,) if self.users.enabled else ()
            unit_meta = suffix if suffix and base.endswith("_" + suffix) else ""
            return self._declare(prom, kind, help_text, unit_meta, extra, otel_name)
        if fam.kind != kind or fam.source != otel_name:
            return None
        return fam

    def _drop_contribution(self, skey: bytes, st: _Stream) -> None:
        if st.gauge is None:
            return
        fam, key = st.gauge
        series = fam.series.get(key)
        if series is not None and series.contrib is not None and skey in series.contrib:
            del series.contrib[skey]
            series.value = math.fsum(series.contrib.values())
        st.gauge = None

    def _series(self, fam: Family, key: LabelKey, now: float) -> tuple[LabelKey, Series]:
        """The series for ``key``, created if needed; past the cap, the metric's overflow series instead."""
        series = fam.series.get(key)
        if series is None:
            if fam.regular >= self.max_series:
                self._overflow[fam.name] += 1
                names = sorted(set(fam.labelnames) | {k for k, _ in key})
                key = tuple((n, OVERFLOW) for n in names)
                series = fam.series.get(key)
                if series is None:
                    series = Series(0.0, self._wall(), now, overflow=True)
                    fam.series[key] = series
            else:
                series = Series(0.0, self._wall(), now)
                fam.series[key] = series
                fam.regular += 1
        series.last_update = now
        return key, series

    # -----------------------------------------------------------------------------------------------------------
    # audit records

    def add_record(self, rec: Mapping[str, Any]) -> bool:
        """Count one stored audit record into the event-derived counters; False if not counted (kind, duplicate)."""
        kind = rec.get("kind")
        if kind not in EVENT_KINDS:
            return False
        with self._lock:
            rid = rec.get("id")
            if isinstance(rid, str) and rid:
                if rid in self._seen_ids:
                    self._ignored["duplicate_record"] += 1
                    return False
                self._seen_ids[rid] = None
                if len(self._seen_ids) > self._dedupe_ids:
                    self._seen_ids.popitem(last=False)
            self._add_record(rec, str(kind))
            self._records += 1
            return True

    def _add_record(self, rec: Mapping[str, Any], kind: str) -> None:
        extra: dict[str, str] = {}
        if self.users.enabled:
            user = rec.get("user")
            user = user if isinstance(user, dict) else {}
            extra[USER_LABEL] = self.users.label(_str(user.get("email")), _str(user.get("id")))
        now = self._mono()

        def inc(name: str, labels: dict[str, str], amount: float = 1.0) -> None:
            _, series = self._series(self._families[name], label_key({**labels, **extra}), now)
            series.value += amount

        if kind in ("tool_decision", "tool_result"):
            tool = rec.get("tool")
            tool = tool if isinstance(tool, dict) else {}
            tname = naming.tool_label(tool.get("name"), self.mcp_servers)
            if kind == "tool_decision":
                inc(
                    "claude_code_tool_decisions_total",
                    {
                        "tool": tname,
                        "decision": naming.label_value(tool.get("decision")),
                        "source": naming.label_value(tool.get("decision_source")),
                        "approval_mode": naming.label_value(tool.get("approval_mode")),
                    },
                )
            else:
                success = naming.label_value(tool.get("success"))
                inc("claude_code_tool_results_total", {"tool": tname, "success": success})
            return
        if kind == "file_change":
            file = rec.get("file")
            op = file.get("operation") if isinstance(file, dict) else None
            inc("claude_code_file_changes_total", {"operation": naming.label_value(op)})
            return
        model = naming.normalize_model(rec.get("model"))
        if kind == "api_error":
            api = rec.get("api")
            status = api.get("status_code") if isinstance(api, dict) else None
            inc("claude_code_api_errors_total", {"model": model, "status_code": naming.label_value(status)})
            return
        inc("claude_code_api_requests_total", {"model": model})
        cost = _number(rec.get("cost_usd"))
        if cost is not None and cost >= 0:
            inc("claude_code_api_cost_usd_total", {"model": model}, cost)
        tokens = rec.get("tokens")
        if isinstance(tokens, dict):
            for ttype in TOKEN_TYPES:
                n = _number(tokens.get(ttype))
                if n is not None and n >= 0:
                    inc("claude_code_api_tokens_total", {"model": model, "type": ttype}, n)

    # -----------------------------------------------------------------------------------------------------------
    # expiry and reading

    def expire(self) -> int:
        """Forget streams and series idle for ``series_expiration``; returns the number of series removed."""
        with self._lock:
            cutoff = self._mono() - self.expiration
            for skey, st in list(self._streams.items()):
                if st.last_seen <= cutoff:
                    self._drop_contribution(skey, st)
                    del self._streams[skey]
            removed = 0
            for fam in self._families.values():
                for key, series in list(fam.series.items()):
                    if series.last_update <= cutoff:
                        del fam.series[key]
                        removed += 1
                        if not series.overflow:
                            fam.regular -= 1
            return removed

    def snapshot(self) -> list[FamilySnapshot]:
        """Every metric that has series, sorted by name, with its label names and samples (a consistent copy)."""
        out: list[FamilySnapshot] = []
        with self._lock:
            for name in sorted(self._families):
                fam = self._families[name]
                if not fam.series:
                    continue
                extra = sorted({k for key in fam.series for k, _ in key} - set(fam.labelnames))
                names = fam.labelnames + tuple(extra)
                samples = []
                for key, series in sorted(fam.series.items()):
                    values = dict(key)
                    samples.append((tuple(values.get(n, "") for n in names), series.value, series.created))
                out.append(FamilySnapshot(fam.name, fam.kind, fam.help, fam.unit, names, tuple(samples)))
        return out

    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                overflow=dict(self._overflow),
                ignored=dict(self._ignored),
                series={n: len(f.series) for n, f in self._families.items() if f.series},
                points=self._points,
                records=self._records,
            )

    def streams(self) -> int:
        """Source streams currently tracked (for tests and memory estimates)."""
        with self._lock:
            return len(self._streams)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of one exported series (tests and diagnostics); None when it does not exist."""
        with self._lock:
            fam = self._families.get(name)
            series = fam.series.get(label_key(labels)) if fam is not None else None
            return series.value if series is not None else None
