"""Async client of the Claude Code Analytics API (``GET /v1/organizations/usage_report/claude_code``).

One call chain per UTC day: the first request carries ``starting_at=YYYY-MM-DD`` and ``limit``; while the
response says ``has_more`` the next request repeats ``starting_at`` with ``page=<next_page>``. Records are
parsed tolerantly into :class:`DailyUsage` (both ``date`` formats, missing tool keys and optional fields
default, unknown fields kept in ``extra``, the record as received kept in ``raw``).

Failure handling, per page request:

* connection errors, timeouts, 408, 5xx and 529 are retried with exponential backoff and jitter, honouring a
  ``retry-after`` header (delta-seconds or HTTP-date) when present; 409 is retried once;
* 429 with ``retry-after`` waits exactly that long (plus a little jitter); 429 *without* ``retry-after`` is
  the spend-cap case of the spec: it is retried with backoff a few times and then raised as
  :class:`SpendCapError` instead of being retried forever;
* everything together is bounded by ``max_retry_elapsed``; a wait that would overrun it is not started and
  :class:`RetriesExhaustedError` (or :class:`RateLimitedError` for a long ``retry-after``) is raised;
* 401/403/402/400/404 and other 4xx are raised at once as typed errors whose message says what is wrong
  (for 401/403: invalid or revoked key, not an Admin key, missing permission) and never contains the key;
* every wait (backoff, ``retry-after``, pacing) ends early when the ``shutdown`` event is set, raising
  :class:`ShutdownRequested`.

Pacing follows the spec's policy (§5: no published limit for this endpoint; at most 1 request/s *while
paginating*; always honour ``retry-after``): the requests of one page walk (one day's cursor chain, retries
included) start at least ``1 / max_requests_per_second`` apart, while walks of different days are independent,
so a backfill fetches several days concurrently (as many as the sync's ``concurrency``). A 429 with
``retry-after`` pauses every walk of the client until it has passed, not only the one that received it.
Redirects are not followed, so the key is only ever sent to ``base_url``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from importlib import metadata
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from collector.delivery.retry import parse_retry_after
from collector.enrich.analytics_config import AnalyticsApiConfig, is_loopback_host

USAGE_REPORT_PATH = "/v1/organizations/usage_report/claude_code"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
ADMIN_KEY_PREFIX = "sk-ant-admin"
KNOWN_TOOL_KEYS = ("edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool")

_KNOWN_RECORD_KEYS = frozenset(
    {
        "date",
        "actor",
        "organization_id",
        "customer_type",
        "subscription_type",
        "terminal_type",
        "core_metrics",
        "tool_actions",
        "model_breakdown",
    }
)
_KEY_LIKE = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")
_EMPTY: Mapping[str, Any] = MappingProxyType({})

log = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        return metadata.version("ccbridge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"ccbridge/{_package_version()}"


# ----------------------------------------------------------------------------------------------------
# Errors


class AnalyticsApiError(Exception):
    """A sync step failed. ``str()`` is safe to log: it never contains the API key.

    ``status`` is the HTTP status (``None`` for transport errors), ``error_type`` the API's ``error.type`` and
    ``request_id`` the ``request-id`` response header, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        details = [f"HTTP {status}"] if status is not None else []
        if error_type:
            details.append(error_type)
        if request_id:
            details.append(f"request-id {request_id}")
        super().__init__(f"{message} ({', '.join(details)})" if details else message)
        self.status = status
        self.error_type = error_type
        self.request_id = request_id


class AuthenticationError(AnalyticsApiError):
    """401: the key is missing, invalid, revoked or expired, or is not an Admin API key."""


class PermissionDeniedError(AnalyticsApiError):
    """403: the key is valid but lacks permission for the Claude Code usage report."""


class BillingError(AnalyticsApiError):
    """402: a billing or payment problem on the organization."""


