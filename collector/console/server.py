"""The console's aiohttp listener: authentication, security headers, pages, exports and the access trail.

Routes (all read-only apart from login and logout)::

    GET  /                      -> /approvals
    GET  /login                 sign-in form; ``?token=`` redeems the one-time token (then redirects, so the URL
                                 in the address bar holds no token)
    POST /login                 reviewer token -> session cookie
    POST /logout                ends the session (needs the session's CSRF token)
    GET  /approvals             the approval trail (since, until, user, tool, decision, mode, q, page)
    GET  /approvals/export      CSV or JSONL of the same filter (format=csv|jsonl), streamed
    GET  /sessions/{id}         a session's timeline
    GET  /users/{user}          a user's sessions, decisions, rejections and cost over the period
    GET  /integrity             chain verification and the last published chain heads
    GET  /static/{name}         the stylesheet and the one script

Every response carries a Content-Security-Policy without inline script, ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.compliance.approvals import COLUMNS, DECISIONS, MODES, ApprovalFilter, csv_cell, write_rows
from collector.configtypes import parse_endpoint
from collector.console.auth import CSRF_COOKIE, SESSION_COOKIE, ReviewerAuth
from collector.console.html import Markup, esc, hidden, link, path_part, render, select, table, url
from collector.console.integrity import IntegrityMonitor
from collector.console.settings import ConsoleConfig, is_loopback
from collector.console.trail import trail_access_record
from collector.store import StorageError
from collector.store import trail as queries

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
FILTER_KEYS = ("since", "until", "user", "tool", "decision", "mode", "q")
MAX_PAGE = 10_000
MAX_PARAM = 1024
REALM = 'Bearer realm="ccbridge console"'
EXPORT_CHUNK = 256 * 1024
EXPORT_QUEUE = 8

AppendRecord = Callable[[dict[str, Any]], Awaitable[None]]
IDENTITY = web.RequestKey("identity", "Identity")  # type: ignore[attr-defined]


class BadRequest(Exception):
    """A filter value the console cannot use; the message names the parameter."""


@dataclass
class Identity:
    reviewer: str
    via: str  # "bearer", "session", "proxy"
    csrf: str = ""


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time_param(name: str, text: str, now: datetime) -> int:
    """Unix ms of a ``since``/``until`` value in the CLI's time grammar (RFC 3339, a date, or an age)."""
    from collector.timeparse import parse_time

    try:
        return int(parse_time(text, now=now).timestamp() * 1000)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{name}: {exc}") from None


def parse_filter(
    query: Any, default_period_s: float, now: datetime | None = None
) -> tuple[ApprovalFilter, dict[str, str]]:
    """The :class:`ApprovalFilter` of the query parameters, and the parameters as given (for links and the trail)."""
    now = now or datetime.now(UTC)
    given: dict[str, str] = {}
    for key in FILTER_KEYS:
        value = query.get(key, "")
        if len(value) > MAX_PARAM:
            raise BadRequest(f"{key}: longer than {MAX_PARAM} characters")
        if value.strip():
            given[key] = value.strip()
    until_ms = parse_time_param("until", given["until"], now) if "until" in given else int(now.timestamp() * 1000)
    if "since" in given:
        since_ms = parse_time_param("since", given["since"], now)
    else:
        since_ms = until_ms - int(default_period_s * 1000)
    if until_ms <= since_ms:
        raise BadRequest("until: must be after since")
    decision = given.get("decision")
    if decision is not None and decision not in DECISIONS:
        raise BadRequest(f"decision: must be one of {', '.join(DECISIONS)}")
    mode = given.get("mode")
    if mode is not None and mode not in MODES:
        raise BadRequest(f"mode: must be one of {', '.join(MODES)}")
    flt = ApprovalFilter(since_ms, until_ms, given.get("user"), given.get("tool"), decision, mode, given.get("q"))
    return flt, given


