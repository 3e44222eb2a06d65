"""What the strict destination fakes share: recorded requests, queued faults, the recording middleware, lifecycle
and the process-mode control API. Each fake (:mod:`tests.fakes.splunk_hec`, :mod:`tests.fakes.datadog`) subclasses
:class:`FakeServer` and adds its routes, its protocol checks and its error bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from aiohttp import web
from isal import isal_zlib
from multidict import CIMultiDict, CIMultiDictProxy

from collector.runtime import tune_gc

CONTROL_PREFIX = "/__fake__/"


@dataclass
class RecordedRequest:
    """One HTTP request as received (headers unmodified) and the answer it got.

    ``body`` is the wire body (possibly compressed), ``decoded_body`` the decompressed body when the fake got that
    far. ``status``/``response_body`` are ``None`` and ``dropped`` true when fault injection dropped the connection.
    """

    seq: int
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    received_at: float
    body_truncated: bool = False
    decoded_body: bytes | None = None
    status: int | None = None
    response_body: bytes | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    dropped: bool = False

    def response_json(self) -> Any:
        """The response body parsed as JSON."""
        return json.loads(self.response_body or b"null")

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (headers, status, response) for the control API."""
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers.items()),
            "body_size": len(self.body),
            "status": self.status,
            "response": (self.response_body or b"").decode("utf-8", "replace"),
            "dropped": self.dropped,
        }


@dataclass
class Fault:
    """A queued failure: ``action`` is ``"status"``, ``"drop"`` or ``"delay"``; ``code`` is a protocol code (HEC)."""

    action: str
    endpoint: str
    remaining: int
    status: int = 0
    code: int | None = None
    retry_after: int | None = None
    seconds: float = 0.0
    after_processing: bool = False


class Reply(Exception):
    """Raised inside handlers to answer immediately with ``status`` and a JSON (or bytes) body."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class Drop(Exception):
    """Raised inside handlers to drop the connection without an answer."""


RECORD_KEY = web.RequestKey("ccbridge_fake_record", RecordedRequest)
DELAY_KEY = web.RequestKey("ccbridge_fake_delay", float)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files (process mode), or None without a certificate."""
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def server_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The command line every fake shares in process mode: ``--host``, ``--port``, ``--no-retain``, ``--tls-*``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-retain", action="store_true", help="count what is accepted without keeping it")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    return parser


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`FakeServer` keyword arguments of :func:`server_parser`'s options (control API on)."""
    return {
        "ssl_context": build_ssl_context(args.tls_cert, args.tls_key),
        "control_api": True,
        "host": args.host,
        "port": args.port,
        "retain": not args.no_retain,
    }


INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, isal_zlib.error)


def decompressobj(wbits: int) -> Any:
    """An inflater for a gzip (``wbits=31``) or zlib (``wbits=15``) stream with zlib's interface: ISA-L's, three
    times faster than zlib's on the fakes' request bodies, and as strict (a wrong CRC or length trailer is an error;
    a stream that is not deflate never reaches ``eof``, which the fakes refuse as truncated)."""
    return isal_zlib.decompressobj(wbits=wbits)


def serve_until_signalled(fake: FakeServer) -> int:
    """Run ``fake`` until SIGTERM/SIGINT; the first stdout line is its URL.

    As a process of its own the fake collects young objects less often (as the bridge does): it parses thousands of
    acyclic JSON objects per request, which the default threshold would scan for cycles many times a second.
    """

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        async with fake:
            sys.stdout.write(fake.url + "\n")
            sys.stdout.flush()
            await stop.wait()

    tune_gc()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


