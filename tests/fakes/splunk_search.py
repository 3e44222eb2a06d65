"""Strict local fake of Splunk's search export REST endpoint (``search/jobs/export``), for the approvals export.

Built from Splunk's documented REST API and what splunk-sdk (``splunklib``) sends (its POST bodies are forms without
a ``Content-Type`` header, which Splunk reads as ``application/x-www-form-urlencoded``, and so does the fake):

* ``POST /services/auth/login`` (form ``username``, ``password``, optional ``cookie=1``): 200 with
  ``<response><sessionKey>KEY</sessionKey></response>`` (and a ``splunkd_<port>`` cookie when ``cookie=1``); wrong
  credentials: 401 ``<response><messages><msg type="WARN" code="incorrect_username_or_password">Login
  failed</msg></messages></response>``.
* Authentication of every other endpoint: ``Authorization: Bearer <token>`` (Splunk authentication tokens),
  ``Authorization: Splunk <token or session key>``, HTTP Basic (``username:password``) or the session cookie.
  Missing or unknown: 401 ``<response><messages><msg type="WARN">call not properly authenticated</msg></messages>
  </response>``.
* ``GET /services/server/info``: an Atom feed whose entry content has ``version`` (splunklib reads it to choose the
  v1 or v2 search API).
* ``POST /services/search/jobs/export`` (also ``GET``, v1) and ``POST /services/search/v2/jobs/export``: parameters
  from the query string and the form body; ``search`` is required and must start with ``search``;
  ``output_mode=json`` is the only mode this fake implements (others: 400); ``earliest_time`` / ``latest_time``
  are epoch seconds (with fraction) or ISO 8601 (others: 400). Results stream as Splunk does, one JSON object per
  line: ``{"preview":false,"offset":N,"result":{...}}``, the last with ``"lastrow":true``; string field values;
  ``_raw`` is the event text (the HEC ``event`` serialized as JSON), ``_time`` ISO 8601 with milliseconds and UTC
  offset. With ``preview_rows=N`` the first N results are first sent as a preview (``"preview":true``), as Splunk
  does for searches with reporting commands like ``sort``. Errors in the search: 400 with
  ``{"messages":[{"type":"FATAL","text":...}]}``.

SPL subset evaluated: ``search`` with ``field=value`` / ``field!=value`` (values case-insensitive, ``*``
wildcards, quoted strings with backslash escapes), bare terms (case-insensitive substring of ``_raw``), ``AND``
(also implicit), ``OR``, ``NOT`` and parentheses; then ``| sort [N] [+|-]field ...`` (default limit 10000 like
Splunk; ``0`` = no limit; numbers compare numerically, missing fields first) and ``| head N``. Without ``sort``
results come newest first, as Splunk returns events. Fields: ``index``, ``sourcetype``, ``source``, ``host``,
``_time``, the HEC indexed ``fields`` and the fields Splunk extracts from a JSON event at search time (nested keys
joined with dots, arrays multivalue).

Events are fed with :meth:`SplunkSearchFake.index_hec`, taking the envelopes a HEC client posts
(``{"time","host","source","sourcetype","index","fields","event"}``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import math
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import orjson
from aiohttp import web

NOT_AUTHENTICATED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<response>\n  <messages>\n'
    '    <msg type="WARN">call not properly authenticated</msg>\n  </messages>\n</response>\n'
)
LOGIN_FAILED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<response>\n  <messages>\n'
    '    <msg type="WARN" code="incorrect_username_or_password">Login failed</msg>\n  </messages>\n</response>\n'
)
EXPORT_PATHS = ("/services/search/jobs/export", "/services/search/v2/jobs/export")
DEFAULT_SORT_LIMIT = 10_000


class SplError(Exception):
    """The search string is outside the implemented subset or malformed (answered 400 FATAL)."""


@dataclass
class IndexedEvent:
    time: float
    index: str
    sourcetype: str
    source: str
    host: str
    raw: str
    indexed: dict[str, list[str]]
    extracted: dict[str, list[str]]

    def values(self, name: str) -> list[str] | None:
        meta = {"index": self.index, "sourcetype": self.sourcetype, "source": self.source, "host": self.host}
        if name in meta:
            return [meta[name]]
        if name == "_time":
            return [repr(self.time)]
        if name == "_raw":
            return [self.raw]
        if name in self.indexed:
            return self.indexed[name]
        return self.extracted.get(name)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return v if isinstance(v, str) else orjson.dumps(v).decode() if isinstance(v, dict | list) else str(v)


def extract_json_fields(doc: Any, prefix: str = "", out: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Search-time JSON extraction: nested keys joined with dots; array elements become multivalue (``{}``-less)."""
    out = {} if out is None else out
    if isinstance(doc, dict):
        for k, v in doc.items():
            extract_json_fields(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(doc, list):
        for v in doc:
            extract_json_fields(v, prefix, out)
    elif prefix:
        out.setdefault(prefix, []).append(_text(doc))
    return out


# ---------------------------------------------------------------------------------------------------------------
# SPL subset


_TOKEN_RE = re.compile(r'\s*(?:(\()|(\))|(!=|=)|"((?:[^"\\]|\\.)*)"|([^\s()=!"]+(?:!(?!=)[^\s()=!"]*)*))')


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise SplError(f"Error in 'search' command: cannot parse the search near {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group(1):
            out.append(("(", "("))
        elif m.group(2):
            out.append((")", ")"))
        elif m.group(3):
            out.append(("op", m.group(3)))
        elif m.group(4) is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group(4))))
        else:
            out.append(("word", m.group(5)))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> tuple[str, str]:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def parse(self) -> Any:
        if not self.t:
            return ("true",)
        node = self.or_expr()
        if self.peek() is not None:
            raise SplError(f"Error in 'search' command: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_expr(self) -> Any:
        nodes = [self.and_expr()]
        while self.peek() == ("word", "OR"):
            self.take()
            nodes.append(self.and_expr())
        return ("or", nodes) if len(nodes) > 1 else nodes[0]

    def and_expr(self) -> Any:
        nodes = [self.not_expr()]
        while True:
            nxt = self.peek()
            if nxt is None or nxt == (")", ")") or nxt == ("word", "OR"):
                break
            if nxt == ("word", "AND"):
                self.take()
            nodes.append(self.not_expr())
        return ("and", nodes) if len(nodes) > 1 else nodes[0]

    def not_expr(self) -> Any:
        if self.peek() == ("word", "NOT"):
            self.take()
            return ("not", self.not_expr())
        return self.atom()

    def atom(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise SplError("Error in 'search' command: the search ends unexpectedly")
        if tok == ("(", "("):
            self.take()
            node = self.or_expr()
            if self.peek() != (")", ")"):
                raise SplError("Error in 'search' command: unbalanced parentheses")
            self.take()
            return node
        if tok[0] in (")", "op"):
            raise SplError(f"Error in 'search' command: unexpected {tok[1]!r}")
        self.take()
        nxt = self.peek()
        if tok[0] == "word" and nxt is not None and nxt[0] == "op":
            op = self.take()[1]
            value = self.peek()
            if value is None or value[0] not in ("word", "str"):
                raise SplError(f"Error in 'search' command: a value must follow {tok[1]}{op}")
            self.take()
            return ("cmp", tok[1], op, value[1])
        return ("term", tok[1])


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower()) if "*" in pattern else value.lower() == pattern.lower()


def evaluate(node: Any, ev: IndexedEvent) -> bool:
    kind = node[0]
    if kind == "true":
        return True
    if kind == "or":
        return any(evaluate(n, ev) for n in node[1])
    if kind == "and":
        return all(evaluate(n, ev) for n in node[1])
    if kind == "not":
        return not evaluate(node[1], ev)
    if kind == "term":
        needle = node[1].lower()
        if "*" in needle:
            return fnmatch.fnmatchcase(ev.raw.lower(), f"*{needle}*")
        return needle in ev.raw.lower()
    _, name, op, pattern = node
    values = ev.values(name)
    hit = values is not None and any(_matches(pattern, v) for v in values)
    if op == "=":
        return hit
    return values is not None and not hit


def _split_pipeline(search: str) -> list[str]:
    parts, cur, quoted, escaped = [], [], False, False
    for ch in search:
        if escaped:
            cur.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            escaped = True
            cur.append(ch)
            continue
        if ch == '"':
            quoted = not quoted
        if ch == "|" and not quoted:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


@dataclass
class Search:
    condition: Any
    sort: list[tuple[str, bool]] | None = None
    sort_limit: int = DEFAULT_SORT_LIMIT
    head: int | None = None


def parse_search(search: str) -> Search:
    stages = _split_pipeline(search.strip())
    first = stages[0]
    if not first:
        raise SplError("Error in 'search' command: a generating command must start the search")
    word, _, rest = first.partition(" ")
    if word != "search":
        raise SplError(f"Unknown search command '{word}'.")
    out = Search(_Parser(_tokens(rest)).parse())
    for stage in stages[1:]:
        cmd, _, args = stage.partition(" ")
        words = args.split()
        if cmd == "sort":
            if words and words[0].isdigit():
                out.sort_limit = int(words.pop(0))
            if not words:
                raise SplError("Error in 'sort' command: no fields to sort by")
            out.sort = [(w.lstrip("+-"), w.startswith("-")) for w in words]
        elif cmd == "head":
            if len(words) != 1 or not words[0].isdigit():
                raise SplError("Error in 'head' command: expected a count")
            out.head = int(words[0])
        else:
            raise SplError(f"Unknown search command '{cmd}'.")
    return out


def _sort_value(ev: IndexedEvent, name: str) -> tuple[int, float, str]:
    if name == "_time":
        return (1, ev.time, "")
    values = ev.values(name)
    if not values:
        return (0, 0.0, "")
    v = values[0]
    try:
        f = float(v)
    except ValueError:
        return (2, 0.0, v)
    return (1, f, "") if math.isfinite(f) else (2, 0.0, v)


def parse_time_param(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise SplError(f"Invalid {name}: {value!r} (this fake takes epoch seconds or ISO 8601)") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def iso_time(t: float) -> str:
    ms = round(t * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}+00:00"


# ---------------------------------------------------------------------------------------------------------------
# the server


@dataclass
class SplunkSearchFake:
    """The fake server. ``tokens``: authentication tokens (Bearer or Splunk scheme); ``users``: name -> password."""

    tokens: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)
    version: str = "9.4.1"
    preview_rows: int = 0
    port: int = 0
    events: list[IndexedEvent] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)
    fatal_message: str | None = None

    def index_hec(self, envelope: dict[str, Any], default_index: str = "main") -> None:
        """Index one HEC ``/event`` envelope as Splunk would (event text as ``_raw``, JSON fields extracted)."""
        event = envelope["event"]
        raw = event if isinstance(event, str) else orjson.dumps(event).decode()
        try:
            doc = orjson.loads(raw) if isinstance(event, str) else event
        except orjson.JSONDecodeError:
            doc = None
        fields = envelope.get("fields") or {}
        self.events.append(
            IndexedEvent(
                time=float(envelope["time"]),
                index=envelope.get("index") or default_index,
                sourcetype=envelope.get("sourcetype") or "httpevent",
                source=envelope.get("source") or "http:fake",
                host=envelope.get("host") or "fake-host",
                raw=raw,
                indexed={k: [_text(x) for x in v] if isinstance(v, list) else [_text(v)] for k, v in fields.items()},
                extracted=extract_json_fields(doc) if isinstance(doc, dict | list) else {},
            )
        )

    # -- auth ------------------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme == "Bearer":
            return value in self.tokens
        if scheme == "Splunk":
            return value in self.tokens or value in self.sessions
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return user in self.users and secrets.compare_digest(self.users[user], password)
        cookie = request.cookies.get(f"splunkd_{self.port}")
        return cookie is not None and cookie in self.sessions

    def _record(self, request: web.Request, params: dict[str, str]) -> None:
        header = request.headers.get("Authorization", "")
        scheme = header.partition(" ")[0] or ("Cookie" if request.cookies else "")
        shown = {k: v for k, v in params.items() if k not in ("password", "username")}
        self.requests.append({"method": request.method, "path": request.path, "auth": scheme, "params": shown})

    # -- handlers --------------------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        """Query string plus a form body (splunklib posts forms without a Content-Type, which Splunk accepts)."""
        params = dict(request.query)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if request.method == "POST" and request.can_read_body and ctype in ("", "application/x-www-form-urlencoded"):
            body = (await request.read()).decode("utf-8", "replace")
            params.update(dict(parse_qsl(body, keep_blank_values=True)))
        return params

    async def login(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        self._record(request, params)
        user, password = params.get("username", ""), params.get("password", "")
        if user not in self.users or not secrets.compare_digest(self.users[user], password):
            return web.Response(status=401, text=LOGIN_FAILED, content_type="text/xml")
        key = secrets.token_hex(16)
        self.sessions.add(key)
        resp = web.Response(
            text=f'<response>\n  <sessionKey>{key}</sessionKey>\n  <messages>\n    <msg code=""></msg>\n'
            "  </messages>\n</response>\n",
            content_type="text/xml",
        )
        if params.get("cookie") == "1":
            resp.set_cookie(f"splunkd_{self.port}", key, path="/", httponly=True)
        return resp

    async def server_info(self, request: web.Request) -> web.Response:
        self._record(request, dict(request.query))
        if not self._authorized(request):
            return web.Response(status=401, text=NOT_AUTHENTICATED, content_type="text/xml")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:s="http://dev.splunk.com/ns/rest">\n'
            "  <title>server-info</title>\n  <entry>\n    <title>server-info</title>\n"
            '    <content type="text/xml">\n      <s:dict>\n'
            f'        <s:key name="version">{escape(self.version)}</s:key>\n'
            '        <s:key name="serverName">fake-splunk</s:key>\n'
            "      </s:dict>\n    </content>\n  </entry>\n</feed>\n"
        )
        return web.Response(text=body, content_type="text/xml")

    def _fatal(self, text: str) -> web.Response:
        return web.json_response({"messages": [{"type": "FATAL", "text": text}]}, status=400)

    def run_search(self, params: dict[str, str]) -> Iterator[IndexedEvent]:
        """The events a search selects, in Splunk's order (raises :class:`SplError`)."""
        search = params.get("search")
        if not search:
            raise SplError("Empty search.")
        parsed = parse_search(search)
        earliest = parse_time_param(params.get("earliest_time"), "earliest_time")
        latest = parse_time_param(params.get("latest_time"), "latest_time")
        selected = [
            ev
            for ev in self.events
            if (earliest is None or ev.time >= earliest)
            and (latest is None or ev.time < latest)
            and evaluate(parsed.condition, ev)
        ]
        selected.sort(key=lambda ev: -ev.time)
        if parsed.sort is not None:
            if parsed.sort_limit:
                selected = selected[: parsed.sort_limit]
            for name, descending in reversed(parsed.sort):
                selected.sort(key=lambda ev, n=name: _sort_value(ev, n), reverse=descending)
        if parsed.head is not None:
            selected = selected[: parsed.head]
        return iter(selected)

    @staticmethod
    def result_of(ev: IndexedEvent) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_raw": ev.raw,
            "_time": iso_time(ev.time),
            "host": ev.host,
            "index": ev.index,
            "source": ev.source,
            "sourcetype": ev.sourcetype,
            "splunk_server": "fake-splunk",
        }
        for k, v in ev.indexed.items():
            out[k] = v[0] if len(v) == 1 else v
        return out

    async def export(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        self._record(request, params)
        if not self._authorized(request):
            return web.Response(status=401, text=NOT_AUTHENTICATED, content_type="text/xml")
        if request.method == "GET" and "/v2/" in request.path:
            return web.Response(status=405, text="Method Not Allowed")
        if params.get("output_mode", "xml") != "json":
            return self._fatal("this fake implements output_mode=json only")
        try:
            selected = list(self.run_search(params))
        except SplError as exc:
            return self._fatal(str(exc))
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=UTF-8"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if self.fatal_message is not None:
            await resp.write(orjson.dumps({"messages": [{"type": "FATAL", "text": self.fatal_message}]}) + b"\n")
            await resp.write_eof()
            return resp
        if self.preview_rows:
            for i, ev in enumerate(selected[: self.preview_rows]):
                line = {"preview": True, "offset": i, "result": self.result_of(ev)}
                await resp.write(orjson.dumps(line) + b"\n")
        for i, ev in enumerate(selected):
            line: dict[str, Any] = {"preview": False, "offset": i}
            if i == len(selected) - 1:
                line["lastrow"] = True
            line["result"] = self.result_of(ev)
            await resp.write(orjson.dumps(line) + b"\n")
        if not selected:
            await resp.write(b'{"preview":false,"lastrow":true}\n')
        await resp.write_eof()
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/services/auth/login", self.login)
        app.router.add_get("/services/server/info", self.server_info)
        for path in EXPORT_PATHS:
            app.router.add_route("POST", path, self.export)
            app.router.add_route("GET", path, self.export)
        return app

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serve on 127.0.0.1 in a background thread (splunklib is synchronous); yields the base URL."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        runner_box: dict[str, web.AppRunner] = {}

        async def start() -> None:
            runner = web.AppRunner(self.app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            runner_box["runner"] = runner

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="splunk-search-fake", daemon=True)
        thread.start()
        if not started.wait(10):
            raise RuntimeError("the Splunk search fake did not start")
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            asyncio.run_coroutine_threadsafe(runner_box["runner"].cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