class InvalidRequestError(AnalyticsApiError):
    """400 and other non-retryable 4xx (also 404 and unexpected redirects): a parameter or URL problem."""


class SpendCapError(AnalyticsApiError):
    """429 without ``retry-after`` kept coming back: the organization's spend cap, not a rate limit."""


class RateLimitedError(AnalyticsApiError):
    """429 whose ``retry-after`` is longer than the remaining retry budget; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RetriesExhaustedError(AnalyticsApiError):
    """Transient failures (5xx, 529, timeouts, connection errors) outlasted ``max_retry_elapsed``."""


class UnreachableError(AnalyticsApiError):
    """The API's host name does not resolve, or nothing accepts connections there: retrying within one sync would
    not help, so it fails at once (the bridge's periodic sync tries again on its next cycle)."""


def unreachable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the API cannot be reached at all (DNS failure, connection refused), or None when it is a
    transient transport error worth retrying (timeouts, resets, dropped connections)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve (DNS lookup failed)"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    return None


class ResponseFormatError(AnalyticsApiError):
    """A 2xx response whose body is not the documented page shape."""


class ShutdownRequested(AnalyticsApiError):
    """The shutdown event was set while a request was waiting."""


def scrub(text: str, key: str = "") -> str:
    """Remove ``key`` and anything shaped like an Anthropic key from ``text``."""
    if key:
        text = text.replace(key, "[redacted]")
    return _KEY_LIKE.sub("sk-ant-[redacted]", text)


# ----------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class ToolActionCounts:
    accepted: int = 0
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One ``model_breakdown`` element; ``cost_cents`` is ``estimated_cost.amount`` (minor units, cents)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_currency: str = "USD"
    cost_cents: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True, eq=False)
