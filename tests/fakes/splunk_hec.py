"""Strict local fake of the Splunk HTTP Event Collector (HEC).

The fake follows Splunk's "HTTP Event Collector REST API endpoints" documentation
(https://docs.splunk.com/Documentation/Splunk/latest/RESTREF/RESTinput#services.2Fcollector) and answers with the
status codes and
``{"text": ..., "code": ...}`` bodies listed there. It is meant for exporter tests: every request
is recorded (headers included), every accepted event is stored with its effective metadata, and a
test can inject failures while the server runs.

Protocol summary (what the fake enforces):

* Routes: ``POST /services/collector/event``, ``/services/collector/event/1.0`` and
  ``/services/collector`` (JSON event protocol); ``POST /services/collector/raw`` and ``/raw/1.0``
  (one event per non-blank line, metadata from query parameters); ``POST /services/collector/ack``;
  ``GET /services/collector/health`` and ``/health/1.0`` (no token check). ``OPTIONS`` on a known
  route answers 200 with ``Allow``; another method answers 405; an unknown path answers 404
  ``{"text":"The requested URL was not found on this server.","code":404}``.
* Auth: ``Authorization: Splunk <token>`` or HTTP Basic with the token as password; ``?token=`` only
  when the token allows query-string auth (else 400 code 16). Missing credentials -> 401 code 2,
  another scheme or malformed header -> 401 code 3, unknown token -> 403 code 4, disabled token ->
  403 code 1.
* Body: ``Content-Encoding: gzip`` is decoded (corrupt gzip -> 400 code 6); ``deflate`` or any other
  coding -> 415. The request body, before and after decompression, must not exceed
  ``max_content_length`` (-> 413).
* ``/event`` batches are concatenated JSON objects (no array, no commas). Objects are validated in
  order; the first bad object N stops the request with 400 and ``invalid-event-number: N`` while
  objects ``0..N-1`` stay indexed. Rules per object: must be a JSON object (6); ``event`` required
  (12) unless it is a metrics event carrying ``metric_name`` fields; ``event`` null/false (6); blank
  string ``event`` (13); ``time`` must be a non-negative number or numeric string (6);
  ``host/source/sourcetype/index`` must be strings (6); ``index`` must be allowed for the token (7);
  ``fields`` must be a flat object whose values are strings, numbers or arrays of those (15).
  An unknown envelope key stops indexing at that object but the request still answers 200 (the
  spec's probe result); such objects are listed in :attr:`SplunkHecFake.dropped_events`. Pass
  ``strict_unknown_keys=True`` to answer 400 code 6 instead.
* Indexer acknowledgement (``TokenPolicy(ack=True)``): a channel (``X-Splunk-Request-Channel`` or
  ``?channel=``) is required (400 code 10) and must be a GUID (400 code 11); every accepted post
  returns ``ackId`` (per channel, from 0). ``/ack`` answers ``{"acks": {"<id>": bool}}``; an id turns
  true once ``ack_delay`` seconds have passed or the test calls :meth:`SplunkHecFake.release_acks`,
  and is forgotten after it was reported true once (read-once). ``ack_delay=None`` means acks only
  arrive through ``release_acks`` (never, if the test does not call it). ``/ack`` with a token
  without ack answers 400 code 14.

Choices where the spec is silent or says UNVERIFIED (documented behaviour picked, strictest
reasonable reading otherwise):

* The 413 body is ``{"text":"Content-Length of <n> too large (maximum is <max>)","code":413}``
  (shape of the probe's 404 answer; exact text UNVERIFIED). Size is checked before auth.
* A JSON array body is rejected (code 6, event 0): the spec calls arrays UNVERIFIED and says don't.
* ``time`` integers/floats are read by magnitude: >= 1e17 ns, >= 1e14 us (UNVERIFIED), >= 1e11 ms,
  else seconds; kept with microsecond precision. Negative or ``null`` time -> code 6 (UNVERIFIED).
* ``fields`` values ``null``/booleans and a non-object ``fields`` -> code 15 (UNVERIFIED).
* ``event`` ``true`` and ``0`` are accepted; only ``null``/``false`` give code 6 as probed.
* An empty string ``index`` -> code 7; index names are compared case-sensitively.
* A channel header on a non-ack token is still checked to be a GUID (code 11).
* The authorization scheme ``Splunk`` is matched case-sensitively; ``Basic`` case-insensitively.
* Codes 21/22 are never produced (the spec does not say when Splunk uses them).
* Invalid UTF-8 inside object N is code 6 for object N.
* The 405 and 415 bodies are ``{"text":"Method Not Allowed","code":405}`` and
  ``{"text":"Unsupported Media Type","code":415}`` (UNVERIFIED).
* ``/raw`` splits the body on newlines (Splunk's line breaking is configurable; UNVERIFIED).

Run as a process for end-to-end tests::

    python -m tests.fakes.splunk_hec --port 0 --token T [--ack] [--index ai_audit]

The first stdout line is the base URL. In process mode a control API is enabled under
``/__fake__/`` (see :meth:`SplunkHecFake._control`) so another process can read what was received
and inject failures.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import math
import re
import ssl
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import INFLATE_ERRORS as _INFLATE_ERRORS
from tests.fakes.base import RECORD_KEY as _RECORD_KEY
from tests.fakes.base import Drop as _Drop
from tests.fakes.base import FakeServer, Fault, RecordedRequest, serve_until_signalled, server_options, server_parser
from tests.fakes.base import Reply as _Reply
from tests.fakes.base import decompressobj as _decompressobj

DEFAULT_MAX_CONTENT_LENGTH = 838_860_800

HEC_CODES: dict[int, tuple[int, str]] = {
    0: (200, "Success"),
    1: (403, "Token disabled"),
    2: (401, "Token is required"),
    3: (401, "Invalid authorization"),
    4: (403, "Invalid token"),
    5: (400, "No data"),
    6: (400, "Invalid data format"),
    7: (400, "Incorrect index"),
    8: (500, "Internal server error"),
    9: (503, "Server is busy"),
    10: (400, "Data channel is missing"),
    11: (400, "Invalid data channel"),
    12: (400, "Event field is required"),
    13: (400, "Event field cannot be blank"),
    14: (400, "ACK is disabled"),
    15: (400, "Error in handling indexed fields"),
    16: (400, "Query string authorization is not enabled"),
    17: (200, "HEC is healthy"),
    18: (503, "HEC is unhealthy, queues are full"),
    19: (503, "HEC is unhealthy, ack service unavailable"),
    20: (503, "HEC is unhealthy, queues are full, ack service unavailable"),
    21: (400, "Invalid token"),
    22: (400, "Token disabled"),
    23: (503, "Server is shutting down"),
    24: (200, "HEC queue is approaching its capacity limit"),
    25: (200, "HEC ACK is approaching its capacity limit"),
    26: (429, "HEC queue is at capacity"),
    27: (429, "HEC ACK channel is at capacity"),
}
"""HEC status codes: ``code -> (HTTP status, text)`` (spec section 4)."""

DEFAULT_CODE_FOR_STATUS: dict[int, int] = {500: 8, 503: 9, 429: 26, 200: 24}
"""HEC code used by :meth:`SplunkHecFake.fail_next` when only an HTTP status is given."""

HEALTH_CODES: dict[str, int] = {
    "healthy": 17,
    "queues_full": 18,
    "ack_unavailable": 19,
    "queues_full_ack_unavailable": 20,
}
"""Values of :attr:`SplunkHecFake.health_state` and the HEC code each answers with."""

ENVELOPE_KEYS = frozenset({"time", "host", "source", "sourcetype", "index", "event", "fields"})
NOT_FOUND_BODY: dict[str, Any] = {"text": "The requested URL was not found on this server.", "code": 404}
FAULT_ENDPOINTS = frozenset({"ingest", "ack", "health", "any"})

_GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_NUMERIC_TIME_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")
_JSON_WS = " \t\n\r"
_JSON_WS_BYTES = _JSON_WS.encode()
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
_REASONS: dict[int, str] = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_EVENT_PATHS = ("/services/collector/event", "/services/collector/event/1.0", "/services/collector")
_RAW_PATHS = ("/services/collector/raw", "/services/collector/raw/1.0")
_ACK_PATH = "/services/collector/ack"
_HEALTH_PATHS = ("/services/collector/health", "/services/collector/health/1.0")


@dataclass
class TokenPolicy:
    """Configuration of one HEC token.

    ``indexes=None`` allows every index; a list is the token's allow-list. ``default_index`` is used
    for events without ``index`` (defaults to the first allowed index, else ``"main"``) and is always
    allowed. ``ack`` turns on indexer acknowledgement; ``disabled`` makes the token answer 403 code
    1; ``allow_query_string_auth`` accepts ``?token=``.
    """

    indexes: list[str] | None = None
    ack: bool = False
    disabled: bool = False
    allow_query_string_auth: bool = False
    default_index: str | None = None
    default_source: str = "http:ccbridge-fake"
    default_sourcetype: str = "httpevent"
    default_host: str = "splunk-fake"

    def effective_default_index(self) -> str:
        """Index that receives events without an ``index`` key."""
        if self.default_index is not None:
            return self.default_index
        if self.indexes:
            return self.indexes[0]
        return "main"

    def index_allowed(self, index: str) -> bool:
        """Whether events may be written to ``index`` with this token."""
        if index == self.effective_default_index():
            return True
        return self.indexes is None or index in self.indexes


@dataclass(frozen=True)
class HecEvent:
    """One indexed event with its effective metadata.

    ``time`` is epoch seconds (microsecond precision) or ``None`` when the envelope had no time
    (Splunk would use receipt time, kept in ``received_at``). ``envelope`` is the object exactly as
    sent; ``position`` is its 0-based number within the request; ``ack_id`` is set for ack tokens.
    """

    event: Any
    time: float | None
    host: str
    source: str
    sourcetype: str
    index: str
    fields: dict[str, Any]
    channel: str | None
    token: str
    ack_id: int | None
    request_seq: int
    position: int
    endpoint: str
    envelope: dict[str, Any]
    received_at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict of this event."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DroppedEvent:
    """An object the fake did not index although the request answered 200 (unknown envelope key)."""

    request_seq: int
    position: int
    reason: str
    envelope: Any


@dataclass
class _AckEntry:
    created_at: float
    released: bool = False
    reported: bool = False


@dataclass
class _Channel:
    next_id: int = 0
    entries: dict[int, _AckEntry] = field(default_factory=dict)


class _TooLarge(Exception):
    """Decompressed body exceeds the limit."""


def hec_body(code: int, **extra: Any) -> dict[str, Any]:
    """The JSON body Splunk sends for ``code`` (plus extra keys such as ``ackId``)."""
    body: dict[str, Any] = {"text": HEC_CODES[code][1], "code": code}
    body.update(extra)
    return body


def _hec_error(code: int, **extra: Any) -> _Reply:
    return _Reply(HEC_CODES[code][0], hec_body(code, **extra))


def _too_large(size: int, limit: int) -> _Reply:
    return _Reply(413, {"text": f"Content-Length of {size} too large (maximum is {limit})", "code": 413})


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=_dumps(body),
        headers={"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
    )


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress a (possibly multi-member) gzip body; raise ``ValueError`` if corrupt or truncated.

    Raises :class:`_TooLarge` once the output would exceed ``limit`` bytes, without inflating more.
    """
    out = bytearray()
    rest = data
    while True:
        inflater = _decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(rest, limit - len(out) + 1)
        except _INFLATE_ERRORS as exc:
            raise ValueError(str(exc)) from exc
        out += chunk
        if len(out) > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise ValueError("truncated gzip stream")
        rest = inflater.unused_data
        if not rest.strip(b"\x00"):
            return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_lines(body: bytes, exact_numbers: bool) -> list[Any] | None:
    """The values of a body holding one JSON value per line (what most clients send), parsed with orjson; None when
    any line is not exactly one strict JSON value, so the exact (slower) reading decides. orjson reads integers
    beyond 64 bits as floats: with ``exact_numbers`` a body holding such a digit run takes the exact reading."""
    if exact_numbers and _LONG_NUMBER.search(body):
        return None
    values: list[Any] = []
    for line in body.split(b"\n"):
        if not line.strip(_JSON_WS_BYTES):
            continue
        try:
            values.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            return None
    return values


