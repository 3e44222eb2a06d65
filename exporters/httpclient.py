"""HTTP plumbing shared by the HTTP-based destinations: TLS options, one session, a POST that never raises.

:func:`post` maps transport failures (timeouts, refused or reset connections, TLS errors) to a ``Retry`` outcome
and HTTP answers to :func:`~collector.delivery.outcome.outcome_for_status`, so every exporter treats them alike.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from dataclasses import dataclass

import aiohttp

from collector.configtypes import ConfigError, Duration
from collector.delivery.outcome import Outcome, Retry, outcome_for_status
from collector.delivery.retry import parse_retry_after

USER_AGENT = "ccbridge/0.1"


@dataclass(frozen=True)
class TLSClientConfig:
    """TLS to a destination: trust (``ca_file``), client certificate (mTLS), or, for tests only, no verification."""

    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def validate(self, path: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{path}: cert_file and key_file must be set together")


def ssl_context(tls: TLSClientConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def new_session(tls: TLSClientConfig, timeout: Duration, limit: int = 16) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=ssl_context(tls), limit=limit)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=float(timeout)),
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
    )


@dataclass
class HttpAnswer:
    status: int
    body: str
    headers: dict[str, str]
    retry_after: float | None


_SLOTS: weakref.WeakKeyDictionary[aiohttp.ClientSession, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots(session: aiohttp.ClientSession) -> asyncio.Semaphore:
    """One permit per connection of ``session``'s pool."""
    slots = _SLOTS.get(session)
    if slots is None:
        connector = session.connector
        limit = connector.limit if connector is not None and connector.limit else 100
        slots = _SLOTS[session] = asyncio.Semaphore(limit)
    return slots


async def post(session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]) -> HttpAnswer | Outcome:
    """POST ``data``; the answer, or a ``Retry`` outcome when no answer came (timeout, connection or TLS error).

    A request first waits for a free connection of the session's pool, outside its timeout: aiohttp's total
    timeout would otherwise count time spent queued, and a batch whose requests go out together could time out
    before being sent, then be sent again.
    """
    async with _slots(session):
        return await _post(session, url, data, headers)


async def _post(session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]) -> HttpAnswer | Outcome:
    try:
        async with session.post(url, data=data, headers=headers) as resp:
            body = await resp.text(errors="replace")
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            return HttpAnswer(resp.status, body, hdrs, parse_retry_after(hdrs.get("retry-after")))
    except TimeoutError:
        return Retry("timeout waiting for the destination")
    except aiohttp.ClientSSLError as exc:
        return Retry(f"TLS error: {exc}")
    except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return Retry(f"connection error: {type(exc).__name__}: {exc}")


def default_outcome(answer: HttpAnswer | Outcome) -> Outcome:
    if isinstance(answer, HttpAnswer):
        return outcome_for_status(answer.status, answer.body, answer.retry_after)
    return answer
