"""Strict local fake of the Datadog intake APIs: Logs ``POST /api/v2/logs`` and Metrics ``POST /api/v2/series``.

The fake follows Datadog's "Logs API" (https://docs.datadoghq.com/api/latest/logs/) and "Metrics API"
(https://docs.datadoghq.com/api/latest/metrics/) references. Every request is recorded (headers included),
accepted log entries and metric points are stored parsed, and a test can inject failures while the
server runs. Both routes are served from one base URL (the real service uses two hosts).

Rules enforced for both routes:

* ``POST`` only (other methods 405, unknown paths 404).
* ``DD-API-KEY`` must be one of ``api_keys``. Logs: missing key -> 401, unknown key -> 403.
  Series: missing or unknown key -> 403 (the metrics API documents only 403 for auth).
* ``Content-Type`` must be ``application/json`` (parameters such as ``charset`` allowed) -> else 415.
* ``Content-Encoding``: logs accept ``gzip``, ``deflate`` (zlib stream) and ``identity``/none; series
  accept ``gzip``, ``deflate`` and ``zstd1`` (only if the ``zstandard`` module is importable) and
  ``identity``/none. Anything else -> 415; a corrupt stream -> 400.
* Malformed JSON (including ``NaN``/``Infinity``) -> 400.

Logs (``/api/v2/logs``), answer ``202 {}``:

* Body is a JSON array of objects or one object. At most ``logs_max_entries`` (1000) entries and
  ``logs_max_payload_bytes`` (5,000,000) decompressed bytes -> else 413.
* Each entry needs a string ``message``; ``ddsource``, ``ddtags``, ``hostname``, ``service`` and
  ``status`` must be strings when present -> else 400 (the whole request is rejected).
* An entry larger than ``logs_max_entry_bytes`` (1,000,000, measured as compact JSON) is accepted and
  truncated: its ``message`` is shortened and :attr:`LogEntry.truncated` is set.
* ``ddtags`` query parameter tags apply to every entry (:attr:`LogEntry.tags`).
* Timestamps (first of ``timestamp``, ``@timestamp``, ``date``, ``_timestamp``, ``Timestamp``,
  ``eventTime``, ``published``) outside [now - 18 h, now + 2 h] are accepted but flagged
  (:attr:`LogEntry.timestamp_in_window` false): Datadog ingests such logs without their own time.

Series (``/api/v2/series``), answer ``202 {"errors": []}``:

* Wire body <= ``series_max_payload_bytes`` (512,000) and decompressed body < 5,242,880 bytes -> else
  413.
* Body ``{"series": [...]}`` with at least one series. Each series: ``metric`` non-empty string;
  ``points`` non-empty list of ``{"timestamp": int, "value": number}``; ``type`` one of 0/1/2/3;
  ``interval`` positive int, required for count (1) and rate (2) unless
  ``require_interval_for_count_rate=False``; ``tags`` list of strings; ``resources`` list of
  ``{"name": str, "type": str}``; ``unit``/``source_type_name`` strings; ``metadata`` object.
  Any violation -> 400 ``{"errors": ["..."]}``.
* Points older than 1 h or more than 10 min in the future are dropped, the request still answers
  202 and lists one non-fatal error string per dropped point in ``errors``; dropped points are kept
  in :attr:`DatadogFake.dropped_points`.

Choices where the spec is silent or says UNVERIFIED (strictest documented reading):

* "5 MB"/"1 MB" for logs are taken as 5,000,000 / 1,000,000 bytes (smaller than the binary reading,
  so a client accepted here is accepted by Datadog).
* More than 1000 log entries -> 413 (the spec gives the limit but no status).
* An empty log array or empty ``series`` list -> 400; a log entry without ``message`` -> 400 as the
  spec marks it required.
* Error bodies: logs use ``{"errors": [{"status": "<code>", "title": ..., "detail": ...}]}`` (the API's
  ``HTTPLogErrors`` model); series use ``{"errors": ["..."]}``. The texts are the fake's own.
* Unsupported ``Content-Type``/``Content-Encoding`` -> 415 (the spec lists no status for them).
* ``deflate`` means a zlib-wrapped stream (RFC 9110), not raw deflate.
* Numeric log timestamps below 1e11 are read as seconds, larger ones as milliseconds.
* ``GET /api/v1/validate`` is not in the spec and is not served (404).

Run as a process for end-to-end tests::

    python -m tests.fakes.datadog --port 0 --api-key K

The first stdout line is the base URL. In process mode a control API is served under
``/__fake__/`` (see :meth:`DatadogFake._control`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import ssl
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import INFLATE_ERRORS as _INFLATE_ERRORS
from tests.fakes.base import RECORD_KEY as _RECORD_KEY
from tests.fakes.base import Drop as _Drop
from tests.fakes.base import FakeServer, Fault, RecordedRequest, serve_until_signalled, server_options, server_parser
from tests.fakes.base import Reply as _Reply
from tests.fakes.base import decompressobj as _decompressobj

LOGS_PATH = "/api/v2/logs"
SERIES_PATH = "/api/v2/series"
LOGS_MAX_PAYLOAD_BYTES = 5_000_000
LOGS_MAX_ENTRY_BYTES = 1_000_000
LOGS_MAX_ENTRIES = 1000
LOGS_MAX_AGE_SECONDS = 18 * 3600
LOGS_MAX_FUTURE_SECONDS = 2 * 3600
SERIES_MAX_PAYLOAD_BYTES = 512_000
SERIES_MAX_DECOMPRESSED_BYTES = 5_242_880
SERIES_MAX_AGE_SECONDS = 3600
SERIES_MAX_FUTURE_SECONDS = 600
METRIC_TYPES = {0: "unspecified", 1: "count", 2: "rate", 3: "gauge"}
LOG_DATE_ATTRIBUTES = ("timestamp", "@timestamp", "date", "_timestamp", "Timestamp", "eventTime", "published")
FAULT_ENDPOINTS = frozenset({"logs", "series", "any"})

_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

try:
    import zstandard as _zstd  # type: ignore[import-not-found]
except ImportError:
    _zstd = None


@dataclass(frozen=True)
class LogEntry:
    """One accepted log entry.

    ``tags`` merges the ``ddtags`` query parameter and the entry's ``ddtags`` (comma-split, in that
    order). ``attributes`` holds every key except the reserved ones (``message``, ``ddsource``,
    ``ddtags``, ``hostname``, ``service``, ``status``). ``raw`` is the entry as sent. ``size`` is its
    compact-JSON size before truncation. ``timestamp`` is the parsed date attribute (epoch seconds) or
    ``None``; ``timestamp_in_window`` is ``None`` without a parsable date attribute.
    """

    message: str
    ddsource: str | None
    ddtags: str | None
    tags: list[str]
    hostname: str | None
    service: str | None
    status: str | None
    attributes: dict[str, Any]
    raw: dict[str, Any]
    truncated: bool
    size: int
    timestamp: float | None
    timestamp_in_window: bool | None
    request_seq: int
    position: int
    received_at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict of this entry."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetricPoint:
    """One accepted (or dropped) metric point with its series' metadata.

    ``host`` is the name of the first resource of type ``host``; ``series`` is the series object as
    sent (points included).
    """

    metric: str
    type: int
    timestamp: int
    value: float
    interval: int | None
    unit: str | None
    tags: list[str]
    resources: list[dict[str, Any]]
    host: str | None
    source_type_name: str | None
    series: dict[str, Any]
    request_seq: int
    received_at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict of this point."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DroppedPoint:
    """A point the fake did not store although the request answered 202, and why."""

    point: MetricPoint
    reason: str


class _TooLarge(Exception):
    """Decompressed body exceeds the limit."""


def logs_error(status: int, detail: str) -> dict[str, Any]:
    """Logs API error body (``HTTPLogErrors``)."""
    return {"errors": [{"status": str(status), "title": _TITLES.get(status, "Error"), "detail": detail}]}


def series_error(*messages: str) -> dict[str, Any]:
    """Metrics API error body (``APIErrorResponse``)."""
    return {"errors": list(messages)}


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _inflate_limited(data: bytes, limit: int, wbits: int) -> bytes:
    """Inflate a gzip (``wbits=31``, multi-member allowed) or zlib (``wbits=15``) stream.

    Raises ``ValueError`` when corrupt or truncated and :class:`_TooLarge` above ``limit`` bytes.
    """
    out = bytearray()
    rest = data
    while True:
        inflater = _decompressobj(wbits=wbits)
        try:
            out += inflater.decompress(rest, limit - len(out) + 1)
        except _INFLATE_ERRORS as exc:
            raise ValueError(str(exc)) from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise ValueError("truncated stream")
        rest = inflater.unused_data
        if wbits != 31 and rest:
            raise ValueError("trailing data after zlib stream")
        if not rest.strip(b"\x00"):
            return bytes(out)


def _unzstd_limited(data: bytes, limit: int) -> bytes:
    if _zstd is None:  # pragma: no cover - checked by the caller
        raise ValueError("zstd unavailable")
    try:
        reader = _zstd.ZstdDecompressor().stream_reader(data)
        out = reader.read(limit + 1)
    except _zstd.ZstdError as exc:
        raise ValueError(str(exc)) from exc
    if len(out) > limit:
        raise _TooLarge
    return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _parse_json(body: bytes, exact_numbers: bool = True) -> Any:
    """Strict JSON (no NaN/Infinity); orjson first, the standard library for what orjson cannot represent (lone
    surrogates) and for the error message. orjson reads integers beyond 64 bits as floats: with ``exact_numbers``
    a body holding such a digit run is read by the standard library."""
    if not (exact_numbers and _LONG_NUMBER.search(body)):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return _DECODER.decode(body.decode("utf-8"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _compact_size(value: Any, limit: int) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (Python's spelling of numbers), exact whenever it can matter against
    ``limit``: orjson spells some floats differently (``0.00001`` for ``1e-05``), never by more than a factor of two,
    so its size is used only when twice it is still under the limit."""
    try:
        fast = len(orjson.dumps(value))
        if fast * 2 < limit:
            return fast
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        pass
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _split_tags(tags: str | None) -> list[str]:
    if not tags:
        return []
    return [tag.strip() for tag in tags.split(",") if tag.strip()]