def parse_concatenated(body: bytes, exact_numbers: bool = True) -> tuple[list[Any], bool]:
    """Parse concatenated JSON values the way HEC reads an ``/event`` body.

    Returns the values parsed before the first syntax error (or invalid UTF-8) and whether such an
    error occurred; the failing value's number is then ``len(values)``. Without ``exact_numbers`` (a fake that
    keeps nothing) integers beyond 64 bits may be read as floats.
    """
    fast = _parse_lines(body, exact_numbers)
    if fast is not None:
        return fast, False
    try:
        text = body.decode("utf-8")
        broken_encoding = False
    except UnicodeDecodeError as exc:
        text = body[: exc.start].decode("utf-8")
        broken_encoding = True
    values: list[Any] = []
    pos = 0
    end = len(text)
    while True:
        while pos < end and text[pos] in _JSON_WS:
            pos += 1
        if pos >= end:
            return values, broken_encoding
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return values, True
        values.append(value)


def normalize_time(value: Any) -> float:
    """Epoch seconds (microsecond precision) for an envelope ``time``; ``ValueError`` if invalid."""
    if isinstance(value, bool):
        raise ValueError("boolean time")
    numeric_string = isinstance(value, str) and _NUMERIC_TIME_RE.match(value) is not None
    if not (isinstance(value, int | float) or numeric_string):
        raise ValueError(f"invalid time {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"invalid time {value!r}")
    if number >= 1e17:
        number /= 1e9
    elif number >= 1e14:
        number /= 1e6
    elif number >= 1e11:
        number /= 1e3
    return round(number, 6)


def _is_field_scalar(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


def _fields_valid(fields: Any) -> bool:
    if not isinstance(fields, dict):
        return False
    for value in fields.values():
        if _is_field_scalar(value):
            continue
        if isinstance(value, list) and all(_is_field_scalar(item) for item in value):
            continue
        return False
    return True


def _is_metric_fields(fields: Any) -> bool:
    return isinstance(fields, dict) and any(key == "metric_name" or key.startswith("metric_name:") for key in fields)


class SplunkHecFake(FakeServer):
    """Async context manager running a strict fake HEC on ``host`` (127.0.0.1) and an ephemeral port.

    Constructor arguments: ``tokens`` (token -> :class:`TokenPolicy`), ``max_content_length``
    (bytes, wire and decompressed; default 838,860,800), ``ssl_context`` (serve HTTPS),
    ``ack_delay`` (seconds until an ack turns true; ``None`` = only via :meth:`release_acks`),
    ``strict_unknown_keys`` (400 instead of the probed silent stop), ``control_api`` (serve
    ``/__fake__/`` routes), ``host``/``port``.

    Knobs a test may change while the server runs: :attr:`tokens` (or :meth:`add_token`,
    :meth:`disable_token`, :meth:`enable_token`, :meth:`revoke_token`), :attr:`ack_delay`,
    :attr:`health_state` (a key of :data:`HEALTH_CODES`), :attr:`response_delay` (seconds added to
    every answer), :attr:`max_content_length`, and the fault queue (:meth:`fail_next`,
    :meth:`drop_next`, :meth:`delay_next`).

    Records: :attr:`events`, :attr:`requests`, :attr:`dropped_events`, :meth:`ack_status`,
    :meth:`pending_acks`. All accessors return copies and are safe to call from other threads.
    """

    FAULT_ENDPOINTS = FAULT_ENDPOINTS
    DEFAULT_FAULT_ENDPOINT = "ingest"

    def __init__(
        self,
        tokens: Mapping[str, TokenPolicy] | None = None,
        *,
        max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
        ssl_context: ssl.SSLContext | None = None,
        ack_delay: float | None = 0.0,
        strict_unknown_keys: bool = False,
        control_api: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        retain: bool = True,
    ) -> None:
        self._init_server(ssl_context=ssl_context, control_api=control_api, host=host, port=port, retain=retain)
        self.tokens: dict[str, TokenPolicy] = dict(tokens or {})
        self.event_count = 0
        self.max_content_length = max_content_length
        self.ack_delay = ack_delay
        self.strict_unknown_keys = strict_unknown_keys
        self.health_state = "healthy"
        self._events: list[HecEvent] = []
        self._dropped: list[DroppedEvent] = []
        self._channels: dict[str, _Channel] = {}

    # ----------------------------------------------------------------- lifecycle

    def _add_routes(self, app: web.Application) -> None:
        for path in _EVENT_PATHS:
            app.router.add_route("*", path, self._route(("POST",), self._handle_event))
        for path in _RAW_PATHS:
            app.router.add_route("*", path, self._route(("POST",), self._handle_raw))
        app.router.add_route("*", _ACK_PATH, self._route(("POST",), self._handle_ack))
        for path in _HEALTH_PATHS:
            app.router.add_route("*", path, self._route(("GET",), self._handle_health))

    @property
    def event_url(self) -> str:
        """``<url>/services/collector/event``."""
        return self.url + _EVENT_PATHS[0]

    # ----------------------------------------------------------------- records

    @property
    def events(self) -> list[HecEvent]:
        """Indexed events in arrival order."""
        with self._lock:
            return list(self._events)

    @property
    def dropped_events(self) -> list[DroppedEvent]:
        """Objects silently not indexed (unknown envelope key and everything after it)."""
        with self._lock:
            return list(self._dropped)

    def events_in(self, index: str) -> list[HecEvent]:
        """Indexed events of one index."""
        return [event for event in self.events if event.index == index]

    async def wait_for_events(self, count: int, timeout: float = 5.0) -> list[HecEvent]:
        """Wait until at least ``count`` events are indexed; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events
            if len(events) >= count:
                return events
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(events)} of {count} events indexed after {timeout}s")
            await asyncio.sleep(0.005)

    def reset(self) -> None:
        """Forget recorded events, requests, ack state and queued faults (tokens stay)."""
        with self._lock:
            self._events.clear()
            self._dropped.clear()
            self._requests.clear()
            self._faults.clear()
            self._channels.clear()
            self.request_count = self.event_count = 0

    # ----------------------------------------------------------------- tokens

    def add_token(self, token: str, policy: TokenPolicy | None = None) -> None:
        """Register (or replace) a token."""
        with self._lock:
            self.tokens[token] = policy or TokenPolicy()

    def disable_token(self, token: str) -> None:
        """Make ``token`` answer 403 code 1 (Token disabled)."""
        with self._lock:
            self.tokens[token].disabled = True

    def enable_token(self, token: str) -> None:
        """Undo :meth:`disable_token`."""
        with self._lock:
            self.tokens[token].disabled = False

    def revoke_token(self, token: str) -> None:
        """Delete ``token``: later requests answer 403 code 4 (Invalid token)."""
        with self._lock:
            self.tokens.pop(token, None)

    # ----------------------------------------------------------------- acks

    def release_acks(self, channel: str | None = None, ack_ids: list[int] | None = None) -> int:
        """Mark pending acks (all, or of one channel / some ids) as indexed; returns how many."""
        released = 0
        with self._lock:
            for name, state in self._channels.items():
                if channel is not None and name != channel:
                    continue
                for ack_id, entry in state.entries.items():
                    if ack_ids is not None and ack_id not in ack_ids:
                        continue
                    if not entry.released and not entry.reported:
                        entry.released = True
                        released += 1
        return released

    def ack_status(self, channel: str) -> dict[int, str]:
        """State of every ack id issued on ``channel``: ``pending``, ``ready`` or ``reported``."""
        now = time.monotonic()
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                return {}
            status: dict[int, str] = {}
            for ack_id, entry in state.entries.items():
                if entry.reported:
                    status[ack_id] = "reported"
                else:
                    status[ack_id] = "ready" if self._ack_ready(entry, now) else "pending"
            return status

    def pending_acks(self) -> list[tuple[str, int]]:
        """``(channel, ack_id)`` pairs not yet reported true to the client."""
        with self._lock:
            return [
                (name, ack_id)
                for name, state in self._channels.items()
                for ack_id, entry in state.entries.items()
                if not entry.reported
            ]

    def _ack_ready(self, entry: _AckEntry, now: float) -> bool:
        if entry.released:
            return True
        return self.ack_delay is not None and now - entry.created_at >= self.ack_delay

    # ----------------------------------------------------------------- faults

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        code: int | None = None,
        retry_after: int | None = None,
        endpoint: str = "ingest",
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` before any other check.

        ``code`` picks the HEC code (defaults: 503 -> 9 Server is busy, 500 -> 8, 429 -> 26 queue at
        capacity, 200 -> 24 approaching capacity); use 23 for shutting down or 27 for ack channel at
        capacity. A 200 code (24/25) processes the request normally but answers with that code.
        413 answers the size-limit body. A status without HEC code gets a plain-text body, like a
        proxy in front of Splunk would send. ``retry_after`` adds a ``Retry-After`` header.
        ``endpoint``: ``ingest`` (event/raw), ``ack``, ``health`` or ``any``.
        """
        if code is None:
            code = DEFAULT_CODE_FOR_STATUS.get(status)
        if code is not None and HEC_CODES[code][0] != status:
            raise ValueError(f"HEC code {code} is sent with HTTP {HEC_CODES[code][0]}, not {status}")
        self._queue(Fault("status", endpoint, count, status=status, code=code, retry_after=retry_after))

    def _apply_fault(self, request: web.Request, endpoint: str) -> Fault | None:
        """Apply the fault for this request; return it when processing should continue."""
        fault = self._next_fault(request, endpoint)
        if fault is None:
            return None
        if fault.action == "status" and fault.status != 200:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            if fault.status == 413:
                size = len(request[_RECORD_KEY].body)
                raise _Reply(413, _too_large(size, self.max_content_length).body, headers)
            if fault.code is not None:
                raise _Reply(fault.status, hec_body(fault.code), headers)
            raise _Reply(fault.status, _REASONS.get(fault.status, "Error").encode(), headers)
        return fault

    # ----------------------------------------------------------------- http plumbing

    def _route(
        self, methods: tuple[str, ...], handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        allow = ", ".join((*methods, "OPTIONS"))

        async def dispatch(request: web.Request) -> web.StreamResponse:
            if request.method == "OPTIONS":
                return web.Response(status=200, headers={"Allow": allow})
            if request.method not in methods:
                raise _Reply(405, {"text": "Method Not Allowed", "code": 405}, {"Allow": allow})
            return await handler(request)

        return dispatch

    _json_response = staticmethod(_json_response)

    def _http_error(self, exc: web.HTTPException) -> web.Response:
        if isinstance(exc, web.HTTPMethodNotAllowed):
            return _json_response(405, {"text": "Method Not Allowed", "code": 405}, exc.headers)
        return _json_response(404, NOT_FOUND_BODY)

    def _reply_response(self, reply: _Reply) -> web.Response:
        if isinstance(reply.body, bytes):
            return web.Response(
                status=reply.status,
                body=reply.body,
                headers={"Content-Type": "text/plain; charset=UTF-8", **reply.headers},
            )
        return _json_response(reply.status, reply.body, reply.headers)

    def _body_limit(self) -> int:
        return self.max_content_length + 1

    def _authenticate(self, request: web.Request) -> tuple[str, TokenPolicy]:
        header = request.headers.get("Authorization")
        via_query = False
        if header is not None:
            if header.startswith("Splunk "):
                token = header[len("Splunk ") :].strip()
            elif header[:6].lower() == "basic ":
                try:
                    decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    raise _hec_error(3) from None
                _user, sep, token = decoded.partition(":")
                if not sep:
                    raise _hec_error(3)
            else:
                raise _hec_error(3)
            if not token:
                raise _hec_error(3)
        else:
            query_token = request.query.get("token")
            if query_token is None:
                raise _hec_error(2)
            token = query_token
            via_query = True
        with self._lock:
            policy = self.tokens.get(token)
            if policy is None:
                raise _hec_error(4)
            if via_query and not policy.allow_query_string_auth:
                raise _hec_error(16)
            if policy.disabled:
                raise _hec_error(1)
            return token, dataclasses.replace(policy)

    def _decoded_body(self, request: web.Request) -> bytes:
        record: RecordedRequest = request[_RECORD_KEY]
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            decoded = record.body
        elif encoding == "gzip":
            try:
                decoded = gunzip_limited(record.body, self.max_content_length)
            except _TooLarge:
                raise _too_large(self.max_content_length + 1, self.max_content_length) from None
            except ValueError:
                raise _hec_error(6) from None
        else:
            raise _Reply(415, {"text": "Unsupported Media Type", "code": 415})
        record.decoded_body = decoded
        return decoded

    def _check_size(self, request: web.Request) -> None:
        record: RecordedRequest = request[_RECORD_KEY]
        declared = request.content_length
        size = len(record.body)
        if record.body_truncated or size > self.max_content_length:
            raise _too_large(max(size, declared or 0), self.max_content_length)

    @staticmethod
    def _channel(request: web.Request, policy: TokenPolicy) -> str | None:
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if channel is None:
            if policy.ack:
                raise _hec_error(10)
            return None
        if not _GUID_RE.match(channel):
            raise _hec_error(11)
        return channel

    # ----------------------------------------------------------------- handlers

    async def _handle_event(self, request: web.Request) -> web.StreamResponse:
        return self._ingest(request, "event")

    async def _handle_raw(self, request: web.Request) -> web.StreamResponse:
        return self._ingest(request, "raw")

    def _ingest(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        record: RecordedRequest = request[_RECORD_KEY]
        fault = self._apply_fault(request, "ingest")
        self._check_size(request)
        token, policy = self._authenticate(request)
        body = self._decoded_body(request)
        channel = self._channel(request, policy)
        if not body.strip(_JSON_WS.encode()):
            raise _hec_error(5)
        if endpoint == "event":
            accepted, failure, dropped = self._validate_events(body, policy)
        else:
            accepted, failure, dropped = self._raw_events(body, request, policy)
        with self._lock:
            ack_id: int | None = None
            if failure is None and policy.ack and channel is not None:
                state = self._channels.setdefault(channel, _Channel())
                ack_id = state.next_id
                state.next_id += 1
                state.entries[ack_id] = _AckEntry(created_at=time.monotonic())
            self.event_count += len(accepted)
            for position, (envelope, values) in enumerate(accepted if self.retain else ()):
                self._events.append(
                    HecEvent(
                        channel=channel,
                        token=token,
                        ack_id=ack_id,
                        request_seq=record.seq,
                        position=position,
                        endpoint=endpoint,
                        envelope=envelope,
                        received_at=record.received_at,
                        **values,
                    )
                )
            for position, reason, envelope in dropped:
                self._dropped.append(DroppedEvent(record.seq, position, reason, envelope))
        if fault is not None and fault.action == "drop":
            raise _Drop
        if failure is not None:
            raise failure
        code = fault.code if fault is not None and fault.action == "status" and fault.code else 0
        extra: dict[str, Any] = {"ackId": ack_id} if ack_id is not None else {}
        return _json_response(200, hec_body(code, **extra))

    def _validate_events(
        self, body: bytes, policy: TokenPolicy
    ) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], _Reply | None, list[tuple[int, str, Any]]]:
        """Validate a concatenated batch: (accepted prefix, error reply or None, silently dropped)."""
        values, syntax_error = parse_concatenated(body, exact_numbers=self.retain)
        accepted: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for number, obj in enumerate(values):
            outcome = self._validate_envelope(obj, policy)
            if isinstance(outcome, int):
                return accepted, _hec_error(outcome, **{"invalid-event-number": number}), []
            unknown = sorted(set(obj) - ENVELOPE_KEYS)
            if unknown:
                if self.strict_unknown_keys:
                    return accepted, _hec_error(6, **{"invalid-event-number": number}), []
                reason = "unknown envelope key(s): " + ", ".join(unknown)
                dropped = [(number, reason, obj)]
                dropped += [
                    (later, "after an unindexed object", values[later]) for later in range(number + 1, len(values))
                ]
                return accepted, None, dropped
            accepted.append((obj, outcome))
        if syntax_error:
            return accepted, _hec_error(6, **{"invalid-event-number": len(values)}), []
        return accepted, None, []

    @staticmethod
    def _validate_envelope(obj: Any, policy: TokenPolicy) -> int | dict[str, Any]:
        """HEC error code for a bad envelope, else the event's effective values."""
        if not isinstance(obj, dict):
            return 6
        fields = obj.get("fields", {})
        if "event" not in obj:
            if not _is_metric_fields(fields):
                return 12
            event: Any = None
        else:
            event = obj["event"]
            if event is None or event is False:
                return 6
            if isinstance(event, str) and not event.strip():
                return 13
        event_time: float | None = None
        if "time" in obj:
            try:
                event_time = normalize_time(obj["time"])
            except ValueError:
                return 6
        for key in ("host", "source", "sourcetype", "index"):
            if key in obj and not isinstance(obj[key], str):
                return 6
        index = obj.get("index", policy.effective_default_index())
        if not index or not policy.index_allowed(index):
            return 7
        if "fields" in obj and not _fields_valid(fields):
            return 15
        return {
            "event": event,
            "time": event_time,
            "host": obj.get("host", policy.default_host),
            "source": obj.get("source", policy.default_source),
            "sourcetype": obj.get("sourcetype", policy.default_sourcetype),
            "index": index,
            "fields": dict(fields),
        }

    @staticmethod
    def _raw_events(
        body: bytes, request: web.Request, policy: TokenPolicy
    ) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], _Reply | None, list[tuple[int, str, Any]]]:
        """One event per non-blank line, metadata from the query string."""
        index = request.query.get("index", policy.effective_default_index())
        if not index or not policy.index_allowed(index):
            return [], _hec_error(7), []
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return [], _hec_error(6), []
        accepted: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            values = {
                "event": line,
                "time": None,
                "host": request.query.get("host", policy.default_host),
                "source": request.query.get("source", policy.default_source),
                "sourcetype": request.query.get("sourcetype", policy.default_sourcetype),
                "index": index,
                "fields": {},
            }
            accepted.append(({"event": line}, values))
        return accepted, None, []

    async def _handle_ack(self, request: web.Request) -> web.StreamResponse:
        fault = self._apply_fault(request, "ack")
        self._check_size(request)
        _token, policy = self._authenticate(request)
        if not policy.ack:
            raise _hec_error(14)
        channel = self._channel(request, policy)
        assert channel is not None
        body = self._decoded_body(request)
        if not body.strip(_JSON_WS.encode()):
            raise _hec_error(5)
        try:
            payload = _DECODER.decode(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise _hec_error(6) from None
        ids = payload.get("acks") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in ids
        ):
            raise _hec_error(6)
        now = time.monotonic()
        result: dict[str, bool] = {}
        with self._lock:
            state = self._channels.get(channel)
            for ack_id in ids:
                entry = state.entries.get(ack_id) if state is not None else None
                ready = entry is not None and not entry.reported and self._ack_ready(entry, now)
                if ready and entry is not None:
                    entry.reported = True
                result[str(ack_id)] = ready
        if fault is not None and fault.action == "drop":
            raise _Drop
        return _json_response(200, {"acks": result})

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        fault = self._apply_fault(request, "health")
        code = HEALTH_CODES[self.health_state]
        if fault is not None and fault.action == "drop":
            raise _Drop
        return _json_response(HEC_CODES[code][0], hec_body(code))

    def _control_actions(
        self, args: dict[str, Any]
    ) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
        """``GET /__fake__/events`` (indexed events), ``/stats``, ``/dropped``, ``/requests`` (summaries), ``/acks``
        (pending ``[channel, id]``); ``POST /__fake__/release_acks`` (``{"channel"?, "ack_ids"?}``), ``/fail``
        (kwargs of :meth:`fail_next`), ``/drop`` (kwargs of :meth:`drop_next`), ``/delay`` (kwargs of
        :meth:`delay_next`), ``/config`` (``health_state``, ``ack_delay``, ``response_delay``), ``/token``
        (``{"token", "action": disable|enable|revoke}``), ``/reset``."""
        readers: dict[str, Callable[[], Any]] = {
            "events": lambda: [event.as_dict() for event in self.events],
            "stats": lambda: {"events": self.event_count, "requests": self.request_count},
            "dropped": lambda: [dataclasses.asdict(item) for item in self.dropped_events],
            "acks": lambda: [list(pair) for pair in self.pending_acks()],
        }
        writers: dict[str, Callable[[], Any]] = {
            "release_acks": lambda: self.release_acks(**args),
            "fail": lambda: self.fail_next(**args),
            "drop": lambda: self.drop_next(**args),
            "config": lambda: self._configure(**args),
            "token": lambda: self._token_action(**args),
        }
        return readers, writers

    def _control_not_found(self) -> web.Response:
        return _json_response(404, NOT_FOUND_BODY)

    def _configure(
        self,
        health_state: str | None = None,
        ack_delay: float | str | None = "keep",
        response_delay: float | None = None,
    ) -> None:
        if health_state is not None:
            if health_state not in HEALTH_CODES:
                raise ValueError(f"health_state must be one of {sorted(HEALTH_CODES)}")
            self.health_state = health_state
        if ack_delay != "keep":
            self.ack_delay = None if ack_delay is None else float(ack_delay)
        if response_delay is not None:
            self.response_delay = float(response_delay)

    def _token_action(self, token: str, action: str) -> None:
        actions = {"disable": self.disable_token, "enable": self.enable_token, "revoke": self.revoke_token}
        actions[action](token)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until SIGTERM/SIGINT, first stdout line is the URL."""
    parser = server_parser("python -m tests.fakes.splunk_hec", "Fake Splunk HEC")
    parser.add_argument("--token", action="append", required=True, help="accepted token (repeatable)")
    parser.add_argument("--index", action="append", help="allowed index (repeatable); default: any")
    parser.add_argument("--ack", action="store_true", help="enable indexer acknowledgement")
    parser.add_argument("--ack-delay", type=float, default=0.0, help="seconds until acks turn true")
    parser.add_argument("--manual-acks", action="store_true", help="acks only via /__fake__/release_acks")
    parser.add_argument("--allow-query-auth", action="store_true", help="accept ?token=")
    parser.add_argument("--max-content-length", type=int, default=DEFAULT_MAX_CONTENT_LENGTH)
    args = parser.parse_args(argv)
    tokens = {
        token: TokenPolicy(
            indexes=args.index or None,
            ack=args.ack,
            allow_query_string_auth=args.allow_query_auth,
        )
        for token in args.token
    }
    fake = SplunkHecFake(
        tokens,
        max_content_length=args.max_content_length,
        ack_delay=None if args.manual_acks else args.ack_delay,
        **server_options(args),
    )
    return serve_until_signalled(fake)


if __name__ == "__main__":
    sys.exit(main())