def _page_number(query: Any) -> int:
    raw = query.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"page: must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _resolved(flt: ApprovalFilter) -> dict[str, str]:
    """The filter with absolute times: what an export link or the access trail records."""
    out = {"since": _fmt_ms(flt.since_ms), "until": _fmt_ms(flt.until_ms)}
    for key, value in (("user", flt.user), ("tool", flt.tool), ("decision", flt.decision), ("mode", flt.mode)):
        if value is not None:
            out[key] = value
    if flt.text:
        out["q"] = flt.text
    return out


class ConsoleApp:
    """The console's routes over one data directory; ``append`` stores a ``trail_access`` record."""

    def __init__(
        self,
        cfg: ConsoleConfig,
        data_dir: str | Path,
        append: AppendRecord,
        *,
        tls: bool = False,
        integrity: IntegrityMonitor | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.append = append
        self.tls = tls
        host, _ = parse_endpoint(cfg.endpoint, "console.endpoint")
        self.auth = ReviewerAuth(
            cfg.auth, session_ttl=float(cfg.session_ttl), one_time_token=not cfg.auth.configured and is_loopback(host)
        )
        self.integrity = integrity or IntegrityMonitor(self.data_dir, float(cfg.verify_interval))

    # -- app --------------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers, self._authenticate], client_max_size=64 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/approvals", self.approvals)
        app.router.add_get("/approvals/export", self.export)
        app.router.add_get("/sessions/{session_id}", self.session)
        app.router.add_get("/users/{user}", self.user)
        app.router.add_get("/integrity", self.integrity_page)
        app.router.add_get("/static/{name}", self.static)
        return app

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                resp = self.error_page(exc.status, exc.reason, "There is no such page here.")
            elif exc.status >= 400:
                resp = self.error_page(exc.status, exc.reason, exc.text or exc.reason)
            else:
                resp = exc
        if not resp.prepared:
            for k, v in SECURITY_HEADERS.items():
                resp.headers.setdefault(k, v)
        return resp

    def _identity(self, request: web.Request) -> Identity | web.Response:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return self.unauthorized("Unsupported authorization: send 'Authorization: Bearer <reviewer token>'.")
            reviewer = self.auth.reviewer_of_token(token.strip())
            if reviewer is None:
                return self.unauthorized("The bearer token is not a console reviewer token.")
            return Identity(reviewer, "bearer")
        session = self.auth.session(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            return Identity(session.reviewer, "session", session.csrf)
        if self.cfg.auth.trusted_header:
            value = request.headers.get(self.cfg.auth.trusted_header)
            reviewer = self.auth.reviewer_from_proxy(request.remote, value)
            if reviewer is not None:
                return Identity(reviewer, "proxy")
            if value is not None:
                log.warning(
                    "console: %s header from %s ignored (not a trusted proxy)",
                    self.cfg.auth.trusted_header,
                    request.remote,
                )
                return self.error_page(
                    403, "Forbidden", "The sign-in header is accepted only from the configured proxies."
                )
        return self.unauthorized("Sign in to see the approval trail.")

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in ("/login", "/logout") or request.path.startswith("/static/"):
            return await handler(request)
        ident = self._identity(request)
        if isinstance(ident, web.Response):
            return ident
        request[IDENTITY] = ident
        return await handler(request)

    # -- error pages ------------------------------------------------------------------------------------------------

    def error_page(self, status: int, reason: str, message: str, action: Markup | None = None) -> web.Response:
        page = render(
            "error.html",
            status=status,
            reason=reason,
            message=message,
            action=action if action is not None else link("/approvals", "Back to the approval trail"),
        )
        return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")

    def unauthorized(self, message: str) -> web.Response:
        resp = self.error_page(401, "Unauthorized", message, link("/login", "Sign in"))
        resp.headers["WWW-Authenticate"] = REALM
        return resp

    # -- login / logout ---------------------------------------------------------------------------------------------

    def _login_page(self, status: int, message: str = "") -> web.Response:
        csrf = self.auth.new_login_csrf()
        hint = (
            "Use the login URL the bridge logged at start (a one-time token), or a reviewer token."
            if self.auth.one_time is not None or not self.cfg.auth.configured
            else "Sign in with your reviewer token."
        )
        page = render("login.html", message=message, csrf=hidden("csrf", csrf), hint=hint)
        resp = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
        resp.set_cookie(
            CSRF_COOKIE, csrf, httponly=True, samesite="Strict", secure=self.tls, path="/login", max_age=3600
        )
        if status == 401:
            resp.headers["WWW-Authenticate"] = REALM
        return resp

    def _signed_in(self, reviewer: str, how: str, request: web.Request) -> web.Response:
        sid, _session = self.auth.open_session(reviewer)
        log.info("console: reviewer %s signed in (%s) from %s", reviewer, how, request.remote)
        resp = web.Response(status=303, headers={"Location": "/approvals"})
        resp.set_cookie(
            SESSION_COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            path="/",
            max_age=int(self.cfg.session_ttl),
        )
        resp.del_cookie(CSRF_COOKIE, path="/login")
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is not None:
            if self.auth.redeem_one_time(token):
                return self._signed_in("local", "one-time token", request)
            log.warning("console: refused a login URL from %s (token unknown or already used)", request.remote)
            return self._login_page(401, "That login link is not valid (a one-time link works once).")
        return self._login_page(200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        csrf = str(form.get("csrf", ""))
        if not self.auth.check_login_csrf(request.cookies.get(CSRF_COOKIE), csrf):
            return self.error_page(
                403, "Forbidden", "The sign-in form expired; open the sign-in page again.", link("/login", "Sign in")
            )
        token = str(form.get("token", "")).strip()
        reviewer = self.auth.login(token) if token else None
        if reviewer is None:
            log.warning("console: failed sign-in from %s", request.remote)
            return self._login_page(401, "That token does not open the console.")
        return self._signed_in(reviewer, "token", request)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        sid = request.cookies.get(SESSION_COOKIE)
        session = self.auth.session(sid)
        form = await request.post()
        if session is None:
            return self.unauthorized("You are not signed in.")
        if not self.auth.same(session.csrf, str(form.get("csrf", ""))):
            return self.error_page(403, "Forbidden", "The sign-out form is not valid; reload the page and try again.")
        self.auth.close_session(sid)
        log.info("console: reviewer %s signed out", session.reviewer)
        resp = web.Response(status=303, headers={"Location": "/login"})
        resp.del_cookie(SESSION_COOKIE, path="/")
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=303, headers={"Location": "/approvals"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        suffix = Path(name).suffix
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            raise web.HTTPNotFound()
        res = resources.files("collector.console").joinpath("static", name)
        if not res.is_file():
            raise web.HTTPNotFound()
        resp = web.Response(body=res.read_bytes(), headers={"Content-Type": STATIC_TYPES[suffix]})
        return resp

    # -- page frame and trail ---------------------------------------------------------------------------------------

    def page(self, request: web.Request, title: str, content: Markup) -> web.Response:
        ident: Identity = request[IDENTITY]
        who = esc(ident.reviewer)
        if ident.via == "session":
            who = Markup(
                f'{who}<form method="post" action="/logout" id="logout">{hidden("csrf", ident.csrf)}'
                '<button type="submit">Sign out</button></form>'
            )
        nav = Markup(link("/approvals", "Approval trail") + link("/integrity", "Integrity"))
        body = render("base.html", title=title, nav=nav, who=who, content=content)
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    async def record(
        self,
        request: web.Request,
        page: str,
        filter: dict[str, str],
        rows: int,
        status: int = 200,
        fmt: str | None = None,
    ) -> None:
        ident: Identity = request[IDENTITY]
        rec = trail_access_record(
            reviewer=ident.reviewer,
            source_address=request.remote or "",
            page=page,
            filter=filter,
            rows=rows,
            now_ns=time.time_ns(),
            method=ident.via,
            status=status,
            export_format=fmt,
        )
        await self.append(rec)

    async def _view(
        self, request: web.Request, page: str, filter: dict[str, str], rows: int, build: Callable[[], web.Response]
    ) -> web.Response:
        """Record the view, then answer: a page is shown only once its access record is stored."""
        try:
            await self.record(request, page, filter, rows)
        except StorageError as exc:
            log.error("console: cannot record a trail_access record: %s", exc)
            return self.error_page(
                503,
                "Service Unavailable",
                "The access could not be recorded, so the page is not shown. Try again shortly.",
            )
        return build()

    def _bad(self, exc: BadRequest) -> web.Response:
        return self.error_page(400, "Bad Request", str(exc))

    def _store_error(self, exc: StorageError) -> web.Response:
        if exc.reason == "missing":
            return self.error_page(503, "Service Unavailable", "The store has no data yet.")
        log.error("console: %s", exc)
        return self.error_page(503, "Service Unavailable", "The store cannot be read right now; try again shortly.")

    async def approvals(self, request: web.Request) -> web.StreamResponse:
        try:
            flt, given = parse_filter(request.query, float(self.cfg.default_period))
            page_no = _page_number(request.query)
        except BadRequest as exc:
            return self._bad(exc)
        try:
            result = await asyncio.to_thread(queries.trail_page, self.data_dir, flt, page_no)
        except StorageError as exc:
            return self._store_error(exc)
        resolved = _resolved(flt)
        trail_filter = {**resolved, "page": str(page_no)}

        def build() -> web.Response:
            return self.page(request, "Approval trail", self._trail_content(flt, given, resolved, result, page_no))

        return await self._view(request, "/approvals", trail_filter, len(result.rows), build)

    def _trail_content(
        self,
        flt: ApprovalFilter,
        given: dict[str, str],
        resolved: dict[str, str],
        result: queries.TrailPage,
        page_no: int,
    ) -> Markup:
        rows = []
        for r in result.rows:
            sid = r.get("session_id")
            when = link(url(f"/sessions/{path_part(sid)}"), r.get("time")) if sid else esc(r.get("time"))
            user = r.get("user_email") or r.get("user_id")
            period = {"since": resolved["since"], "until": resolved["until"]}
            user_cell = link(url("/users/" + path_part(user), period), user) if user else ""
            rows.append(
                Markup(
                    "<tr>"
                    f'<td class="mono">{when}</td>'
                    f"<td>{user_cell}</td>"
                    f"<td>{esc(r.get('tool_name'))}</td>"
                    f'<td class="mono">{esc(r.get("command") or r.get("file_path"))}</td>'
                    f'<td class="{esc(r.get("decision"))}">{esc(r.get("decision"))}</td>'
                    f"<td>{esc(r.get('approval_mode'))}</td>"
                    f"<td>{esc(r.get('decision_source'))}</td>"
                    f'<td class="{esc(r.get("outcome"))}">{esc(r.get("outcome"))}</td>'
                    "</tr>"
                )
            )
        headers = ("Time", "User", "Tool", "Command / file", "Decision", "Mode", "Source", "Outcome")
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "".join(rows) if rows else f'<tr><td colspan="{len(headers)}">No decisions match this filter.</td></tr>'
        table_html = Markup(f'<table id="trail"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        pager = []
        if page_no > 1:
            pager.append(link(url("/approvals", {**given, "page": page_no - 1}), "← Newer"))
        pager.append(esc(f"Page {page_no}"))
        if result.has_more:
            pager.append(link(url("/approvals", {**given, "page": page_no + 1}), "Older →", "older"))
        c = result.counts
        return render(
            "approvals.html",
            since=given.get("since", ""),
            until=given.get("until", ""),
            user=given.get("user", ""),
            tool=given.get("tool", ""),
            q=given.get("q", ""),
            decision_select=select("decision", DECISIONS, flt.decision, "any"),
            mode_select=select("mode", MODES, flt.mode, "any"),
            period_since=resolved["since"],
            period_until=resolved["until"],
            n_decisions=c.decisions,
            n_rejected=c.rejected,
            n_manual=c.manual,
            n_automatic=c.automatic,
            n_hook=c.hook,
            export_csv=link(url("/approvals/export", {"format": "csv", **resolved}), "CSV", "export-csv"),
            export_jsonl=link(url("/approvals/export", {"format": "jsonl", **resolved}), "JSON lines", "export-jsonl"),
            rows=table_html,
            pager=Markup(" ".join(pager)),
        )

    # -- export -----------------------------------------------------------------------------------------------------

    async def export(self, request: web.Request) -> web.StreamResponse:
        fmt = request.query.get("format", "csv")
        try:
            if fmt not in ("csv", "jsonl"):
                raise BadRequest("format: must be csv or jsonl")
            flt, _given = parse_filter(request.query, float(self.cfg.default_period))
        except BadRequest as exc:
            return self._bad(exc)
        if not queries.store_exists(self.data_dir):
            return self._store_error(StorageError("missing", "no store"))
        resolved = _resolved(flt)
        stamp = f"{resolved['since']}_{resolved['until']}".replace(":", "")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8",
                "Content-Disposition": f'attachment; filename="approvals_{stamp}.{fmt}"',
                **SECURITY_HEADERS,
            }
        )
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()  # bounded by the writer's slots
        sink = _ChunkWriter(loop, chunks)

        def produce() -> int:
            try:
                return write_rows(queries.export_rows(self.data_dir, flt), sink, fmt)
            finally:
                sink.close()

        producer = asyncio.ensure_future(asyncio.to_thread(produce))
        recorded = False
        status = 200
        try:
            await resp.prepare(request)
            # the last chunk is held back until the access record is stored: a complete download is a recorded one
            held: bytes | None = None
            while (chunk := await chunks.get()) is not None:
                sink.slots.release()
                if held is not None:
                    await resp.write(held)
                held = chunk
            rows = await producer
            recorded = True
            await self.record(request, "/approvals/export", resolved, rows, 200, fmt)
            if held is not None:
                await resp.write(held)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            status = 499
            raise
        except StorageError as exc:
            status = 500
            log.error("console: export failed: %s", exc)
            # drop the connection: an export cut short must not look complete (no final chunk is sent)
            if request.transport is not None:
                request.transport.abort()
        finally:
            sink.cancelled = True
            while not chunks.empty():
                chunks.get_nowait()
            if not producer.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(producer), 5)
            if not recorded:
                # an export that did not complete is recorded too, with the rows written so far
                with contextlib.suppress(StorageError):
                    await self.record(request, "/approvals/export", resolved, sink.rows, status, fmt)
        return resp

    # -- session, user, integrity -----------------------------------------------------------------------------------

    async def session(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["session_id"]
        if len(sid) > MAX_PARAM:
            return self._bad(BadRequest("session id: too long"))
        try:
            records = await asyncio.to_thread(queries.session_records, self.data_dir, sid)
        except StorageError as exc:
            return self._store_error(exc)
        if not records:
            try:
                await self.record(request, "/sessions", {"session": sid}, 0, 404)
            except StorageError as exc:
                log.error("console: cannot record a trail_access record: %s", exc)
            return self.error_page(404, "Not Found", "No records of this session are stored.")
        from collector.console.views import session_content

        return await self._view(
            request,
            "/sessions",
            {"session": sid},
            len(records),
            lambda: self.page(request, "Session", session_content(sid, records)),
        )

    async def user(self, request: web.Request) -> web.StreamResponse:
        user = request.match_info["user"]
        try:
            if len(user) > MAX_PARAM:
                raise BadRequest("user: too long")
            flt, given = parse_filter(request.query, float(self.cfg.default_period))
        except BadRequest as exc:
            return self._bad(exc)
        try:
            summary = await asyncio.to_thread(queries.user_summary, self.data_dir, user, flt.since_ms, flt.until_ms)
        except StorageError as exc:
            return self._store_error(exc)
        from collector.console.views import user_content

        resolved = _resolved(flt)
        flt_record = {"user": user, "since": resolved["since"], "until": resolved["until"]}
        return await self._view(
            request,
            "/users",
            flt_record,
            len(summary.sessions),
            lambda: self.page(request, f"User {user}", user_content(summary, given, resolved)),
        )

    async def integrity_page(self, request: web.Request) -> web.StreamResponse:
        try:
            heads = await asyncio.to_thread(queries.chain_heads, self.data_dir)
        except StorageError:
            heads = []
        from collector.console.views import integrity_content

        state = self.integrity.state
        return await self._view(
            request,
            "/integrity",
            {},
            len(heads),
            lambda: self.page(request, "Integrity", integrity_content(state, heads)),
        )


class _ChunkWriter:
    """A text file for :func:`write_rows` in a worker thread: UTF-8 chunks handed to the event loop, with
    backpressure (a full queue blocks the writer), and a stop when the client went away."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes | None]) -> None:
        self.loop = loop
        self.chunks = chunks
        self.buf: list[str] = []
        self.size = 0
        self.cancelled = False
        self.rows = 0
        self.slots = threading.Semaphore(EXPORT_QUEUE)

    def write(self, text: str) -> int:
        if self.cancelled:
            raise BrokenPipeError("the client closed the export")
        self.buf.append(text)
        self.size += len(text)
        if text.endswith("\n"):
            self.rows += 1
        if self.size >= EXPORT_CHUNK:
            self._hand()
        return len(text)

    def flush(self) -> None:
        self._hand()

    def _hand(self) -> None:
        if not self.buf:
            return
        data = "".join(self.buf).encode("utf-8", "surrogatepass")
        self.buf, self.size = [], 0
        self._put(data)

    def _put(self, item: bytes | None) -> None:
        """Hand a chunk to the loop without waiting for it (waiting on the loop from this thread costs a GIL
        switch interval per chunk); at most :data:`EXPORT_QUEUE` chunks are outstanding (backpressure)."""
        if item is not None:
            while not self.slots.acquire(timeout=1.0):
                if self.cancelled:
                    raise BrokenPipeError("the client closed the export")
            if self.cancelled:
                raise BrokenPipeError("the client closed the export")
        try:
            self.loop.call_soon_threadsafe(self.chunks.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            raise BrokenPipeError("the client closed the export") from None

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._hand()
        self._put(None)


class ConsoleServer:
    """Serves :class:`ConsoleApp` on ``console.endpoint`` (TLS per ``console.tls``)."""

    def __init__(
        self, cfg: ConsoleConfig, data_dir: str | Path, append: AppendRecord, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.console = ConsoleApp(cfg, data_dir, append, tls=ssl_context is not None)
        self._runner: web.AppRunner | None = None
        self._warm: asyncio.Future[None] | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    async def start(self) -> None:
        host, port = parse_endpoint(self.cfg.endpoint, "console.endpoint")
        self._runner = web.AppRunner(self.console.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.console.integrity.start()
        self._warm = asyncio.ensure_future(asyncio.to_thread(self._warm_counts))
        shown = f"[{host}]" if ":" in host else host
        base = f"{self.scheme}://{shown}:{self.port}"
        if self.console.auth.one_time is not None:
            # the notebook-server pattern: a one-time token in a login URL, on a loopback listener only
            log.warning("console: open %s/login?token=%s to sign in (works once)", base, self.console.auth.one_time)
        else:
            log.info("console listening on %s", base)

    def _warm_counts(self) -> None:
        try:
            queries.warm(self.console.data_dir)
        except (StorageError, sqlite3.Error) as exc:
            log.warning("console: could not pre-compute the trail's counts: %s", exc)

    async def stop(self) -> None:
        if self._warm is not None:
            with contextlib.suppress(Exception):
                await self._warm
        await self.console.integrity.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


__all__ = ["COLUMNS", "ConsoleApp", "ConsoleServer", "csv_cell", "parse_filter", "table"]
