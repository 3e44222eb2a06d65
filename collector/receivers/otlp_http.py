"""OTLP/HTTP receiver: ``POST /v1/logs``, ``/v1/metrics``, ``/v1/traces`` on aiohttp.

Accepts ``application/x-protobuf`` and ``application/json`` (OTLP/JSON), ``Content-Encoding: gzip`` (or none),
``Content-Length`` or chunked framing. The body is capped at ``max_request_body_size`` on the wire and at
``max_decompressed_size`` after gunzip, so a gzip bomb is refused with 413 before it is inflated.

Success is ``200`` with an empty ``Export*ServiceResponse`` in the request's encoding, sent only after the data is
committed to the durable store. Failures are answered per :mod:`collector.receivers.status` with a ``google.rpc.Status``
body (protobuf or JSON, following the request) whose message names the problem.
"""

from __future__ import annotations

import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from collector.config import HttpReceiverConfig, parse_endpoint
from collector.processing.decode import DECODERS, DecodeError
from collector.receivers.claude_hooks import PATH as HOOKS_PATH
from collector.receivers.claude_hooks import ClaudeHooksEndpoint
from collector.receivers.context import ReceiverContext
from collector.receivers.status import (
    ClientGone,
    PayloadTooLarge,
    ReceiverError,
    ShuttingDown,
    UnsupportedEncoding,
    UnsupportedMediaType,
    classify,
)

log = logging.getLogger(__name__)

SIGNAL_PATHS = {"/v1/logs": "logs", "/v1/metrics": "metrics", "/v1/traces": "traces"}
HOOKS_DRAIN_S = 10.0  # at shutdown, how long hook records answered before their commit may take to commit
MEDIA_TYPES = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
READ_CHUNK = 256 * 1024

Authenticator = Callable[[web.Request], Awaitable[str | None]]


def encode_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` protobuf with ``code`` and ``message`` (fields 1 and 2)."""
    msg = message.encode("utf-8", "replace")
    out = bytearray()
    if code:
        out.append(0x08)
        out += _varint(code)
    out.append(0x12)
    out += _varint(len(msg))
    out += msg
    return bytes(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


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
        self.hooks = ClaudeHooksEndpoint(ctx, authenticate, on_error=self._error)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_request_body_size)
        for path in SIGNAL_PATHS:
            app.router.add_route("*", path, self.handle)
        app.router.add_route("*", HOOKS_PATH, self.hooks.handle)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def ssl_context(self) -> ssl.SSLContext | None:
        tls = self.cfg.tls
        if not tls.enabled:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ctx.load_verify_locations(tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def start(self) -> None:
        host, port = parse_endpoint(self.cfg.endpoint)
        self._runner = web.AppRunner(self.app(), auto_decompress=False, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=self.ctx.reuse_port, ssl_context=self.ssl_context())
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("OTLP/HTTP receiver listening on %s:%s", host, self.port)

    async def stop(self) -> None:
        self.accepting = False
        await self.hooks.drain(HOOKS_DRAIN_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def not_found(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "code": 5,
                "message": f"unknown path {request.path}; OTLP/HTTP paths are /v1/logs, /v1/metrics and /v1/traces"
                f" (and {HOOKS_PATH} for Claude Code HTTP hooks)",
            },
            status=404,
        )

    async def _read_body(self, request: web.Request) -> bytes:
        """The body as it arrives, refused once it passes the limit (a declared size over it is refused earlier,
        in :meth:`_process`, before the request waits for its turn)."""
        limit = self.cfg.max_request_body_size
        buf = bytearray()
        while True:
            chunk = await request.content.read(READ_CHUNK)
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
        async with self.ctx.inflight.hold(declared if declared is not None else READ_CHUNK) as held:
            if request.transport is None or request.transport.is_closing():
                raise ClientGone("the client closed the connection while the request waited for its turn")
            if not self.accepting:
                raise ShuttingDown("the bridge is shutting down; retry against another instance or later")
            body = await self._read_body(request)
            held.grow_to(len(body))
            if encoding in ("gzip", "x-gzip"):
                body = gunzip_capped(body, self.cfg.max_decompressed_size)
                held.grow_to(held.size + len(body))
            items = self._decode(signal, media, body)
            del body
            await self.ctx.pipeline.consume(signal, items, "http", identity)

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
            return self._error(exc, signal, media, request)
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
            return web.Response(
                status=answer.http_status,
                body=encode_status(code, answer.message),
                content_type="application/x-protobuf",
                headers=headers,
            )
        return web.Response(
            status=answer.http_status,
            body=orjson.dumps({"code": code, "message": answer.message}),
            content_type="application/json",
            headers=headers,
        )
