"""Strict local fake of the Claude Code Analytics API, written from Anthropic's "Claude Code Analytics API"
documentation (https://docs.claude.com/en/api/claude-code-analytics-api).

``async with AnalyticsApiFake(users=10, days=7) as fake:`` serves
``GET /v1/organizations/usage_report/claude_code`` on ``fake.url`` (127.0.0.1, ephemeral port).

Enforced, in this order (each failure answers with the spec's error body
``{"type":"error","error":{"type":…,"message":…},"request_id":…}`` and a ``request-id`` header):

1. method GET and the exact path, else 405/404;
2. ``x-api-key``: missing or unknown key -> 401 ``authentication_error`` (a non-admin ``sk-ant-api…`` key is
   unknown too); a key listed in ``noperm_keys`` -> 403 ``permission_error``;
3. ``anthropic-version`` present and a known version, else 400 ``invalid_request_error``;
4. query: only ``starting_at``/``limit``/``page``, each at most once; ``starting_at`` a real ``YYYY-MM-DD``;
   ``limit`` an integer 1..1000 (default 20); ``page`` a cursor issued by this fake for the same ``starting_at``
   (cursors are opaque, signed, and bound to the day), else 400;
5. spend cap (``fake.spend_capped = True``): 429 ``rate_limit_error`` without ``retry-after``;
6. injected faults (:meth:`inject`): any status with optional ``retry-after``, raw non-JSON bodies, dropped
   connections, delays; each for ``times`` matching requests, optionally only for one day or only for
   cursor (page >= 2) requests.

Data is deterministic for ``users`` user actors (+ ``api_keys`` API-key actors) x ``days`` days ending at
``fake.today`` (older and future days answer an empty page), from ``seed``; user ``i`` is ``emails[i]`` when given,
else ``userNNNN@example.com``. Today and yesterday are partial: every
new walk (a request without ``page``) of those days sees a later snapshot with more activity (today also more
actors); pages within one walk stay consistent because the cursor carries the snapshot. Every request is logged in
``fake.requests`` (the key itself is not kept, only which kind it was).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

USAGE_PATH = "/v1/organizations/usage_report/claude_code"
FAKE_ADMIN_KEY = "sk-ant-admin01-FAKEadminKEY-0001"
FAKE_NOPERM_KEY = "sk-ant-admin01-FAKEnopermKEY-0002"
FAKE_NON_ADMIN_KEY = "sk-ant-api03-FAKEnormalKEY-0003"
KNOWN_VERSIONS = ("2023-06-01",)
ORG_ID = "5b0c2f7e-9d1a-4c3e-8f6b-2a7d1e4c9b10"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000

_TERMINALS = ("vscode", "iTerm.app", "tmux", "cursor", "Apple_Terminal", "WezTerm")
_MODELS = (
    ("claude-sonnet-4-5-20250929", 3.0, 15.0),
    ("claude-opus-4-5-20251101", 5.0, 25.0),
    ("claude-haiku-4-5-20251001", 1.0, 5.0),
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

KeyKind = Literal["admin", "noperm", "invalid", "missing"]


@dataclass
class Fault:
    """An injected failure; ``times=None`` means until removed."""

    status: int = 500
    times: int | None = 1
    retry_after: str | None = None
    day: date | None = None
    pages_only: bool = False
    body: bytes | None = None
    content_type: str = "text/html"
    disconnect: bool = False
    delay: float = 0.0
    message: str = "injected failure"
    hits: int = 0

    def matches(self, day: date, has_page: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.day is not None and self.day != day:
            return False
        return not (self.pages_only and not has_page)


@dataclass(frozen=True)
class FakeRequest:
    """One logged request. ``key`` is the kind of key presented, never the key; ``status`` 0 = dropped."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    status: int
    key: KeyKind
    anthropic_version: str | None
    user_agent: str | None
    request_id: str

    @property
    def day(self) -> date | None:
        value = self.query.get("starting_at", "")
        return date.fromisoformat(value) if _DATE_RE.fullmatch(value) else None

    @property
    def page(self) -> str | None:
        return self.query.get("page")


