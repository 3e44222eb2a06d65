"""OTLP/HTTP receiver: ``POST /v1/logs``, ``/v1/metrics``, ``/v1/traces`` on aiohttp.

Accepts ``application/x-protobuf`` and ``application/json`` (OTLP/JSON), ``Content-Encoding: gzip`` (or none),
``Content-Length`` or chunked framing. The body is capped at ``max_request_body_size`` on the wire and at
``max_decompressed_size`` after gunzip, so a gzip bomb is refused with 413 before it is inflated.

Every client has deadlines (:class:`GuardedRequestHandler`): its request headers must arrive within
``header_timeout`` of their first byte, an idle keep-alive connection is closed after ``idle_timeout``, and a body
must arrive within ``body_timeout`` and, after a grace of :data:`BODY_RATE_GRACE_S`, at ``min_body_rate`` bytes a
second at least; a request past its deadline is answered ``408`` and releases the in-flight budget it held.
Malformed or oversized request heads are answered with a fixed ``400``/``431`` text and one log line that never
shows what the client sent.

Success is ``200`` with an empty ``Export*ServiceResponse`` in the request's encoding, sent only after the data is
committed to the durable store. Failures are answered per :mod:`collector.receivers.status` with a ``google.rpc.Status``
body (protobuf or JSON, following the request) whose message names the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import ClientConnectionResetError, ClientPayloadError, web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from collector.config import HttpReceiverConfig, parse_endpoint
from collector.processing.decode import DECODERS, DecodeError
from collector.receivers.auth import server_ssl_context
from collector.receivers.context import ReceiverContext
from collector.receivers.inflight import Held
from collector.receivers.status import (
    ClientGone,
    PayloadTooLarge,
    ReceiverError,
    RequestTimeout,
    ShuttingDown,
    UnsupportedEncoding,
    UnsupportedMediaType,
    classify,
    encode_status,
)
from collector.telemetry.logs import fields

log = logging.getLogger(__name__)

SIGNAL_PATHS = {"/v1/logs": "logs", "/v1/metrics": "metrics", "/v1/traces": "traces"}
MEDIA_TYPES = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
READ_CHUNK = 256 * 1024
BODY_RATE_GRACE_S = 5.0
"""Seconds a body may take before ``min_body_rate`` applies (connection ramp-up, a client's GC pause)."""
HEAD_TOO_LARGE = b"request header fields too large\n"
HEAD_MALFORMED = b"malformed HTTP request\n"
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 38\r\n\r\n"
    b"request headers not received in time\r\n"
)

CLIENT_GONE_ERRORS = (ConnectionError, ClientPayloadError, ClientConnectionResetError)
"""What reading a body raises when the client disconnected in the middle of it."""

Authenticator = Callable[[web.Request], Awaitable[str | None]]