class FakeServer:
    """An aiohttp server that records every request and answers queued faults before the protocol's own checks.

    Subclasses set :attr:`FAULT_ENDPOINTS`, call :meth:`_init_server` from ``__init__`` and implement
    :meth:`_add_routes`, :meth:`_json_response`, :meth:`_http_error`, :meth:`_control_actions` and
    :meth:`_control_not_found`; they may override :meth:`_body_limit` and :meth:`_reply_response`.
    """

    FAULT_ENDPOINTS: ClassVar[frozenset[str]] = frozenset({"any"})

    def _init_server(
        self, *, ssl_context: ssl.SSLContext | None, control_api: bool, host: str, port: int, retain: bool
    ) -> None:
        self.ssl_context = ssl_context
        self.control_api = control_api
        self.retain = retain  # False (benchmarks): validate and count everything, keep no request or payload
        self.request_count = 0
        self.response_delay = 0.0
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # ----------------------------------------------------------------- hooks

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @staticmethod
    def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
        raise NotImplementedError

    def _http_error(self, exc: web.HTTPException) -> web.Response:
        """The answer to a request no route takes (404) or with a method a route refuses (405)."""
        raise NotImplementedError

    def _control_actions(
        self, args: dict[str, Any]
    ) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
        """The control API's readers (GET) and writers (POST) beyond ``requests``, ``delay`` and ``reset``."""
        raise NotImplementedError

    def _control_not_found(self) -> web.Response:
        raise NotImplementedError

    def _body_limit(self) -> int:
        """Bytes of a request body kept (the rest is drained and the body marked truncated)."""
        return 64 * 1024 * 1024

    def _reply_response(self, reply: Reply) -> web.Response:
        return self._json_response(reply.status, reply.body, reply.headers)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind and start serving."""
        app = web.Application(middlewares=[self._middleware], client_max_size=2**62)
        self._add_routes(app)
        if self.control_api:
            app.router.add_route("*", CONTROL_PREFIX + "{action}", self._control)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        scheme = "https" if self.ssl_context is not None else "http"
        self._url = f"{scheme}://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving and close connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (``https`` with an SSL context)."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (including failed, faulted and dropped ones)."""
        with self._lock:
            return list(self._requests)

    # ----------------------------------------------------------------- faults

    DEFAULT_FAULT_ENDPOINT: ClassVar[str] = "any"

    def drop_next(self, count: int = 1, *, endpoint: str | None = None, after_processing: bool = False) -> None:
        """Close the connection of the next ``count`` matching requests without answering.

        With ``after_processing`` the request is processed first (the payload accepted and recorded, an ack id
        issued) and only the answer is lost, as when a load balancer cuts a slow response. ``endpoint`` defaults
        to :attr:`DEFAULT_FAULT_ENDPOINT`.
        """
        where = endpoint or self.DEFAULT_FAULT_ENDPOINT
        self._queue(Fault("drop", where, count, after_processing=after_processing))

    def delay_next(self, seconds: float, count: int = 1, *, endpoint: str | None = None) -> None:
        """Process the next ``count`` matching requests normally but answer ``seconds`` later."""
        self._queue(Fault("delay", endpoint or self.DEFAULT_FAULT_ENDPOINT, count, seconds=seconds))

    def _next_fault(self, request: web.Request, endpoint: str) -> Fault | None:
        """Take the fault for this request: a drop happens now (unless after processing), a delay is noted for the
        answer; the fault is returned for the protocol's own handling of ``status`` faults."""
        fault = self._take_fault(endpoint)
        if fault is None:
            return None
        if fault.action == "drop" and not fault.after_processing:
            raise Drop
        if fault.action == "delay":
            request[DELAY_KEY] = fault.seconds
        return fault

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def _queue(self, fault: Fault) -> None:
        if fault.endpoint not in self.FAULT_ENDPOINTS:
            raise ValueError(f"endpoint must be one of {sorted(self.FAULT_ENDPOINTS)}")
        if fault.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in ("any", endpoint):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return dataclasses.replace(fault)
        return None

    # ----------------------------------------------------------------- http plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX) and self.control_api:
            return await handler(request)
        body, truncated = await self._read_body(request)
        with self._lock:
            record = RecordedRequest(
                seq=self.request_count,
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                body_truncated=truncated,
                received_at=time.time(),
            )
            self.request_count += 1
            if self.retain:
                self._requests.append(record)
        request[RECORD_KEY] = record
        try:
            response = await handler(request)
        except Reply as reply:
            response = self._reply_response(reply)
        except Drop:
            record.dropped = True
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            response = self._http_error(exc)
        delay = self.response_delay + float(request.get(DELAY_KEY, 0.0))
        if delay > 0:
            await asyncio.sleep(delay)
        record.status = response.status
        if isinstance(response, web.Response):
            record.response_body = response.body if isinstance(response.body, bytes) else b""
        record.response_headers = dict(response.headers.items())
        return response

    async def _read_body(self, request: web.Request) -> tuple[bytes, bool]:
        """Read the body, keeping at most :meth:`_body_limit` bytes (the rest is drained)."""
        if not request.body_exists:
            return b"", False
        keep = self._body_limit()
        chunks: list[bytes] = []
        kept = 0
        truncated = False
        async for chunk in request.content.iter_chunked(1 << 16):
            if kept < keep:
                piece = chunk[: keep - kept]
                chunks.append(piece)
                kept += len(piece)
                truncated = truncated or len(piece) < len(chunk)
            else:
                truncated = True
        return b"".join(chunks), truncated

    # ----------------------------------------------------------------- control API

    def reset(self) -> None:
        raise NotImplementedError

    async def _control(self, request: web.Request) -> web.StreamResponse:
        """Control API for process mode: ``GET /__fake__/<reader>``, ``POST /__fake__/<writer>`` with JSON kwargs."""
        action = request.match_info["action"]
        args: dict[str, Any] = {}
        if request.method == "POST" and request.body_exists:
            args = json.loads(await request.read() or b"{}")
        readers, writers = self._control_actions(args)
        readers = {"requests": lambda: [item.summary() for item in self.requests], **readers}
        writers = {"delay": lambda: self.delay_next(**args), "reset": self.reset, **writers}
        try:
            if request.method == "GET" and action in readers:
                return self._json_response(200, readers[action]())
            if request.method == "POST" and action in writers:
                return self._json_response(200, {"result": writers[action]()})
        except (TypeError, ValueError, KeyError) as exc:
            return self._json_response(400, {"error": str(exc)})
        return self._control_not_found()
