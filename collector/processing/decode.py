"""OTLP request bodies -> plain Python values. The only place that walks OTLP messages.

Two wire forms arrive: protobuf (``application/x-protobuf`` and gRPC) and OTLP/JSON (``application/json``). Both are
turned into the same plain shapes: :class:`LogEvent` for log records, and dicts for metric points and spans, so the
normalizer never sees a wire format.

Value rules, following the OTLP spec and what Claude Code really sends:

- ``AnyValue`` becomes str / bool / int / float / list / dict / None; ``bytes_value`` becomes base64 text.
- OTLP/JSON ids (``traceId``, ``spanId``, ``parentSpanId``) are hex; anything else is refused.
- OTLP/JSON 64-bit integers may be strings or numbers; enums are integers (names are also accepted).
- Nesting deeper than ``max_depth`` is refused (:class:`DecodeError`), so a hostile body cannot exhaust the stack.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator
from typing import Any

import orjson
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

DEFAULT_MAX_DEPTH = 32

TEMPORALITY_NAMES = {0: "unspecified", 1: "delta", 2: "cumulative"}
_TEMPORALITY_BY_NAME = {
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0,
    "AGGREGATION_TEMPORALITY_DELTA": 1,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
}
SPAN_KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_SPAN_KIND_BY_NAME = {f"SPAN_KIND_{v.upper()}": k for k, v in SPAN_KIND_NAMES.items()}
_SEVERITY_BY_NAME = dict(SeverityNumber.items())
_STATUS_CODE_BY_NAME = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class DecodeError(ValueError):
    """The request body is not a valid OTLP message; the message says what and where."""


class LogEvent:
    """One OTLP log record with its resource and scope, as plain values (shared dicts are read-only)."""

    __slots__ = (
        "attributes",
        "body",
        "event_name",
        "flags",
        "observed_time_unix_nano",
        "resource",
        "scope_name",
        "scope_version",
        "severity_number",
        "severity_text",
        "span_id",
        "time_unix_nano",
        "trace_id",
    )

    def __init__(
        self,
        resource: dict[str, Any],
        scope_name: str,
        scope_version: str,
        time_unix_nano: int,
        observed_time_unix_nano: int,
        severity_number: int,
        severity_text: str,
        body: Any,
        event_name: str,
        attributes: dict[str, Any],
        trace_id: str,
        span_id: str,
        flags: int,
    ) -> None:
        self.resource = resource
        self.scope_name = scope_name
        self.scope_version = scope_version
        self.time_unix_nano = time_unix_nano
        self.observed_time_unix_nano = observed_time_unix_nano
        self.severity_number = severity_number
        self.severity_text = severity_text
        self.body = body
        self.event_name = event_name
        self.attributes = attributes
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags


# ---------------------------------------------------------------------------------------------------------------
# protobuf


def _pb_any(v: Any, depth: int, max_depth: int) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which is None:
        return None
    if which == "array_value":
        if depth >= max_depth:
            raise DecodeError(f"attribute value nested deeper than {max_depth} levels")
        return [_pb_any(x, depth + 1, max_depth) for x in v.array_value.values]
    if which == "kvlist_value":
        if depth >= max_depth:
            raise DecodeError(f"attribute value nested deeper than {max_depth} levels")
        return {kv.key: _pb_any(kv.value, depth + 1, max_depth) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def _pb_attrs(kvs: Any, max_depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = v.string_value
        elif which == "int_value":
            out[kv.key] = v.int_value
        elif which == "double_value":
            out[kv.key] = v.double_value
        elif which == "bool_value":
            out[kv.key] = v.bool_value
        else:
            out[kv.key] = _pb_any(v, 0, max_depth)
    return out


def _parse(message: Any, data: bytes, what: str) -> None:
    try:
        message.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"body is not a valid protobuf {what}: {exc}") from None
    except RecursionError:
        raise DecodeError(f"body is not a valid protobuf {what}: nested too deeply") from None


def logs_from_protobuf(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[LogEvent]:
    return list(log_stream_from_protobuf(data, max_depth))


def log_stream_from_protobuf(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[LogEvent]:
    """Parse ``data`` now (a :class:`DecodeError` is raised here for a body that is not a request) and walk its log
    records lazily, as the caller iterates.

    The receivers use this form: the pipeline takes events a few dozen at a time through decoding, redaction,
    normalization and encoding, so each event's objects are still in the CPU cache at every stage (about 15% less
    CPU per event than walking a 512-record request completely at each stage). An attribute nested deeper than
    ``max_depth`` raises :class:`DecodeError` during the iteration.
    """
    req = ExportLogsServiceRequest()
    _parse(req, data, "ExportLogsServiceRequest")
    return _guarded(iter_logs_from_message(req, max_depth))


def _guarded(events: Iterator[LogEvent]) -> Iterator[LogEvent]:
    try:
        yield from events
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None


def logs_from_message(req: ExportLogsServiceRequest, max_depth: int = DEFAULT_MAX_DEPTH) -> list[LogEvent]:
    return list(iter_logs_from_message(req, max_depth))


def iter_logs_from_message(req: ExportLogsServiceRequest, max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[LogEvent]:
    """The log records of ``req`` as :class:`LogEvent` values, in request order."""
    for rl in req.resource_logs:
        resource = _pb_attrs(rl.resource.attributes, max_depth)
        for sl in rl.scope_logs:
            scope_name = sl.scope.name
            scope_version = sl.scope.version
            for lr in sl.log_records:
                body = lr.body
                yield LogEvent(
                    resource,
                    scope_name,
                    scope_version,
                    lr.time_unix_nano,
                    lr.observed_time_unix_nano,
                    lr.severity_number,
                    lr.severity_text,
                    body.string_value if body.WhichOneof("value") == "string_value" else _pb_any(body, 0, max_depth),
                    lr.event_name,
                    _pb_attrs(lr.attributes, max_depth),
                    lr.trace_id.hex() if len(lr.trace_id) == 16 else "",
                    lr.span_id.hex() if len(lr.span_id) == 8 else "",
                    lr.flags,
                )


def _pb_number_point(p: Any, max_depth: int) -> dict[str, Any]:
    which = p.WhichOneof("value")
    return {
        "attributes": _pb_attrs(p.attributes, max_depth),
        "start_time_unix_nano": p.start_time_unix_nano,
        "time_unix_nano": p.time_unix_nano,
        "value": p.as_int if which == "as_int" else p.as_double,
    }


def metrics_from_protobuf(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict[str, Any]]:
    req = ExportMetricsServiceRequest()
    _parse(req, data, "ExportMetricsServiceRequest")
    return metrics_from_message(req, max_depth)


def metrics_from_message(req: ExportMetricsServiceRequest, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict[str, Any]]:
    """Flatten metrics into one dict per data point (sum, gauge, histogram; other types keep their summary)."""
    out: list[dict[str, Any]] = []
    for rm in req.resource_metrics:
        resource = _pb_attrs(rm.resource.attributes, max_depth)
        for sm in rm.scope_metrics:
            scope = {"name": sm.scope.name, "version": sm.scope.version}
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                base = {"name": m.name, "unit": m.unit, "description": m.description, "type": kind or "empty"}
                if kind == "sum":
                    extra = {
                        "temporality": TEMPORALITY_NAMES.get(m.sum.aggregation_temporality, "unspecified"),
                        "monotonic": m.sum.is_monotonic,
                    }
                    points = [_pb_number_point(p, max_depth) for p in m.sum.data_points]
                elif kind == "gauge":
                    extra = {"temporality": None, "monotonic": False}
                    points = [_pb_number_point(p, max_depth) for p in m.gauge.data_points]
                elif kind == "histogram":
                    extra = {
                        "temporality": TEMPORALITY_NAMES.get(m.histogram.aggregation_temporality, "unspecified"),
                        "monotonic": True,
                    }
                    points = [
                        {
                            "attributes": _pb_attrs(p.attributes, max_depth),
                            "start_time_unix_nano": p.start_time_unix_nano,
                            "time_unix_nano": p.time_unix_nano,
                            "count": p.count,
                            "sum": p.sum if p.HasField("sum") else None,
                            "bucket_counts": list(p.bucket_counts),
                            "explicit_bounds": list(p.explicit_bounds),
                        }
                        for p in m.histogram.data_points
                    ]
                else:
                    extra = {"temporality": None, "monotonic": False}
                    container = getattr(m, kind) if kind else None
                    points = [
                        {
                            "attributes": _pb_attrs(p.attributes, max_depth),
                            "start_time_unix_nano": p.start_time_unix_nano,
                            "time_unix_nano": p.time_unix_nano,
                            "count": getattr(p, "count", 0),
                            "sum": getattr(p, "sum", None),
                        }
                        for p in (container.data_points if container is not None else [])
                    ]
                for p in points:
                    p.update(base)
                    p.update(extra)
                    p["resource"] = resource
                    p["scope"] = scope
                    out.append(p)
    return out


def spans_from_protobuf(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict[str, Any]]:
    req = ExportTraceServiceRequest()
    _parse(req, data, "ExportTraceServiceRequest")
    return spans_from_message(req, max_depth)


def spans_from_message(req: ExportTraceServiceRequest, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rs in req.resource_spans:
        resource = _pb_attrs(rs.resource.attributes, max_depth)
        for ss in rs.scope_spans:
            scope = {"name": ss.scope.name, "version": ss.scope.version}
            for s in ss.spans:
                out.append(
                    {
                        "trace_id": s.trace_id.hex() if len(s.trace_id) == 16 else "",
                        "span_id": s.span_id.hex() if len(s.span_id) == 8 else "",
                        "parent_span_id": s.parent_span_id.hex() if len(s.parent_span_id) == 8 else "",
                        "name": s.name,
                        "kind": SPAN_KIND_NAMES.get(s.kind, "unspecified"),
                        "start_time_unix_nano": s.start_time_unix_nano,
                        "end_time_unix_nano": s.end_time_unix_nano,
                        "attributes": _pb_attrs(s.attributes, max_depth),
                        "status": {"code": s.status.code, "message": s.status.message},
                        "events": [
                            {
                                "name": e.name,
                                "time_unix_nano": e.time_unix_nano,
                                "attributes": _pb_attrs(e.attributes, max_depth),
                            }
                            for e in s.events
                        ],
                        "resource": resource,
                        "scope": scope,
                    }
                )
    return out


# ---------------------------------------------------------------------------------------------------------------
# OTLP/JSON


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON body must be a JSON object, got {type(doc).__name__}")
    return doc


def _j_list(obj: dict[str, Any], key: str, path: str) -> list[Any]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise DecodeError(f"{path}.{key} must be an array")
    return v


def _j_obj(obj: Any, path: str) -> dict[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise DecodeError(f"{path} must be an object")
    return obj


def _j_str(obj: dict[str, Any], key: str, path: str) -> str:
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise DecodeError(f"{path}.{key} must be a string")
    return v


_UINT64_MAX = 2**64 - 1


def _j_uint(obj: dict[str, Any], key: str, path: str) -> int:
    """An OTLP fixed64/uint field (times, counts, flags): a JSON number or decimal string within 0..2**64-1."""
    v = obj.get(key)
    if v is None:
        return 0
    out: int | None = None
    if isinstance(v, int) and not isinstance(v, bool):
        out = v
    elif isinstance(v, str):
        try:
            out = int(v)
        except ValueError:
            out = None
    if out is None:
        raise DecodeError(f"{path}.{key} must be an integer (number or decimal string)")
    if not 0 <= out <= _UINT64_MAX:
        raise DecodeError(f"{path}.{key} is outside the unsigned 64-bit range")
    return out


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _j_int64(v: Any, path: str) -> int:
    """An OTLP int64 from a JSON number or decimal string; values outside the int64 range are refused."""
    if isinstance(v, bool):
        raise DecodeError(f"{path} must be an integer")
    out: int | None = None
    if isinstance(v, int):
        out = v
    elif isinstance(v, str):
        try:
            out = int(v)
        except ValueError:
            out = None
    elif isinstance(v, float) and v.is_integer():
        out = int(v)
    if out is None:
        raise DecodeError(f"{path} must be an integer (number or decimal string)")
    if not _INT64_MIN <= out <= _INT64_MAX:
        raise DecodeError(f"{path} is outside the 64-bit integer range")
    return out


def _j_double(v: Any, path: str) -> float:
    if isinstance(v, bool):
        raise DecodeError(f"{path} must be a number")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if v in special:
            return special[v]
        try:
            return float(v)
        except ValueError:
            pass
    raise DecodeError(f"{path} must be a number")


def _j_enum(obj: dict[str, Any], key: str, names: dict[str, int], path: str) -> int:
    v = obj.get(key)
    if v is None:
        return 0
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v in names:
        return names[v]
    raise DecodeError(f"{path}.{key} must be an enum integer")


def _j_id(obj: dict[str, Any], key: str, size: int, path: str) -> str:
    v = obj.get(key)
    if v is None or v == "":
        return ""
    if not isinstance(v, str):
        raise DecodeError(f"{path}.{key} must be a hex string")
    if len(v) != size * 2:
        raise DecodeError(
            f"{path}.{key} must be {size * 2} hex characters (OTLP/JSON ids are hex, not base64); got {len(v)}"
        )
    try:
        bytes.fromhex(v)
    except ValueError:
        raise DecodeError(f"{path}.{key} is not hex (OTLP/JSON ids are hex, not base64)") from None
    return v.lower()


def _j_any(v: Any, path: str, depth: int, max_depth: int) -> Any:  # noqa: C901 - flat per-JSON-type dispatch of the decoder
    if v is None:
        return None
    if not isinstance(v, dict):
        raise DecodeError(f"{path} must be an AnyValue object")
    if not v:
        return None
    if len(v) != 1:
        raise DecodeError(f"{path} must hold exactly one value field")
    ((key, inner),) = v.items()
    if key == "stringValue":
        if not isinstance(inner, str):
            raise DecodeError(f"{path}.stringValue must be a string")
        return inner
    if key == "intValue":
        return _j_int64(inner, f"{path}.intValue")
    if key == "doubleValue":
        return _j_double(inner, f"{path}.doubleValue")
    if key == "boolValue":
        if not isinstance(inner, bool):
            raise DecodeError(f"{path}.boolValue must be true or false")
        return inner
    if key in ("arrayValue", "kvlistValue") and depth >= max_depth:
        raise DecodeError(f"{path}: attribute value nested deeper than {max_depth} levels")
    if key == "arrayValue":
        values = _j_list(_j_obj(inner, f"{path}.arrayValue"), "values", f"{path}.arrayValue")
        return [_j_any(x, f"{path}.arrayValue.values[{i}]", depth + 1, max_depth) for i, x in enumerate(values)]
    if key == "kvlistValue":
        values = _j_list(_j_obj(inner, f"{path}.kvlistValue"), "values", f"{path}.kvlistValue")
        return _j_kvs(values, f"{path}.kvlistValue.values", depth + 1, max_depth)
    if key == "bytesValue":
        if not isinstance(inner, str):
            raise DecodeError(f"{path}.bytesValue must be a base64 string")
        try:
            base64.b64decode(inner, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError(f"{path}.bytesValue is not valid base64") from None
        return inner
    raise DecodeError(f"{path}: unknown AnyValue field {key!r}")


def _j_kvs(values: list[Any], path: str, depth: int, max_depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, kv in enumerate(values):
        if not isinstance(kv, dict):
            raise DecodeError(f"{path}[{i}] must be an object with key and value")
        key = kv.get("key")
        if not isinstance(key, str):
            raise DecodeError(f"{path}[{i}].key must be a string")
        out[key] = _j_any(kv.get("value"), f"{path}[{i}].value", depth, max_depth)
    return out


def _j_attrs(obj: dict[str, Any], path: str, max_depth: int) -> dict[str, Any]:
    return _j_kvs(_j_list(obj, "attributes", path), f"{path}.attributes", 0, max_depth)


def _j_scope(container: dict[str, Any], path: str) -> dict[str, str]:
    scope = _j_obj(container.get("scope"), f"{path}.scope")
    return {
        "name": _j_str(scope, "name", f"{path}.scope"),
        "version": _j_str(scope, "version", f"{path}.scope"),
    }


def logs_from_json(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[LogEvent]:
    doc = _load_json(data)
    out: list[LogEvent] = []
    for i, rl in enumerate(_j_list(doc, "resourceLogs", "")):
        p = f"resourceLogs[{i}]"
        rl = _j_obj(rl, p)
        resource = _j_attrs(_j_obj(rl.get("resource"), f"{p}.resource"), f"{p}.resource", max_depth)
        for j, sl in enumerate(_j_list(rl, "scopeLogs", p)):
            sp = f"{p}.scopeLogs[{j}]"
            sl = _j_obj(sl, sp)
            scope = _j_scope(sl, sp)
            for k, lr in enumerate(_j_list(sl, "logRecords", sp)):
                lp = f"{sp}.logRecords[{k}]"
                lr = _j_obj(lr, lp)
                out.append(
                    LogEvent(
                        resource=resource,
                        scope_name=scope["name"],
                        scope_version=scope["version"],
                        time_unix_nano=_j_uint(lr, "timeUnixNano", lp),
                        observed_time_unix_nano=_j_uint(lr, "observedTimeUnixNano", lp),
                        severity_number=_j_enum(lr, "severityNumber", _SEVERITY_BY_NAME, lp),
                        severity_text=_j_str(lr, "severityText", lp),
                        body=_j_any(lr.get("body"), f"{lp}.body", 0, max_depth),
                        event_name=_j_str(lr, "eventName", lp),
                        attributes=_j_attrs(lr, lp, max_depth),
                        trace_id=_j_id(lr, "traceId", 16, lp),
                        span_id=_j_id(lr, "spanId", 8, lp),
                        flags=_j_uint(lr, "flags", lp),
                    )
                )
    return out


def _j_number_point(pt: dict[str, Any], path: str, max_depth: int) -> dict[str, Any]:
    if "asInt" in pt:
        value: float | int = _j_int64(pt["asInt"], f"{path}.asInt")
    elif "asDouble" in pt:
        value = _j_double(pt["asDouble"], f"{path}.asDouble")
    else:
        value = 0.0
    return {
        "attributes": _j_attrs(pt, path, max_depth),
        "start_time_unix_nano": _j_uint(pt, "startTimeUnixNano", path),
        "time_unix_nano": _j_uint(pt, "timeUnixNano", path),
        "value": value,
    }


def metrics_from_json(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict[str, Any]]:
    doc = _load_json(data)
    out: list[dict[str, Any]] = []
    for i, rm in enumerate(_j_list(doc, "resourceMetrics", "")):
        p = f"resourceMetrics[{i}]"
        rm = _j_obj(rm, p)
        resource = _j_attrs(_j_obj(rm.get("resource"), f"{p}.resource"), f"{p}.resource", max_depth)
        for j, sm in enumerate(_j_list(rm, "scopeMetrics", p)):
            sp = f"{p}.scopeMetrics[{j}]"
            sm = _j_obj(sm, sp)
            scope = _j_scope(sm, sp)
            for k, m in enumerate(_j_list(sm, "metrics", sp)):
                mp = f"{sp}.metrics[{k}]"
                m = _j_obj(m, mp)
                base = {
                    "name": _j_str(m, "name", mp),
                    "unit": _j_str(m, "unit", mp),
                    "description": _j_str(m, "description", mp),
                }
                points: list[dict[str, Any]]
                if "sum" in m:
                    s = _j_obj(m["sum"], f"{mp}.sum")
                    temporality = _j_enum(s, "aggregationTemporality", _TEMPORALITY_BY_NAME, f"{mp}.sum")
                    monotonic = s.get("isMonotonic", False)
                    if not isinstance(monotonic, bool):
                        raise DecodeError(f"{mp}.sum.isMonotonic must be true or false")
                    extra = {
                        "type": "sum",
                        "temporality": TEMPORALITY_NAMES.get(temporality, "unspecified"),
                        "monotonic": monotonic,
                    }
                    points = [
                        _j_number_point(_j_obj(pt, f"{mp}.sum.dataPoints[{n}]"), f"{mp}.sum.dataPoints[{n}]", max_depth)
                        for n, pt in enumerate(_j_list(s, "dataPoints", f"{mp}.sum"))
                    ]
                elif "gauge" in m:
                    g = _j_obj(m["gauge"], f"{mp}.gauge")
                    extra = {"type": "gauge", "temporality": None, "monotonic": False}
                    points = [
                        _j_number_point(
                            _j_obj(pt, f"{mp}.gauge.dataPoints[{n}]"),
                            f"{mp}.gauge.dataPoints[{n}]",
                            max_depth,
                        )
                        for n, pt in enumerate(_j_list(g, "dataPoints", f"{mp}.gauge"))
                    ]
                elif "histogram" in m:
                    h = _j_obj(m["histogram"], f"{mp}.histogram")
                    temporality = _j_enum(h, "aggregationTemporality", _TEMPORALITY_BY_NAME, f"{mp}.histogram")
                    extra = {
                        "type": "histogram",
                        "temporality": TEMPORALITY_NAMES.get(temporality, "unspecified"),
                        "monotonic": True,
                    }
                    points = []
                    for n, pt in enumerate(_j_list(h, "dataPoints", f"{mp}.histogram")):
                        pp = f"{mp}.histogram.dataPoints[{n}]"
                        pt = _j_obj(pt, pp)
                        points.append(
                            {
                                "attributes": _j_attrs(pt, pp, max_depth),
                                "start_time_unix_nano": _j_uint(pt, "startTimeUnixNano", pp),
                                "time_unix_nano": _j_uint(pt, "timeUnixNano", pp),
                                "count": _j_uint(pt, "count", pp),
                                "sum": _j_double(pt["sum"], f"{pp}.sum") if "sum" in pt else None,
                                "bucket_counts": [
                                    _j_int64(c, f"{pp}.bucketCounts") for c in _j_list(pt, "bucketCounts", pp)
                                ],
                                "explicit_bounds": [
                                    _j_double(c, f"{pp}.explicitBounds") for c in _j_list(pt, "explicitBounds", pp)
                                ],
                            }
                        )
                else:
                    kind = next((k for k in ("summary", "exponentialHistogram") if k in m), None)
                    type_name = {"summary": "summary", "exponentialHistogram": "exponential_histogram"}.get(kind or "")
                    extra = {"type": type_name or "empty", "temporality": None, "monotonic": False}
                    points = []
                    container = _j_obj(m.get(kind), f"{mp}.{kind}") if kind else {}
                    for n, pt in enumerate(_j_list(container, "dataPoints", f"{mp}.{kind}")):
                        pp = f"{mp}.{kind}.dataPoints[{n}]"
                        pt = _j_obj(pt, pp)
                        points.append(
                            {
                                "attributes": _j_attrs(pt, pp, max_depth),
                                "start_time_unix_nano": _j_uint(pt, "startTimeUnixNano", pp),
                                "time_unix_nano": _j_uint(pt, "timeUnixNano", pp),
                                "count": _j_uint(pt, "count", pp),
                                "sum": _j_double(pt["sum"], f"{pp}.sum") if "sum" in pt else None,
                            }
                        )
                for pt in points:
                    pt.update(base)
                    pt.update(extra)
                    pt["resource"] = resource
                    pt["scope"] = scope
                    out.append(pt)
    return out


def spans_from_json(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict[str, Any]]:
    doc = _load_json(data)
    out: list[dict[str, Any]] = []
    for i, rs in enumerate(_j_list(doc, "resourceSpans", "")):
        p = f"resourceSpans[{i}]"
        rs = _j_obj(rs, p)
        resource = _j_attrs(_j_obj(rs.get("resource"), f"{p}.resource"), f"{p}.resource", max_depth)
        for j, ss in enumerate(_j_list(rs, "scopeSpans", p)):
            sp = f"{p}.scopeSpans[{j}]"
            ss = _j_obj(ss, sp)
            scope = _j_scope(ss, sp)
            for k, s in enumerate(_j_list(ss, "spans", sp)):
                xp = f"{sp}.spans[{k}]"
                s = _j_obj(s, xp)
                status = _j_obj(s.get("status"), f"{xp}.status")
                out.append(
                    {
                        "trace_id": _j_id(s, "traceId", 16, xp),
                        "span_id": _j_id(s, "spanId", 8, xp),
                        "parent_span_id": _j_id(s, "parentSpanId", 8, xp),
                        "name": _j_str(s, "name", xp),
                        "kind": SPAN_KIND_NAMES.get(_j_enum(s, "kind", _SPAN_KIND_BY_NAME, xp), "unspecified"),
                        "start_time_unix_nano": _j_uint(s, "startTimeUnixNano", xp),
                        "end_time_unix_nano": _j_uint(s, "endTimeUnixNano", xp),
                        "attributes": _j_attrs(s, xp, max_depth),
                        "status": {
                            "code": _j_enum(status, "code", _STATUS_CODE_BY_NAME, f"{xp}.status"),
                            "message": _j_str(status, "message", f"{xp}.status"),
                        },
                        "events": [
                            {
                                "name": _j_str(_j_obj(e, f"{xp}.events[{n}]"), "name", f"{xp}.events[{n}]"),
                                "time_unix_nano": _j_uint(e, "timeUnixNano", f"{xp}.events[{n}]"),
                                "attributes": _j_attrs(e, f"{xp}.events[{n}]", max_depth),
                            }
                            for n, e in enumerate(_j_list(s, "events", xp))
                        ],
                        "resource": resource,
                        "scope": scope,
                    }
                )
    return out


DECODERS = {
    ("logs", "protobuf"): log_stream_from_protobuf,
    ("logs", "json"): logs_from_json,
    ("metrics", "protobuf"): metrics_from_protobuf,
    ("metrics", "json"): metrics_from_json,
    ("traces", "protobuf"): spans_from_protobuf,
    ("traces", "json"): spans_from_json,
}
