"""A strict, programmable HTTP sink standing in for a generic ``http`` destination (Logstash, Vector, a webhook).

What it accepts (anything else is refused, so an exporter bug shows up as a failed request, not a silent pass):

* ``POST <path>`` only (default ``/ingest``): another path is 404, another method 405.
* ``Content-Type: application/x-ndjson`` (one JSON object per line, each line ending in ``\\n``, no blank lines) or
  ``application/json`` (one JSON array of objects); parameters such as ``; charset=utf-8`` are allowed. Another media
  type is 415.
* ``Content-Encoding: gzip`` (decoded; corrupt gzip is 400) or none/``identity``; another coding is 415.
* Every record must be a JSON object with a non-empty string ``id``; an empty body, a malformed line or a record
  without ``id`` is 400 and nothing of that request is kept.

What it records: every request (:class:`RequestLog`: arrival time, answered status, the record ids it carried,
headers, sizes) and, for requests answered 2xx only, every record by id with its arrival times
(:attr:`HttpSink.received`), so a test can count deliveries and duplicates per id.

Programmable behaviour (in-process via methods, or over the control API):

* :meth:`HttpSink.fail_for` -- answer ``status`` (default 503, ``Retry-After: 2``) for the next N seconds;
* :meth:`HttpSink.reject_records` -- answer 400 to any request that carries one of the given record ids;
* :meth:`HttpSink.fail_requests` -- answer ``status`` to the k-th request(s) (1-based, counting every request);
* :meth:`HttpSink.throttle_with_date` -- 429 with an HTTP-date ``Retry-After`` for the next N seconds;
* :meth:`HttpSink.set_delay` -- slow answers (the delay happens before the answer, after the body was read);
* :meth:`HttpSink.stop` / :meth:`HttpSink.start` -- down means *not listening* (connection refused); ``start``
  binds the same port again.

In process::

    async with HttpSink() as sink:
        sink.fail_for(30, status=503, retry_after="2")
        ... point an exporter at sink.url ...
        await sink.wait_for_ids(ids, timeout=10)

As a process (for tests that run the bridge and the sink as separate processes)::

    python -m tests.fakes.http_sink --port 0 [--control-port 0] [--path /ingest]

The first stdout line is the sink URL, the second the control base URL. The control API listens on its own port so
it stays reachable while the sink is down: ``GET /state`` (requests and received records, times as Unix seconds),
``POST /rules`` (JSON: ``{"status": 503, "retry_after": "2", "seconds": 30}``, ``{"status": 400,
"record_ids": [...]}``, ``{"status": 400, "nth": [3]}``, ``{"status": 429, "seconds": 5, "retry_after_date": 3}``),
``POST /clear`` (drop every rule and delay), ``POST /delay`` (``{"seconds": 1.5}``), ``POST /reset`` (forget what was
received), ``POST /down``, ``POST /up``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import gzip
import signal
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

LOOPBACK = "127.0.0.1"
NDJSON = "application/x-ndjson"
JSON = "application/json"
SHUTDOWN_TIMEOUT = 0.5  # stop() is "the destination went down", not a graceful drain


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Rule:
    """One programmed failure. A request matches when every given condition holds; the first match answers."""

    status: int
    retry_after: str | None = None
    retry_after_date: float | None = None  # answer an HTTP-date this many seconds after the answer time
    until: float | None = None  # time.monotonic() deadline; None = no time limit
    record_ids: frozenset[str] | None = None  # only requests carrying one of these ids
    nth: frozenset[int] | None = None  # only these request numbers (1-based, every request counts)
    body: str = ""
    matched: int = 0

    def matches(self, number: int, ids: Iterable[str], now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        if self.nth is not None and number not in self.nth:
            return False
        return not (self.record_ids is not None and self.record_ids.isdisjoint(ids))

    def headers(self) -> dict[str, str]:
        if self.retry_after_date is not None:
            return {"Retry-After": email.utils.formatdate(time.time() + self.retry_after_date, usegmt=True)}
        if self.retry_after is not None:
            return {"Retry-After": self.retry_after}
        return {}


@dataclass
class RequestLog:
    """One request as the sink saw it."""

    number: int
    mono: float  # time.monotonic() when the body had been read
    wall: float  # time.time() at the same moment
    status: int
    ids: list[str]
    content_type: str
    content_encoding: str
    wire_bytes: int
    headers: dict[str, str]
    answered_mono: float = 0.0
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "wall": self.wall,
            "status": self.status,
            "ids": self.ids,
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "wire_bytes": self.wire_bytes,
            "headers": self.headers,
            "error": self.error,
        }


@dataclass
class Arrival:
    mono: float
    wall: float
    request: int


class HttpSink:
    """The sink server. Use as an async context manager, or call :meth:`start` / :meth:`stop` yourself."""

    def __init__(self, *, host: str = LOOPBACK, port: int = 0, path: str = "/ingest") -> None:
        self.host = host
        self.port = port
        self.path = path
        self.rules: list[Rule] = []
        self.delay = 0.0
        self.requests: list[RequestLog] = []
        self.received: dict[str, list[Arrival]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self._number = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again). The first start with ``port=0`` picks a free port; later starts reuse it."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, auto_decompress=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and drop open connections: clients get "connection refused" until :meth:`start`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HttpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- behaviour ------------------------------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def fail_for(self, seconds: float, status: int = 503, retry_after: str | None = "2") -> Rule:
        """Answer ``status`` (with ``Retry-After``) to every request for the next ``seconds``."""
        return self.add_rule(Rule(status, retry_after=retry_after, until=time.monotonic() + seconds))

    def reject_records(self, ids: Iterable[str], status: int = 400, body: str = "bad record") -> Rule:
        """Answer ``status`` to any request carrying one of ``ids`` (until :meth:`clear`)."""
        return self.add_rule(Rule(status, record_ids=frozenset(ids), body=body))

    def fail_requests(self, numbers: Iterable[int], status: int = 400, retry_after: str | None = None) -> Rule:
        """Answer ``status`` to the given request numbers (1-based; every request counts, refused ones too)."""
        return self.add_rule(Rule(status, retry_after=retry_after, nth=frozenset(numbers)))

    def throttle_with_date(self, seconds: float, retry_in: float, status: int = 429) -> Rule:
        """Answer ``status`` with an HTTP-date ``Retry-After`` ``retry_in`` seconds ahead, for ``seconds``."""
        return self.add_rule(Rule(status, retry_after_date=retry_in, until=time.monotonic() + seconds))

    def set_delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each request (a slow destination)."""
        self.delay = seconds

    def clear(self) -> None:
        """Accept everything again, without delay."""
        self.rules.clear()
        self.delay = 0.0

    def reset(self) -> None:
        """Forget what was received (rules stay)."""
        self.requests.clear()
        self.received.clear()
        self.records.clear()

    # -- observations ---------------------------------------------------------------------------------------------

    def ids(self) -> set[str]:
        """Ids of every record accepted (answered 2xx) at least once."""
        return set(self.received)

    def count(self, record_id: str) -> int:
        return len(self.received.get(record_id, ()))

    def duplicates(self) -> int:
        """Extra deliveries: sum over ids of (times accepted - 1)."""
        return sum(len(a) - 1 for a in self.received.values())

    def accepted_requests(self) -> list[RequestLog]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Poll ``predicate`` whenever a request was answered (and at least every 50 ms) until it holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"sink: {what} not reached within {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

    async def wait_for_ids(self, ids: Iterable[str], timeout: float) -> None:
        want = set(ids)

        def done() -> bool:
            return want <= self.received.keys()

        try:
            await self.wait_for(done, timeout, f"{len(want)} ids")
        except TimeoutError:
            missing = want - self.received.keys()
            raise TimeoutError(f"sink: {len(missing)} of {len(want)} ids not received within {timeout}s") from None

    def state(self) -> dict[str, Any]:
        """Everything observed, JSON-ready (times as Unix seconds)."""
        return {
            "requests": [r.as_json() for r in self.requests],
            "received": {rid: [a.wall for a in arr] for rid, arr in self.received.items()},
        }

    # -- serving --------------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(content_type: str, encoding: str, raw: bytes) -> list[dict[str, Any]]:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in (NDJSON, JSON):
            raise _Refused(415, f"unsupported Content-Type {media or '(none)'!r}")
        if encoding in ("gzip", "x-gzip"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise _Refused(400, f"invalid gzip body: {exc}") from None
        elif encoding not in ("", "identity"):
            raise _Refused(415, f"unsupported Content-Encoding {encoding!r}")
        if not raw:
            raise _Refused(400, "empty body")
        if media == NDJSON:
            if not raw.endswith(b"\n"):
                raise _Refused(400, "NDJSON body must end with a newline")
            lines = raw[:-1].split(b"\n")
            records = []
            for i, line in enumerate(lines):
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise _Refused(400, f"line {i + 1}: not JSON: {exc}") from None
        else:
            try:
                records = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _Refused(400, f"not JSON: {exc}") from None
            if not isinstance(records, list):
                raise _Refused(400, "application/json body must be an array of records")
            if not records:
                raise _Refused(400, "empty array")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise _Refused(400, f"record {i}: not a JSON object")
            rid = rec.get("id")
            if not isinstance(rid, str) or not rid:
                raise _Refused(400, f"record {i}: missing string id")
        return records

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != self.path:
            return web.json_response({"error": f"unknown path {request.path}"}, status=404)
        if request.method != "POST":
            return web.json_response({"error": "use POST"}, status=405, headers={"Allow": "POST"})
        raw = await request.read()
        self._number += 1
        number = self._number
        mono, wall = time.monotonic(), time.time()
        ctype = request.headers.get("Content-Type", "")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        headers = {str(k): v for k, v in request.headers.items()}
        log = RequestLog(number, mono, wall, 0, [], ctype, encoding, len(raw), headers)
        self.requests.append(log)
        try:
            records = self._parse(ctype, encoding, raw)
        except _Refused as exc:
            log.status, log.error = exc.status, exc.message
            return self._answer(log, exc.status, {"error": exc.message}, {})
        log.ids = [r["id"] for r in records]
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        now = time.monotonic()
        for rule in self.rules:
            if rule.matches(number, log.ids, now):
                rule.matched += 1
                log.status = rule.status
                body = {"error": rule.body or f"programmed {rule.status}"}
                return self._answer(log, rule.status, body, rule.headers())
        log.status = 200
        arrival = Arrival(mono, wall, number)
        for rec in records:
            rid = rec["id"]
            self.received.setdefault(rid, []).append(arrival)
            self.records.setdefault(rid, rec)
        return self._answer(log, 200, {"accepted": len(records)}, {})

    def _answer(self, log: RequestLog, status: int, body: dict[str, Any], headers: dict[str, str]) -> web.Response:
        log.answered_mono = time.monotonic()
        self._changed.set()
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


# ---------------------------------------------------------------------------------------------------------------
# control API (process mode)


def rule_from_json(doc: dict[str, Any]) -> Rule:
    """A :class:`Rule` from the control API's JSON (see the module docstring)."""
    status = int(doc.get("status", 503))
    seconds = doc.get("seconds")
    ids = doc.get("record_ids")
    nth = doc.get("nth")
    return Rule(
        status,
        retry_after=None if doc.get("retry_after") is None else str(doc["retry_after"]),
        retry_after_date=None if doc.get("retry_after_date") is None else float(doc["retry_after_date"]),
        until=None if seconds is None else time.monotonic() + float(seconds),
        record_ids=None if ids is None else frozenset(map(str, ids)),
        nth=None if nth is None else frozenset(int(n) for n in nth),
        body=str(doc.get("body", "")),
    )


def control_app(sink: HttpSink) -> web.Application:
    async def state(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(sink.state()), content_type="application/json")

    async def rules(request: web.Request) -> web.Response:
        rule = sink.add_rule(rule_from_json(await request.json()))
        return web.json_response({"rule": sink.rules.index(rule)})

    async def clear(_: web.Request) -> web.Response:
        sink.clear()
        return web.json_response({"ok": True})

    async def delay(request: web.Request) -> web.Response:
        sink.set_delay(float((await request.json())["seconds"]))
        return web.json_response({"ok": True})

    async def reset(_: web.Request) -> web.Response:
        sink.reset()
        return web.json_response({"ok": True})

    async def down(_: web.Request) -> web.Response:
        await sink.stop()
        return web.json_response({"ok": True})

    async def up(_: web.Request) -> web.Response:
        await sink.start()
        return web.json_response({"ok": True, "url": sink.url})

    app = web.Application()
    app.router.add_get("/state", state)
    app.router.add_post("/rules", rules)
    app.router.add_post("/clear", clear)
    app.router.add_post("/delay", delay)
    app.router.add_post("/reset", reset)
    app.router.add_post("/down", down)
    app.router.add_post("/up", up)
    return app


async def _serve(args: argparse.Namespace) -> None:
    sink = HttpSink(host=args.host, port=args.port, path=args.path)
    await sink.start()
    runner = web.AppRunner(control_app(sink), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.control_port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    control_port = sockets[0].getsockname()[1] if sockets else args.control_port
    sys.stdout.write(f"{sink.url}\nhttp://{args.host}:{control_port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sink.stop()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.http_sink", description="Programmable HTTP sink")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--path", default="/ingest")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