class DailyUsage:
    """One record of the usage report: one actor's Claude Code activity on one UTC day.

    ``actor_id`` is the email address for ``user_actor`` and the key *name* for ``api_actor``.
    ``tool_actions`` always holds the four documented edit tools (0 when absent) plus any unknown keys.
    ``extra`` holds unknown top-level fields; ``raw`` is the record exactly as received.
    """

    day: date
    actor_type: str
    actor_id: str
    terminal_type: str
    customer_type: str
    subscription_type: str | None = None
    organization_id: str | None = None
    num_sessions: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    commits: int = 0
    pull_requests: int = 0
    tool_actions: Mapping[str, ToolActionCounts] = field(default_factory=dict)
    models: tuple[ModelUsage, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Storage key ``(date, actor_type, actor_id, terminal_type, customer_type)`` (spec §4)."""
        return (self.day.isoformat(), self.actor_type, self.actor_id, self.terminal_type, self.customer_type)

    @property
    def email(self) -> str | None:
        return self.actor_id if self.actor_type == "user_actor" else None

    @property
    def api_key_name(self) -> str | None:
        return self.actor_id if self.actor_type == "api_actor" else None

    @property
    def edit_accepted(self) -> int:
        """Accepted suggestions over all tools in ``tool_actions`` (all of them are edit tools)."""
        return sum(t.accepted for t in self.tool_actions.values())

    @property
    def edit_rejected(self) -> int:
        return sum(t.rejected for t in self.tool_actions.values())

    @property
    def acceptance_rate(self) -> float | None:
        """accepted / (accepted + rejected) over all edit tools; ``None`` when there was no decision."""
        total = self.edit_accepted + self.edit_rejected
        return self.edit_accepted / total if total else None

    @property
    def cost_cents(self) -> Decimal:
        """Estimated cost in US cents (sum over models whose currency is USD)."""
        return sum((m.cost_cents for m in self.models if m.cost_currency == "USD"), Decimal(0))

    @property
    def cost_usd(self) -> Decimal:
        """Estimated cost in US dollars: the API's amounts are cents, so this is ``cost_cents / 100``."""
        return self.cost_cents / 100


class RecordFormatError(ValueError):
    """A record cannot be identified (no usable actor); it is skipped and counted."""


def _int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        try:
            return int(Decimal(value.strip()))
        except (InvalidOperation, ValueError):
            return 0
    return 0


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or value is None:
        return Decimal(0)
    if isinstance(value, int):
        return Decimal(value)
    try:
        result = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return result if result.is_finite() else Decimal(0)


def _str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else _EMPTY


def parse_usage_date(value: object) -> date | None:
    """Parse ``YYYY-MM-DD`` or an RFC 3339 timestamp (``2025-09-08T00:00:00Z``) to its UTC date."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except (ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()


def parse_record(obj: object, fallback_day: date) -> DailyUsage:
    """Parse one record tolerantly; raises :class:`RecordFormatError` only when the actor is unusable."""
    if not isinstance(obj, dict):
        raise RecordFormatError("record is not an object")
    actor = _map(obj.get("actor"))
    actor_type = _str(actor.get("type"))
    if actor_type == "user_actor":
        actor_id = _str(actor.get("email_address"))
    elif actor_type == "api_actor":
        actor_id = _str(actor.get("api_key_name"))
    else:
        ids = [v for k, v in sorted(actor.items()) if k != "type" and isinstance(v, str) and v]
        actor_id = ids[0] if ids else ""
    if not actor_type or not actor_id:
        raise RecordFormatError(f"record has no usable actor (type {actor_type or 'missing'!r})")

    core = _map(obj.get("core_metrics"))
    lines = _map(core.get("lines_of_code"))
    tools: dict[str, ToolActionCounts] = {name: ToolActionCounts() for name in KNOWN_TOOL_KEYS}
    for name, counts in _map(obj.get("tool_actions")).items():
        c = _map(counts)
        tools[str(name)] = ToolActionCounts(_int(c.get("accepted")), _int(c.get("rejected")))

    models = []
    breakdown = obj.get("model_breakdown")
    for item in breakdown if isinstance(breakdown, list) else ():
        m = _map(item)
        tokens = _map(m.get("tokens"))
        cost = _map(m.get("estimated_cost"))
        models.append(
            ModelUsage(
                model=_str(m.get("model"), "unknown"),
                input_tokens=_int(tokens.get("input")),
                output_tokens=_int(tokens.get("output")),
                cache_read_tokens=_int(tokens.get("cache_read")),
                cache_creation_tokens=_int(tokens.get("cache_creation")),
                cost_currency=_str(cost.get("currency"), "USD").upper(),
                cost_cents=_decimal(cost.get("amount")),
            )
        )

    subscription = obj.get("subscription_type")
    organization = obj.get("organization_id")
    return DailyUsage(
        day=parse_usage_date(obj.get("date")) or fallback_day,
        actor_type=actor_type,
        actor_id=actor_id,
        terminal_type=_str(obj.get("terminal_type"), "unknown") or "unknown",
        customer_type=_str(obj.get("customer_type"), "unknown") or "unknown",
        subscription_type=subscription if isinstance(subscription, str) else None,
        organization_id=organization if isinstance(organization, str) else None,
        num_sessions=_int(core.get("num_sessions")),
        lines_added=_int(lines.get("added")),
        lines_removed=_int(lines.get("removed")),
        commits=_int(core.get("commits_by_claude_code")),
        pull_requests=_int(core.get("pull_requests_by_claude_code")),
        tool_actions=tools,
        models=tuple(models),
        extra={k: v for k, v in obj.items() if k not in _KNOWN_RECORD_KEYS},
        raw=obj,
    )


@dataclass(frozen=True, slots=True)
class UsagePage:
    """One parsed response page. ``skipped`` counts records that had no usable actor."""

    day: date
    records: tuple[DailyUsage, ...]
    has_more: bool
    next_page: str | None
    request_id: str | None = None
    skipped: int = 0


def parse_usage_page(payload: object, day: date, request_id: str | None = None) -> UsagePage:
    """Parse a decoded response body; raises :class:`ResponseFormatError` if it is not a page."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ResponseFormatError("response is not a usage page (no 'data' array)", request_id=request_id)
    next_page = payload.get("next_page")
    next_page = next_page if isinstance(next_page, str) and next_page else None
    has_more = payload.get("has_more")
    has_more = bool(has_more) if isinstance(has_more, bool) else next_page is not None
    records = []
    skipped = 0
    for item in payload["data"]:
        try:
            records.append(parse_record(item, day))
        except RecordFormatError as exc:
            skipped += 1
            log.warning("analytics: skipped a record for %s: %s (request-id %s)", day, exc, request_id)
    if has_more and next_page is None:
        raise ResponseFormatError("has_more is true but next_page is missing", request_id=request_id)
    return UsagePage(day, tuple(records), has_more, next_page, request_id, skipped)


# ----------------------------------------------------------------------------------------------------
# Client


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff shape. Delays are ``min(max_delay, base_delay * 2**n)`` scaled by a random 0.5..1 factor."""

    base_delay: float = 0.5
    max_delay: float = 30.0
    spend_cap_after: int = 3
    conflict_retries: int = 1


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to ``on_retry`` before each wait; ``status`` is ``None`` for transport errors."""

    day: date
    attempt: int
    reason: str
    status: int | None
    delay: float
    request_id: str | None


class WalkPacer:
    """Spaces the request starts of one page walk at least ``interval`` seconds apart (0: no spacing)."""

    __slots__ = ("interval", "next_slot")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_slot = 0.0

    def claim(self, now: float) -> float:
        """Reserve the next start slot at or after ``now``; returns the seconds to wait for it."""
        if self.interval <= 0:
            return 0.0
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        return slot - now


@dataclass(frozen=True, slots=True)
class DayFetch:
    """All pages of one day. ``fetched_at`` is when the walk started (the data boundary)."""

    day: date
    records: list[DailyUsage]
    pages: int
    skipped_records: int
    fetched_at: datetime


def _error_details(body: bytes) -> tuple[str | None, str]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        return None, " ".join(text.split())
    error = _map(payload.get("error")) if isinstance(payload, dict) else _EMPTY
    return (_str(error.get("type")) or None), _str(error.get("message"))


class AnalyticsClient:
    """Fetches usage pages; use as ``async with AnalyticsClient(cfg) as client``.

    ``session`` may be shared (it is then not closed here). ``shutdown`` interrupts every wait.
    ``on_retry`` is called before each retry wait (for metrics and tests).
    """

    def __init__(
        self,
        config: AnalyticsApiConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        shutdown: asyncio.Event | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self._config = config
        self._key = config.admin_api_key.get()
        self._session = session
        self._owns_session = session is None
        self.shutdown = shutdown if shutdown is not None else asyncio.Event()
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        rps = config.max_requests_per_second
        self._interval = 1.0 / rps if rps > 0 else 0.0
        self._paused_until = 0.0
        self._url = config.api_origin + USAGE_REPORT_PATH
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"AnalyticsClient(url={self._url!r}, key={'set' if self._key else 'missing'})"

    async def __aenter__(self) -> AnalyticsClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            host = urlsplit(self._url).hostname or ""
            self._session = aiohttp.ClientSession(trust_env=not is_loopback_host(host))
        return self._session

    # -- waiting -------------------------------------------------------------------------------------

    def _check_shutdown(self) -> None:
        if self.shutdown.is_set():
            raise ShutdownRequested("shutdown requested; analytics request abandoned")

    async def _sleep(self, delay: float) -> None:
        self._check_shutdown()
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self.shutdown.wait(), timeout=delay)
        except TimeoutError:
            return
        self._check_shutdown()

    def new_pacer(self) -> WalkPacer:
        """A pacer for one page walk, at the configured ``max_requests_per_second``."""
        return WalkPacer(self._interval)

    async def _pace(self, pacer: WalkPacer) -> None:
        """Wait for the walk's next slot and for any client-wide ``retry-after`` pause."""
        while True:
            now = time.monotonic()
            pause = self._paused_until - now
            if pause <= 0:
                break
            await self._sleep(pause)
        await self._sleep(pacer.claim(time.monotonic()))

    # -- one request ---------------------------------------------------------------------------------

    async def _send(self, day: date, page: str | None) -> tuple[int, Mapping[str, str], bytes]:
        params = {"starting_at": day.isoformat(), "limit": str(self._config.page_limit)}
        if page is not None:
            params["page"] = page
        headers = {
            "x-api-key": self._key,
            "anthropic-version": self._config.anthropic_version,
            "user-agent": USER_AGENT,
            "accept": "application/json",
        }
        timeout = aiohttp.ClientTimeout(total=float(self._config.request_timeout))
        self.requests_sent += 1
        async with self._get_session().get(
            self._url, params=params, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            length = resp.content_length
            if length is not None and length > MAX_RESPONSE_BYTES:
                raise ResponseFormatError(f"response of {length} bytes exceeds the {MAX_RESPONSE_BYTES} cap")
            chunks = []
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ResponseFormatError(f"response exceeds the {MAX_RESPONSE_BYTES} byte cap")
                chunks.append(chunk)
            return resp.status, resp.headers, b"".join(chunks)

    def _fatal(self, status: int, error_type: str | None, message: str, request_id: str | None) -> Exception:
        api_message = scrub(message, self._key)
        said = f": API said {api_message!r}" if api_message else ""
        kw: dict[str, Any] = {"status": status, "error_type": error_type, "request_id": request_id}
        if status == 401:
            if not self._key:
                problem = "no Admin API key was sent (configure admin_api_key)"
            elif not self._key.startswith(ADMIN_KEY_PREFIX):
                problem = (
                    "the key is not an Admin API key (Admin keys start with sk-ant-admin…; "
                    "create one in Console → Settings → Admin keys)"
                )
            else:
                problem = "the Admin API key is invalid, revoked or expired"
            return AuthenticationError(f"authentication failed: {problem}{said}", **kw)
        if status == 403:
            return PermissionDeniedError(
                "permission denied: the Admin API key lacks permission to read the Claude Code usage "
                f"report (or the organization cannot use it){said}",
                **kw,
            )
        if status == 402:
            return BillingError(f"billing problem on the organization{said}", **kw)
        if status == 404:
            return InvalidRequestError(
                f"usage report not found: check base_url, or the endpoint is unavailable for this "
                f"organization type{said}",
                **kw,
            )
        if 300 <= status < 400:
            return InvalidRequestError("unexpected redirect; check base_url (redirects are not followed)", **kw)
        if status == 400:
            return InvalidRequestError(f"request rejected: bad parameter or cursor{said}", **kw)
        return InvalidRequestError(f"request rejected{said}", **kw)

    async def fetch_page(self, day: date, page: str | None = None, *, pacer: WalkPacer | None = None) -> UsagePage:
        """Fetch and parse one page of ``day``, retrying transient failures within ``max_retry_elapsed``.

        ``pacer`` is the walk's pacer (:meth:`iter_pages` passes one); without it the attempts of this call are
        paced among themselves only.
        """
        pacer = pacer if pacer is not None else self.new_pacer()
        started = time.monotonic()
        deadline = started + float(self._config.max_retry_elapsed)
        attempt = 0
        bare_429 = 0
        conflicts = 0
        while True:
            await self._pace(pacer)
            attempt += 1
            status: int | None = None
            request_id: str | None = None
            retry_after: float | None = None
            error_type: str | None = None
            try:
                status, headers, body = await self._send(day, page)
            except aiohttp.InvalidURL:
                raise InvalidRequestError("base_url does not form a valid request URL") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                unreachable = unreachable_reason(exc)
                if unreachable is not None:
                    host = getattr(exc, "host", None) or "the API host"
                    port = getattr(exc, "port", None)
                    where = f"{host}:{port}" if port else str(host)
                    raise UnreachableError(
                        f"cannot reach the Analytics API at {where}: {unreachable} (check base_url and the network)"
                    ) from None
                reason = f"connection error ({type(exc).__name__})"
                bare_429 = 0
            else:
                request_id = headers.get("request-id")
                if 200 <= status < 300:
                    try:
                        payload = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        raise ResponseFormatError(
                            "response body is not JSON", status=status, request_id=request_id
                        ) from None
                    return parse_usage_page(payload, day, request_id)
                error_type, message = _error_details(body)
                retry_after = parse_retry_after(headers.get("retry-after"))
                reason = f"HTTP {status}" + (f" {error_type}" if error_type else "")
                if status == 429 and retry_after is None:
                    bare_429 += 1
                    if bare_429 >= self._retry.spend_cap_after:
                        raise SpendCapError(
                            f"rate limited {bare_429} times in a row without retry-after: the "
                            "organization's spend cap (usage tier limit) is probably reached; raise the "
                            "limit in the Console",
                            status=status,
                            error_type=error_type,
                            request_id=request_id,
                        )
                else:
                    bare_429 = 0
                if status == 409 and conflicts < self._retry.conflict_retries:
                    conflicts += 1
                elif not (status in (408, 429) or status >= 500):
                    raise self._fatal(status, error_type, message, request_id)

            if retry_after is not None:
                delay = retry_after + random.uniform(0.0, min(1.0, retry_after * 0.1))
            else:
                delay = min(self._retry.max_delay, self._retry.base_delay * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
            now = time.monotonic()
            if now + delay > deadline:
                elapsed = now - started
                kw: dict[str, Any] = {"status": status, "error_type": error_type, "request_id": request_id}
                if status == 429 and retry_after is not None:
                    raise RateLimitedError(
                        f"rate limited for {day}: retry-after {retry_after:.0f}s exceeds the remaining retry "
                        f"budget (max_retry_elapsed)",
                        retry_after=retry_after,
                        **kw,
                    )
                raise RetriesExhaustedError(
                    f"gave up on {day} after {attempt} attempts in {elapsed:.1f}s; last: {reason}", **kw
                )
            if status == 429 and retry_after is not None:
                self._paused_until = max(self._paused_until, now + retry_after)
            log.warning(
                "analytics: %s for %s (attempt %d, request-id %s); retrying in %.2fs",
                reason,
                day,
                attempt,
                request_id,
                delay,
            )
            if self._on_retry is not None:
                self._on_retry(RetryEvent(day, attempt, reason, status, delay, request_id))
            await self._sleep(delay)

    async def iter_pages(self, day: date) -> AsyncIterator[UsagePage]:
        """Yield every page of ``day`` in order, following ``next_page`` while ``has_more``."""
        page: str | None = None
        seen: set[str] = set()
        pacer = self.new_pacer()
        while True:
            result = await self.fetch_page(day, page, pacer=pacer)
            log.debug(
                "analytics: %s page %d: %d records (request-id %s)",
                day,
                len(seen) + 1,
                len(result.records),
                result.request_id,
            )
            yield result
            if not result.has_more or result.next_page is None:
                return
            if result.next_page in seen:
                raise ResponseFormatError(f"pagination loop on {day}: cursor repeated", request_id=result.request_id)
            seen.add(result.next_page)
            page = result.next_page

    async def fetch_day(self, day: date) -> DayFetch:
        """Fetch all pages of ``day`` (one UTC calendar day)."""
        fetched_at = datetime.now(UTC)
        records: list[DailyUsage] = []
        pages = skipped = 0
        async for page in self.iter_pages(day):
            pages += 1
            skipped += page.skipped
            records.extend(page.records)
        return DayFetch(day, records, pages, skipped, fetched_at)