def parse_log_timestamp(value: Any) -> float | None:
    """Epoch seconds for a log date attribute (number or ISO-8601 string), ``None`` if unreadable."""
    if _is_number(value):
        number = float(value)
        if not math.isfinite(number):
            return None
        return number / 1000.0 if number >= 1e11 else number
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


class DatadogFake(FakeServer):
    """Async context manager running a strict fake Datadog intake on 127.0.0.1 and an ephemeral port.

    Constructor arguments: ``api_keys`` (accepted ``DD-API-KEY`` values), limits
    (``logs_max_payload_bytes``, ``logs_max_entry_bytes``, ``logs_max_entries``,
    ``series_max_payload_bytes``, ``series_max_decompressed_bytes``),
    ``require_interval_for_count_rate``, ``clock`` (returns epoch seconds; used for the timestamp
    windows), ``ssl_context``, ``control_api``, ``host``/``port``.

    Knobs a test may change while the server runs: :attr:`api_keys` (or :meth:`add_key`,
    :meth:`revoke_key`), :attr:`response_delay`, the limit attributes, and the fault queue
    (:meth:`fail_next`, :meth:`drop_next`, :meth:`delay_next`).

    Records: :attr:`logs`, :attr:`points`, :attr:`dropped_points`, :attr:`series`, :attr:`requests`.
    All accessors return copies and are safe to call from other threads.
    """

    FAULT_ENDPOINTS = FAULT_ENDPOINTS

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        *,
        logs_max_payload_bytes: int = LOGS_MAX_PAYLOAD_BYTES,
        logs_max_entry_bytes: int = LOGS_MAX_ENTRY_BYTES,
        logs_max_entries: int = LOGS_MAX_ENTRIES,
        series_max_payload_bytes: int = SERIES_MAX_PAYLOAD_BYTES,
        series_max_decompressed_bytes: int = SERIES_MAX_DECOMPRESSED_BYTES,
        require_interval_for_count_rate: bool = True,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        control_api: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        retain: bool = True,
    ) -> None:
        self._init_server(ssl_context=ssl_context, control_api=control_api, host=host, port=port, retain=retain)
        self.api_keys: set[str] = set(api_keys)
        self.log_count = 0
        self.point_count = 0
        self.logs_max_payload_bytes = logs_max_payload_bytes
        self.logs_max_entry_bytes = logs_max_entry_bytes
        self.logs_max_entries = logs_max_entries
        self.series_max_payload_bytes = series_max_payload_bytes
        self.series_max_decompressed_bytes = series_max_decompressed_bytes
        self.require_interval_for_count_rate = require_interval_for_count_rate
        self.clock = clock
        self._logs: list[LogEntry] = []
        self._points: list[MetricPoint] = []
        self._dropped_points: list[DroppedPoint] = []
        self._series: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- lifecycle

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", LOGS_PATH, self._handle_logs)
        app.router.add_route("*", SERIES_PATH, self._handle_series)

    @property
    def logs_url(self) -> str:
        """``<url>/api/v2/logs``."""
        return self.url + LOGS_PATH

    @property
    def series_url(self) -> str:
        """``<url>/api/v2/series``."""
        return self.url + SERIES_PATH

    # ----------------------------------------------------------------- records

    @property
    def logs(self) -> list[LogEntry]:
        """Accepted log entries in arrival order."""
        with self._lock:
            return list(self._logs)

    @property
    def points(self) -> list[MetricPoint]:
        """Accepted metric points in arrival order."""
        with self._lock:
            return list(self._points)

    @property
    def dropped_points(self) -> list[DroppedPoint]:
        """Points outside the timestamp window (answered 202 but not stored)."""
        with self._lock:
            return list(self._dropped_points)

    @property
    def series(self) -> list[dict[str, Any]]:
        """Series objects of accepted requests, as sent."""
        with self._lock:
            return list(self._series)

    async def wait_for_logs(self, count: int, timeout: float = 5.0) -> list[LogEntry]:
        """Wait until at least ``count`` log entries are accepted; ``TimeoutError`` otherwise."""
        return await self._wait(lambda: self.logs, count, timeout)

    async def wait_for_points(self, count: int, timeout: float = 5.0) -> list[MetricPoint]:
        """Wait until at least ``count`` metric points are accepted; ``TimeoutError`` otherwise."""
        return await self._wait(lambda: self.points, count, timeout)

    @staticmethod
    async def _wait(read: Callable[[], list[Any]], count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            items = read()
            if len(items) >= count:
                return items
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(items)} of {count} items after {timeout}s")
            await asyncio.sleep(0.005)

    def reset(self) -> None:
        """Forget recorded data, requests and queued faults (keys and limits stay)."""
        with self._lock:
            self._logs.clear()
            self._points.clear()
            self._dropped_points.clear()
            self._series.clear()
            self._requests.clear()
            self._faults.clear()
            self.request_count = self.log_count = self.point_count = 0

    # ----------------------------------------------------------------- keys

    def add_key(self, key: str) -> None:
        """Accept ``key`` from now on."""
        with self._lock:
            self.api_keys.add(key)

    def revoke_key(self, key: str) -> None:
        """Reject ``key`` from now on (403)."""
        with self._lock:
            self.api_keys.discard(key)

    # ----------------------------------------------------------------- faults

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        retry_after: int | None = None,
        endpoint: str = "any",
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` before any other check.

        The body is the endpoint's error shape. A 429 carries ``X-RateLimit-Limit``,
        ``X-RateLimit-Period``, ``X-RateLimit-Remaining: 0``, ``X-RateLimit-Reset`` (``retry_after``
        or 1) and ``X-RateLimit-Name``; ``retry_after`` also adds ``Retry-After`` (any status).
        ``endpoint``: ``logs``, ``series`` or ``any``.
        """
        self._queue(Fault("status", endpoint, count, status=status, retry_after=retry_after))

    def _apply_fault(self, request: web.Request, endpoint: str) -> Fault | None:
        fault = self._next_fault(request, endpoint)
        if fault is None:
            return None
        if fault.action == "status":
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.status == 429:
                headers.update(
                    {
                        "X-RateLimit-Limit": "100",
                        "X-RateLimit-Period": "60",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(fault.retry_after if fault.retry_after is not None else 1),
                        "X-RateLimit-Name": "fake_intake",
                    }
                )
            detail = "injected failure" if endpoint == "logs" else _TITLES.get(fault.status, "Error")
            raise _Reply(fault.status, self._error_body(endpoint, fault.status, detail), headers)
        return fault

    @staticmethod
    def _error_body(endpoint: str, status: int, detail: str) -> dict[str, Any]:
        if endpoint == "logs":
            return logs_error(status, detail)
        return series_error(detail)

    # ----------------------------------------------------------------- http plumbing

    _json_response = staticmethod(_json_response)

    def _http_error(self, exc: web.HTTPException) -> web.Response:
        if isinstance(exc, web.HTTPNotFound):
            return _json_response(404, series_error("Not found"))
        raise exc

    def _common_checks(self, request: web.Request, endpoint: str) -> None:
        """Method, API key and Content-Type checks shared by both routes."""
        if request.method != "POST":
            raise _Reply(405, self._error_body(endpoint, 405, "Method Not Allowed"), {"Allow": "POST"})
        key = request.headers.get("DD-API-KEY")
        with self._lock:
            known = key is not None and key in self.api_keys
        if not known:
            if endpoint == "logs" and not key:
                raise _Reply(401, logs_error(401, "API key is missing"))
            if endpoint == "logs":
                raise _Reply(403, logs_error(403, "Invalid API key"))
            raise _Reply(403, series_error("Forbidden"))
        mime = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if mime != "application/json":
            detail = f"Content-Type must be application/json, got {mime or 'none'!r}"
            raise _Reply(415, self._error_body(endpoint, 415, detail))

    def _decode(self, request: web.Request, endpoint: str, limit: int) -> bytes:
        record: RecordedRequest = request[_RECORD_KEY]
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        too_large = _Reply(413, self._error_body(endpoint, 413, "Payload too large"))
        if record.body_truncated:
            raise too_large
        try:
            if encoding in ("", "identity"):
                decoded = record.body
                if len(decoded) > limit:
                    raise _TooLarge
            elif encoding == "gzip":
                decoded = _inflate_limited(record.body, limit, 16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                decoded = _inflate_limited(record.body, limit, zlib.MAX_WBITS)
            elif encoding == "zstd1" and endpoint == "series" and _zstd is not None:
                decoded = _unzstd_limited(record.body, limit)
            else:
                detail = f"unsupported Content-Encoding {encoding!r}"
                raise _Reply(415, self._error_body(endpoint, 415, detail))
        except _TooLarge:
            raise too_large from None
        except ValueError as exc:
            raise _Reply(400, self._error_body(endpoint, 400, f"cannot decode body: {exc}")) from None
        record.decoded_body = decoded
        return decoded

    # ----------------------------------------------------------------- logs

    async def _handle_logs(self, request: web.Request) -> web.StreamResponse:
        record: RecordedRequest = request[_RECORD_KEY]
        if request.method != "POST":
            self._common_checks(request, "logs")
        fault = self._apply_fault(request, "logs")
        self._common_checks(request, "logs")
        body = self._decode(request, "logs", self.logs_max_payload_bytes)
        try:
            payload = _parse_json(body, exact_numbers=self.retain)
        except (ValueError, UnicodeDecodeError):
            raise _Reply(400, logs_error(400, "Malformed JSON payload")) from None
        if not isinstance(payload, list | dict):
            raise _Reply(400, logs_error(400, "Payload must be a JSON array of log objects or one object"))
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            raise _Reply(400, logs_error(400, "Empty log array"))
        if len(items) > self.logs_max_entries:
            detail = f"{len(items)} entries exceed the limit of {self.logs_max_entries}"
            raise _Reply(413, logs_error(413, detail))
        for position, item in enumerate(items):
            problem = self._log_problem(item)
            if problem is not None:
                raise _Reply(400, logs_error(400, f"log entry {position}: {problem}"))
        entries: list[LogEntry] = []
        if self.retain:  # without retention there is nothing to build: what is refused was refused above
            query_tags = _split_tags(request.query.get("ddtags"))
            now = self.clock()
            entries = [self._make_log(item, position, query_tags, now, record) for position, item in enumerate(items)]
        with self._lock:
            self.log_count += len(items)
            self._logs.extend(entries)
        if fault is not None and fault.action == "drop":
            raise _Drop
        return _json_response(202, {})

    @staticmethod
    def _log_problem(item: Any) -> str | None:
        if not isinstance(item, dict):
            return "must be a JSON object"
        if "message" not in item:
            return "message is required"
        for key in ("message", "ddsource", "ddtags", "hostname", "service", "status"):
            if key in item and not isinstance(item[key], str):
                return f"{key} must be a string"
        return None

    def _make_log(
        self, item: dict[str, Any], position: int, query_tags: list[str], now: float, record: RecordedRequest
    ) -> LogEntry:
        size = _compact_size(item, self.logs_max_entry_bytes)
        message: str = item["message"]
        truncated = size > self.logs_max_entry_bytes
        if truncated:
            encoded = message.encode("utf-8")
            room = max(0, len(encoded) - (size - self.logs_max_entry_bytes))
            message = encoded[:room].decode("utf-8", "ignore")
        timestamp: float | None = None
        for name in LOG_DATE_ATTRIBUTES:
            if name in item:
                timestamp = parse_log_timestamp(item[name])
                break
        in_window: bool | None = None
        if timestamp is not None:
            in_window = now - LOGS_MAX_AGE_SECONDS <= timestamp <= now + LOGS_MAX_FUTURE_SECONDS
        reserved = {"message", "ddsource", "ddtags", "hostname", "service", "status"}
        return LogEntry(
            message=message,
            ddsource=item.get("ddsource"),
            ddtags=item.get("ddtags"),
            tags=query_tags + _split_tags(item.get("ddtags")),
            hostname=item.get("hostname"),
            service=item.get("service"),
            status=item.get("status"),
            attributes={key: value for key, value in item.items() if key not in reserved},
            raw=item,
            truncated=truncated,
            size=size,
            timestamp=timestamp,
            timestamp_in_window=in_window,
            request_seq=record.seq,
            position=position,
            received_at=record.received_at,
        )

    # ----------------------------------------------------------------- series

    async def _handle_series(self, request: web.Request) -> web.StreamResponse:
        record: RecordedRequest = request[_RECORD_KEY]
        if request.method != "POST":
            self._common_checks(request, "series")
        fault = self._apply_fault(request, "series")
        self._common_checks(request, "series")
        if len(record.body) > self.series_max_payload_bytes:
            detail = f"payload of {len(record.body)} bytes exceeds {self.series_max_payload_bytes} bytes"
            raise _Reply(413, series_error(detail))
        body = self._decode(request, "series", self.series_max_decompressed_bytes - 1)
        try:
            payload = _parse_json(body, exact_numbers=self.retain)
        except (ValueError, UnicodeDecodeError):
            raise _Reply(400, series_error("Malformed JSON payload")) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("series"), list):
            raise _Reply(400, series_error("series is required and must be an array"))
        all_series: list[Any] = payload["series"]
        if not all_series:
            raise _Reply(400, series_error("series must not be empty"))
        problems = [
            f"series[{number}]: {problem}"
            for number, item in enumerate(all_series)
            if (problem := self._series_problem(item)) is not None
        ]
        if problems:
            raise _Reply(400, series_error(*problems))
        now = self.clock()
        accepted: list[MetricPoint] = []
        dropped: list[DroppedPoint] = []
        for item in all_series:
            for point in self._make_points(item, record):
                if point.timestamp < now - SERIES_MAX_AGE_SECONDS:
                    dropped.append(DroppedPoint(point, "timestamp more than 1 hour in the past"))
                elif point.timestamp > now + SERIES_MAX_FUTURE_SECONDS:
                    dropped.append(DroppedPoint(point, "timestamp more than 10 minutes in the future"))
                else:
                    accepted.append(point)
        with self._lock:
            self.point_count += len(accepted)
            if self.retain:
                self._series.extend(all_series)
                self._points.extend(accepted)
                self._dropped_points.extend(dropped)
        if fault is not None and fault.action == "drop":
            raise _Drop
        errors = [f"point {item.point.metric}@{item.point.timestamp} dropped: {item.reason}" for item in dropped]
        return _json_response(202, {"errors": errors})

    def _series_problem(self, item: Any) -> str | None:
        if not isinstance(item, dict):
            return "must be an object"
        metric = item.get("metric")
        if not isinstance(metric, str) or not metric:
            return "metric is required and must be a non-empty string"
        if "type" in item and (not _is_int(item["type"]) or item["type"] not in METRIC_TYPES):
            return "type must be one of 0 (unspecified), 1 (count), 2 (rate), 3 (gauge)"
        if "interval" in item and (not _is_int(item["interval"]) or item["interval"] <= 0):
            return "interval must be a positive integer"
        if self.require_interval_for_count_rate and item.get("type") in (1, 2) and "interval" not in item:
            return "interval is required for count and rate metrics"
        points = item.get("points")
        if not isinstance(points, list) or not points:
            return "points is required and must be a non-empty array"
        for number, point in enumerate(points):
            if not isinstance(point, dict):
                return f"points[{number}] must be an object"
            if not _is_int(point.get("timestamp")) or point["timestamp"] < 0:
                return f"points[{number}].timestamp must be an integer (POSIX seconds)"
            if not _is_number(point.get("value")):
                return f"points[{number}].value must be a number"
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            return "tags must be an array of strings"
        resources = item.get("resources", [])
        if not isinstance(resources, list) or not all(
            isinstance(res, dict) and isinstance(res.get("name"), str) and isinstance(res.get("type"), str)
            for res in resources
        ):
            return "resources must be an array of {name: string, type: string}"
        for key in ("unit", "source_type_name"):
            if key in item and not isinstance(item[key], str):
                return f"{key} must be a string"
        if "metadata" in item and not isinstance(item["metadata"], dict):
            return "metadata must be an object"
        return None

    @staticmethod
    def _make_points(item: dict[str, Any], record: RecordedRequest) -> list[MetricPoint]:
        resources: list[dict[str, Any]] = item.get("resources", [])
        host = next((res["name"] for res in resources if res["type"] == "host"), None)
        return [
            MetricPoint(
                metric=item["metric"],
                type=item.get("type", 0),
                timestamp=point["timestamp"],
                value=float(point["value"]),
                interval=item.get("interval"),
                unit=item.get("unit"),
                tags=list(item.get("tags", [])),
                resources=resources,
                host=host,
                source_type_name=item.get("source_type_name"),
                series=item,
                request_seq=record.seq,
                received_at=record.received_at,
            )
            for point in item["points"]
        ]

    # ----------------------------------------------------------------- control API

    def _control_actions(
        self, args: dict[str, Any]
    ) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
        """``GET /__fake__/logs``, ``/points``, ``/dropped_points``, ``/stats``, ``/requests``; ``POST /__fake__/fail``
        (kwargs of :meth:`fail_next`), ``/drop``, ``/delay``, ``/config`` (``response_delay``), ``/key``
        (``{"key", "action": add|revoke}``), ``/reset``."""
        readers: dict[str, Callable[[], Any]] = {
            "stats": lambda: {"logs": self.log_count, "points": self.point_count, "requests": self.request_count},
            "logs": lambda: [entry.as_dict() for entry in self.logs],
            "points": lambda: [point.as_dict() for point in self.points],
            "dropped_points": lambda: [dataclasses.asdict(item) for item in self.dropped_points],
        }
        writers: dict[str, Callable[[], Any]] = {
            "fail": lambda: self.fail_next(**args),
            "drop": lambda: self.drop_next(**args),
            "config": lambda: setattr(self, "response_delay", float(args.get("response_delay", 0.0))),
            "key": lambda: {"add": self.add_key, "revoke": self.revoke_key}[args["action"]](args["key"]),
        }
        return readers, writers

    def _control_not_found(self) -> web.Response:
        return _json_response(404, series_error("Not found"))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until SIGTERM/SIGINT, first stdout line is the URL."""
    parser = server_parser("python -m tests.fakes.datadog", "Fake Datadog intake")
    parser.add_argument("--api-key", action="append", required=True, help="accepted API key (repeatable)")
    args = parser.parse_args(argv)
    return serve_until_signalled(DatadogFake(args.api_key, **server_options(args)))


if __name__ == "__main__":
    sys.exit(main())