class _Dropped(Exception):
    """The connection was aborted without a response (logged with status 0)."""


class _Reject(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class AnalyticsApiFake:
    """The fake server; see the module docstring. Settable at any time: ``today``, ``spend_capped``."""

    users: int = 10
    days: int = 7
    seed: int = 1
    today: date = field(default_factory=lambda: datetime.now(UTC).date())
    api_keys: int = 0
    emails: tuple[str, ...] = ()
    multi_terminal_every: int = 0
    date_format: Literal["rfc3339", "date"] = "rfc3339"
    admin_keys: tuple[str, ...] = (FAKE_ADMIN_KEY,)
    noperm_keys: tuple[str, ...] = (FAKE_NOPERM_KEY,)
    host: str = "127.0.0.1"
    spend_capped: bool = False
    requests: list[FakeRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._secret = hashlib.sha256(f"cursor-{self.seed}".encode()).digest()
        self._generations: dict[date, int] = {}
        self._cache: dict[tuple[date, int, int], list[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._counter = 0

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("fake not started")
        return f"http://{self.host}:{self._port}"

    async def __aenter__(self) -> AnalyticsApiFake:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- control ------------------------------------------------------------------------------------------

    def inject(self, status: int = 500, **kwargs: Any) -> Fault:
        """Add a :class:`Fault` (keyword arguments as its fields) and return it."""
        fault = Fault(status=status, **kwargs)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def data_requests(self) -> list[FakeRequest]:
        """Requests answered with 200."""
        return [r for r in self.requests if r.status == 200]

    def generation(self, day: date) -> int:
        """How many walks of ``day`` started while it was partial (the next walk sees this snapshot)."""
        return self._generations.get(day, 0)

    def is_partial(self, day: date) -> bool:
        return day in (self.today, self.today - timedelta(days=1))

    def expected_records(self, day: date, generation: int | None = None) -> list[dict[str, Any]]:
        """The records a walk of ``day`` would return now (without starting a walk)."""
        return self._records(day, self.generation(day) if generation is None else generation)

    # -- data ---------------------------------------------------------------------------------------------

    def _actors(self) -> list[tuple[str, str, int]]:
        actors = [
            ("user_actor", self.emails[i] if i < len(self.emails) else f"user{i:04d}@example.com", i)
            for i in range(self.users)
        ]
        actors += [("api_actor", f"ci-key-{j:02d}", self.users + j) for j in range(self.api_keys)]
        return actors

    def _records(self, day: date, generation: int) -> list[dict[str, Any]]:
        if not self.today - timedelta(days=self.days - 1) <= day <= self.today:
            return []
        stage = 0 if day == self.today else 1 if day == self.today - timedelta(days=1) else 2
        cache_key = (day, stage, generation if stage < 2 else 0)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        if stage == 0:
            num, den = generation + 1, generation + 2
        elif stage == 1:
            num, den = generation + 3, generation + 4
        else:
            num, den = 1, 1
        actors = self._actors()
        if stage == 0:
            actors = actors[: max(1, -(-len(actors) * num // den))]
        rng = random.Random(self.seed * 1_000_003 + day.toordinal())
        out: list[tuple[tuple[str, str, str], dict[str, Any]]] = []
        for actor_type, actor_id, index in actors:
            terminals = [_TERMINALS[index % len(_TERMINALS)]]
            if actor_type == "api_actor":
                terminals = ["non-interactive"]
            elif self.multi_terminal_every and index % self.multi_terminal_every == 0:
                terminals.append("tmux" if terminals[0] != "tmux" else "vscode")
            for terminal in terminals:
                record = self._record(rng, day, actor_type, actor_id, index, terminal, num, den)
                out.append(((actor_type, actor_id, terminal), record))
        out.sort(key=lambda item: item[0])
        records = [r for _, r in out]
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[cache_key] = records
        return records

    def _record(
        self,
        rng: random.Random,
        day: date,
        actor_type: str,
        actor_id: str,
        index: int,
        terminal: str,
        num: int,
        den: int,
    ) -> dict[str, Any]:
        def grow(value: int) -> int:
            return value * num // den

        actor: dict[str, str] = (
            {"type": "user_actor", "email_address": actor_id}
            if actor_type == "user_actor"
            else {"type": "api_actor", "api_key_name": actor_id}
        )
        tools: dict[str, dict[str, int]] = {}
        for name in ("edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool"):
            accepted, rejected = rng.randint(0, 60), rng.randint(0, 8)
            if name == "multi_edit_tool" and index % 4 == 3:
                continue
            tools[name] = {"accepted": grow(accepted), "rejected": grow(rejected)}
        breakdown = []
        for model, price_in, price_out in _MODELS[: 1 + index % 2]:
            tokens = {
                "input": grow(rng.randint(1_000, 200_000)),
                "output": grow(rng.randint(500, 60_000)),
                "cache_read": grow(rng.randint(0, 2_000_000)),
                "cache_creation": grow(rng.randint(0, 80_000)),
            }
            dollars = (
                tokens["input"] * price_in
                + tokens["output"] * price_out
                + tokens["cache_read"] * price_in * 0.1
                + tokens["cache_creation"] * price_in * 1.25
            ) / 1_000_000
            breakdown.append(
                {
                    "model": model,
                    "tokens": tokens,
                    "estimated_cost": {"currency": "USD", "amount": round(dollars * 100)},
                }
            )
        record: dict[str, Any] = {
            "date": f"{day.isoformat()}T00:00:00Z" if self.date_format == "rfc3339" else day.isoformat(),
            "actor": actor,
            "organization_id": ORG_ID,
            "customer_type": "subscription" if index % 3 == 1 else "api",
            "terminal_type": terminal,
            "core_metrics": {
                "num_sessions": grow(rng.randint(1, 12)),
                "lines_of_code": {"added": grow(rng.randint(0, 3_000)), "removed": grow(rng.randint(0, 900))},
                "commits_by_claude_code": grow(rng.randint(0, 8)),
                "pull_requests_by_claude_code": grow(rng.randint(0, 3)),
            },
            "tool_actions": tools,
            "model_breakdown": breakdown,
        }
        if index % 3 == 1 and index % 5 != 0:
            record["subscription_type"] = "team" if index % 2 else "enterprise"
        return record

    # -- cursors ------------------------------------------------------------------------------------------

    def _cursor(self, day: date, offset: int, generation: int) -> str:
        body = orjson.dumps({"d": day.isoformat(), "o": offset, "g": generation})
        sig = hmac.new(self._secret, body, hashlib.sha256).digest()[:12]
        return "page_" + base64.urlsafe_b64encode(body + sig).decode().rstrip("=")

    def _read_cursor(self, cursor: str, day: date) -> tuple[int, int]:
        try:
            if not cursor.startswith("page_"):
                raise ValueError
            blob = base64.urlsafe_b64decode(cursor[5:] + "=" * (-len(cursor[5:]) % 4))
            body, sig = blob[:-12], blob[-12:]
            if not hmac.compare_digest(sig, hmac.new(self._secret, body, hashlib.sha256).digest()[:12]):
                raise ValueError
            data = orjson.loads(body)
            bound, offset, generation = date.fromisoformat(data["d"]), int(data["o"]), int(data["g"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            raise _Reject(400, "page: invalid page cursor") from None
        if bound != day:
            raise _Reject(400, f"page: cursor was issued for starting_at={bound}, not {day}")
        return offset, generation

    # -- request handling ---------------------------------------------------------------------------------

    def _check(self, request: web.Request) -> tuple[date, int, str | None]:
        if request.path != USAGE_PATH:
            raise _Reject(404, f"Not found: {request.path}")
        if request.method != "GET":
            raise _Reject(405, f"Method {request.method} not allowed")
        version = request.headers.get("anthropic-version")
        if version is None:
            raise _Reject(400, "anthropic-version: header is required")
        if version not in KNOWN_VERSIONS:
            raise _Reject(400, f"anthropic-version: unknown version {version!r}")
        query = request.query
        for name in query:
            if name not in ("starting_at", "limit", "page"):
                raise _Reject(400, f"{name}: Extra inputs are not permitted")
            if len(query.getall(name)) > 1:
                raise _Reject(400, f"{name}: given more than once")
        raw_day = query.get("starting_at")
        if raw_day is None:
            raise _Reject(400, "starting_at: Field required")
        try:
            if not _DATE_RE.fullmatch(raw_day):
                raise ValueError
            day = date.fromisoformat(raw_day)
        except ValueError:
            raise _Reject(400, f"starting_at: invalid date {raw_day!r}, expected YYYY-MM-DD") from None
        raw_limit = query.get("limit", str(DEFAULT_LIMIT))
        if not re.fullmatch(r"[0-9]{1,7}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise _Reject(400, f"limit: must be an integer between 1 and {MAX_LIMIT}, got {raw_limit!r}")
        return day, int(raw_limit), query.get("page")

    def _key_kind(self, request: web.Request) -> KeyKind:
        key = request.headers.get("x-api-key")
        if key is None:
            return "missing"
        if key in self.admin_keys:
            return "admin"
        if key in self.noperm_keys:
            return "noperm"
        return "invalid"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._counter += 1
        request_id = f"req_fake{self._counter:08d}"
        kind = self._key_kind(request)
        status = 200
        try:
            response = await self._respond(request, kind, request_id)
            status = response.status
            return response
        except _Dropped:
            status = 0
            return web.Response(status=500)
        except _Reject as rej:
            status = rej.status
            body = {
                "type": "error",
                "error": {"type": _ERROR_TYPES.get(rej.status, "api_error"), "message": rej.message},
                "request_id": request_id,
            }
            return web.Response(
                status=rej.status,
                body=orjson.dumps(body),
                content_type="application/json",
                headers={"request-id": request_id, **rej.headers},
            )
        finally:
            self.requests.append(
                FakeRequest(
                    time.monotonic(),
                    request.method,
                    request.path,
                    dict(request.query),
                    status,
                    kind,
                    request.headers.get("anthropic-version"),
                    request.headers.get("user-agent"),
                    request_id,
                )
            )

    async def _respond(self, request: web.Request, kind: KeyKind, request_id: str) -> web.StreamResponse:
        if request.path == USAGE_PATH and request.method == "GET":
            if kind == "missing":
                raise _Reject(401, "x-api-key header is required")
            if kind == "invalid":
                raise _Reject(401, "invalid x-api-key")
            if kind == "noperm":
                raise _Reject(403, "This API key does not have permission to use the specified resource")
        day, limit, cursor = self._check(request)
        offset, generation = self._read_cursor(cursor, day) if cursor is not None else (0, -1)
        if self.spend_capped:
            raise _Reject(429, "Your organization has reached its spend limit for this usage tier")
        for fault in self.faults:
            if fault.matches(day, cursor is not None):
                fault.hits += 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.disconnect:
                    if request.transport is not None:
                        request.transport.abort()
                    raise _Dropped
                headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
                if fault.body is not None:
                    return web.Response(
                        status=fault.status,
                        body=fault.body,
                        content_type=fault.content_type,
                        headers={"request-id": request_id, **headers},
                    )
                raise _Reject(fault.status, fault.message, headers)
        if generation < 0:
            generation = self._generations.get(day, 0)
            if self.is_partial(day):
                self._generations[day] = generation + 1
        records = self._records(day, generation)
        chunk = records[offset : offset + limit]
        more = offset + limit < len(records)
        payload = {
            "data": chunk,
            "has_more": more,
            "next_page": self._cursor(day, offset + limit, generation) if more else None,
        }
        return web.Response(
            body=orjson.dumps(payload), content_type="application/json", headers={"request-id": request_id}
        )


@contextlib.contextmanager
def running_in_thread(**kwargs: Any) -> Iterator[AnalyticsApiFake]:
    """Run a fake on its own event loop in a background thread (for synchronous code such as CLIs)."""
    fake = AnalyticsApiFake(**kwargs)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.__aenter__())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="analytics-api-fake", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("analytics fake did not start")
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