def media_of(content_type: str) -> str:
    """``protobuf`` or ``json`` for a Content-Type header, else :class:`UnsupportedMediaType`."""
    base = content_type.split(";", 1)[0].strip().lower()
    media = MEDIA_TYPES.get(base)
    if media is None:
        shown = base or "(none)"
        raise UnsupportedMediaType(
            f"unsupported Content-Type {shown!r}; OTLP/HTTP accepts application/x-protobuf or application/json"
        )
    return media


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body (all members), refusing output over ``limit`` bytes without inflating further."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, limit - len(out) + 1)
        except zlib.error as exc:
            raise DecodeError(f"body is not valid gzip: {exc}") from None
        out += chunk
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        if not d.eof:
            raise DecodeError("gzip body is truncated")
        rest = d.unused_data
        if rest and not rest.startswith(b"\x1f\x8b"):
            raise DecodeError("body is not valid gzip: trailing data after the last gzip member")
    return bytes(out)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a header deadline and answers to bad request heads that echo nothing.

    aiohttp itself closes idle keep-alive connections (``keepalive_timeout``: our ``idle_timeout``) but has no
    deadline for request headers, and answers a malformed head with a ``400`` whose body quotes the offending bytes
    (a presented credential, for an oversized ``Authorization`` header) after logging it at ERROR with a traceback.
    """

    header_timeout: float = 10.0
    on_refused: Callable[[str], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        idle = not getattr(self, "_request_in_progress", False) and not self._messages
        super().data_received(data)
        if self._messages or getattr(self, "_request_count", 0) != self._head_count:
            self._head_count = getattr(self, "_request_count", 0)
            self._cancel_head_timer()
        elif data and idle and self._head_timer is None:
            # the first bytes of a request head: all of it must follow within header_timeout
            self._head_timer = self._loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self._messages:
            return
        log.debug("closed a connection whose request headers did not arrive within %.0fs", self.header_timeout)
        if self.on_refused is not None:
            self.on_refused("timeout")
        transport.write(_TIMEOUT_408)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in str(getattr(exc, "message", ""))
        )
        code, text, reason = (
            (431, HEAD_TOO_LARGE, "header_too_large") if too_large else (400, HEAD_MALFORMED, "bad_request")
        )
        log.warning(
            "refused a %s request head from %s (%d)", "too large" if too_large else "malformed", request.remote, code
        )
        if self.on_refused is not None:
            self.on_refused(reason)
        resp = web.Response(status=code, body=text, content_type="text/plain")
        resp.force_close()
        return resp


class _GuardedServer(web.Server):
    """An aiohttp :class:`~aiohttp.web.Server` whose connections are :class:`GuardedRequestHandler`s."""

    handler_class: type[GuardedRequestHandler] = GuardedRequestHandler

    def __call__(self) -> RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


class OtlpHttpReceiver:
    """The aiohttp application and its listening site."""

    def __init__(
        self, cfg: HttpReceiverConfig, ctx: ReceiverContext, *, authenticate: Authenticator | None = None
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.authenticate = authenticate
        self.accepting = True
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_request_body_size)
        for path in SIGNAL_PATHS:
            app.router.add_route("*", path, self.handle)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def ssl_context(self) -> ssl.SSLContext | None:
        return server_ssl_context(self.cfg.tls)

    async def start(self) -> None:
        host, port = parse_endpoint(self.cfg.endpoint)
        self._runner = web.AppRunner(
            self.app(),
            auto_decompress=False,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=float(self.cfg.idle_timeout),
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        metrics = self.ctx.metrics

        class Handler(GuardedRequestHandler):
            header_timeout = float(self.cfg.header_timeout)

            @staticmethod
            def on_refused(reason: str) -> None:
                metrics.refused.labels("unknown", "http", reason).inc()

        server.__class__ = type("GuardedServer", (_GuardedServer,), {"handler_class": Handler})
        site = web.TCPSite(self._runner, host, port, reuse_port=self.ctx.reuse_port, ssl_context=self.ssl_context())
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("OTLP/HTTP receiver listening on %s:%s", host, self.port)

    async def stop(self) -> None:
        self.accepting = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def not_found(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "code": 5,
                "message": f"unknown path {request.path}; OTLP/HTTP paths are /v1/logs, /v1/metrics and /v1/traces",
            },
            status=404,
        )

    async def _read_body(self, request: web.Request, held: Held) -> bytes:
        """The body as it arrives, each chunk taken from the in-flight budget as it is read; refused once it passes
        the limit (a declared size over it is refused earlier, in :meth:`_process`), and ``408`` once it is past
        ``body_timeout`` or slower than ``min_body_rate`` after :data:`BODY_RATE_GRACE_S`."""
        limit = self.cfg.max_request_body_size
        rate = float(self.cfg.min_body_rate)
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + float(self.cfg.body_timeout)
        buf = bytearray()
        while True:
            until = deadline if rate <= 0 else min(deadline, start + BODY_RATE_GRACE_S + len(buf) / rate)
            try:
                async with asyncio.timeout_at(until):
                    chunk = await request.content.read(READ_CHUNK)
                    if chunk and len(buf) + len(chunk) > held.size:
                        await held.take(len(buf) + len(chunk))
            except TimeoutError:
                elapsed = loop.time() - start
                raise RequestTimeout(
                    f"request body too slow: {len(buf)} bytes in {elapsed:.1f}s (the limits are "
                    f"{float(self.cfg.body_timeout):g}s in all and {int(rate)} bytes/s)"
                ) from None
            except CLIENT_GONE_ERRORS as exc:
                raise ClientGone(f"the client left while sending its body ({type(exc).__name__})") from None
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return bytes(buf)

    def _decode(self, signal: str, media: str, body: bytes) -> Iterable[Any]:
        try:
            return DECODERS[(signal, media)](body, self.ctx.max_depth)
        except RecursionError:
            raise DecodeError("body is nested too deeply") from None

    async def _process(
        self, request: web.Request, signal: str, media: str, encoding: str, identity: str | None
    ) -> None:
        """Read, decode and store one body within the in-flight budget, which it takes before reading (see
        :mod:`collector.receivers.inflight`); the body is dropped as soon as it is decoded."""
        declared = request.content_length
        limit = self.cfg.max_request_body_size
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        first = min(declared, READ_CHUNK) if declared is not None else READ_CHUNK
        owner = identity if identity else request.transport
        async with self.ctx.inflight.hold(first, owner) as held:
            if request.transport is None or request.transport.is_closing():
                raise ClientGone("the client closed the connection while the request waited for its turn")
            if not self.accepting:
                raise ShuttingDown("the bridge is shutting down; retry against another instance or later")
            body = await self._read_body(request, held)
            if encoding in ("gzip", "x-gzip"):
                body = gunzip_capped(body, self.cfg.max_decompressed_size)
                held.grow_to(held.size + len(body))
            items = self._decode(signal, media, body)
            size = len(body)
            del body
            stored = await self.ctx.pipeline.consume(signal, items, "http", identity, size)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "OTLP/HTTP %s request from %s: %d records (%d new), %d metric points, %d spans stored",
                    signal,
                    request.remote,
                    stored.records,
                    stored.new_records,
                    stored.metric_points,
                    stored.spans,
                    extra=fields(transport="http", signal=signal, peer=request.remote, records=stored.new_records),
                )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        signal = SIGNAL_PATHS[request.path]
        if request.method != "POST":
            return web.json_response(
                {"code": 12, "message": f"method {request.method} not allowed on {request.path}; use POST"},
                status=405,
                headers={"Allow": "POST"},
            )
        started = time.perf_counter()
        media = "json"
        try:
            media = media_of(request.headers.get("Content-Type", ""))
            if not self.accepting:
                raise ShuttingDown("the bridge is shutting down; retry against another instance or later")
            identity = await self.authenticate(request) if self.authenticate is not None else None
            if self.ctx.admit is not None:
                self.ctx.admit(signal)
            encoding = request.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity", "gzip", "x-gzip"):
                raise UnsupportedEncoding(
                    f"unsupported Content-Encoding {encoding!r}; OTLP/HTTP accepts gzip or no encoding"
                )
            await self._process(request, signal, media, encoding, identity)
        except Exception as exc:
            resp = self._error(exc, signal, media, request)
            if isinstance(exc, RequestTimeout | ClientGone):
                # the rest of the body is neither read nor waited for (aiohttp would linger reading it): answer,
                # then end the connection
                with contextlib.suppress(Exception):
                    await resp.prepare(request)
                    await resp.write_eof()
                request.protocol.force_close()
            return resp
        finally:
            self.ctx.metrics.request_latency.labels(signal, "http").observe(time.perf_counter() - started)
        if media == "protobuf":
            return web.Response(body=b"", content_type="application/x-protobuf")
        return web.Response(body=b"{}", content_type="application/json")

    def _error(self, exc: Exception, signal: str, media: str, request: web.Request) -> web.Response:
        answer = classify(exc, self.ctx.storage_retry_after)
        self.ctx.metrics.refused.labels(signal, "http", answer.reason).inc()
        if isinstance(exc, ClientGone):  # counted; under the overload that causes it, a line each would flood the log
            log.debug("dropped %s request from %s: %s", signal, request.remote, answer.message)
        elif isinstance(exc, ReceiverError | DecodeError):
            log.warning(
                "refused %s request from %s: %s (%s)",
                signal,
                request.remote,
                answer.message,
                answer.http_status,
            )
        elif answer.http_status == 503:
            log.warning("refused %s request: %s", signal, answer.message)
        else:
            log.exception("internal error on %s request", signal, exc_info=exc)
        headers = {}
        if answer.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(answer.retry_after)))
        if answer.http_status == 401:
            headers["WWW-Authenticate"] = getattr(exc, "challenge", "Bearer")
        code = answer.grpc_code.value[0]
        if media == "protobuf":
            resp = web.Response(
                status=answer.http_status,
                body=encode_status(code, answer.message),
                content_type="application/x-protobuf",
                headers=headers,
            )
        else:
            resp = web.Response(
                status=answer.http_status,
                body=orjson.dumps({"code": code, "message": answer.message}),
                content_type="application/json",
                headers=headers,
            )
        if isinstance(exc, RequestTimeout | ClientGone):
            resp.force_close()
        return resp
