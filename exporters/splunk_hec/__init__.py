"""The ``splunk_hec`` destination: audit records to a Splunk HTTP Event Collector (``exporters.splunk_hec[/<name>]``).

Requests are ``POST {endpoint}/services/collector/event`` with ``Authorization: Splunk <token>``, a body of
concatenated JSON envelopes (see :mod:`exporters.splunk_hec.events`), gzip-compressed by default, and an
``X-Splunk-Request-Channel`` header on every request.

**Channel.** A random GUID generated when the exporter is created and kept for the process lifetime (one per
destination and process; the shards of a process share it). Acknowledgement ids only mean something to the client
that posted the request, and after a restart everything unconfirmed is re-sent from the cursor anyway, so nothing is
gained by reusing a channel across restarts; a channel derived from host and destination would be shared by the
worker processes of one bridge (each would then compete for Splunk's per-channel limits). Splunk forgets idle
channels by itself. The header is sent even with ``ack: false``, so a token that has acknowledgement switched on
still works (its ``ackId`` is then ignored) instead of failing with HEC code 10.

**Indexer acknowledgement** (``ack: true``): a push succeeds only once Splunk reports its ``ackId`` indexed (polled
by :class:`~exporters.splunk_hec.acks.AckPoller`, one poll for all outstanding ids). No acknowledgement within
``ack_timeout`` -> ``Retry``: the request is sent again, so its events can be indexed twice (inherent to HEC
acknowledgement; each event carries the record ``id`` for de-duplication in searches). If the token has
acknowledgement disabled, a 200 without ``ackId`` is taken as delivered and a warning is logged once.

**Answers.**

- 2xx: delivered (codes 24/25, "approaching capacity", too).
- 400 with ``invalid-event-number`` N: ``Partial``: events before N are indexed (accepted, never re-sent), event N
  is refused (dead letters), the rest is unsent and the engine sends it again.
- 401/403 and token codes 1-4, 21, 22: ``Permanent``, logged at error level, counted in
  ``ccbridge_exporter_auth_failures_total{destination}`` and reported by :meth:`SplunkHecExporter.health` (so on
  ``/readyz``) until a request with the token succeeds again.
- 413: ``Permanent(413)``; the engine splits a request of several events in halves and sends each again; a single
  event refused as too large stays ``Permanent``, with a reason naming HEC's ``max_content_length``.
- 408, 429, 5xx (busy code 9, queues full 18-20, shutting down 23, queue at capacity 26/27) and transport errors:
  ``Retry``, honouring ``Retry-After``.
- any other 4xx: ``Permanent``.

The exporter keeps no delivery state: a payload is one request, and what became of its events is in the outcome.

**Health.** ``GET {endpoint}/services/collector/health`` at start and every ``health_check_interval``, plus a token
probe (``POST /services/collector/ack`` with no ids: 200 or code 14 "ACK is disabled" prove the token valid, 401/403
do not), feed :meth:`SplunkHecExporter.health`, e.g. ``splunk health: queues full (code 18)``. A health path that
answers 404 (a proxy forwarding only ``/event``) is not a problem; "unreachable" is cleared by any accepted request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import orjson

from collector.delivery.outcome import Outcome, Partial, Permanent, Refused, Retry, Success
from collector.delivery.settings import DestinationSettings
from exporters.base import DeliveryRecord, Exporter, LogThrottle, Payload, SinkContext, gzip_compress
from exporters.fieldpolicy import Action, FieldPolicy
from exporters.httpclient import HttpAnswer, new_session, post
from exporters.splunk_hec.acks import AckPoller, AckQueryError, AckState
from exporters.splunk_hec.config import COLLECTOR_PATH, RoutingRule, SplunkHecConfig
from exporters.splunk_hec.events import EventEncoder, compile_rules, split_envelopes

__all__ = ["SPLUNK_DEFAULT_POLICY", "HecReply", "RoutingRule", "SplunkHecConfig", "SplunkHecExporter"]

log = logging.getLogger(__name__)

SPLUNK_DEFAULT_POLICY: dict[str, Action] = {}
"""Splunk is the system of record: the field policy keeps everything unless configured."""

AUTH_CODES = frozenset({1, 2, 3, 4, 21, 22})
HEALTH_TEXT = {
    18: "queues full",
    19: "ack service unavailable",
    20: "queues full, ack service unavailable",
    23: "server is shutting down",
}
HEALTH_TIMEOUT = 10.0
LOG_EVERY = 60.0
UNREACHABLE = "splunk health: unreachable"


@dataclass(frozen=True)
class HecReply:
    """The parts of a HEC answer body that matter (``{"text", "code", "ackId", "invalid-event-number"}``)."""

    code: int | None = None
    text: str = ""
    ack_id: int | None = None
    invalid_event: int | None = None
    acks: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: str) -> HecReply:
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return cls(text=" ".join(body.split())[:200])

        def integer(key: str) -> int | None:
            value = doc.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        text = doc.get("text")
        acks = doc.get("acks")
        return cls(
            code=integer("code"),
            text=text[:200] if isinstance(text, str) else "",
            ack_id=integer("ackId"),
            invalid_event=integer("invalid-event-number"),
            acks=acks if isinstance(acks, dict) else None,
        )

    def describe(self, status: int) -> str:
        out = f"HTTP {status}"
        if self.code is not None:
            out += f", HEC code {self.code}"
        if self.text:
            out += f": {self.text}"
        return out


def _event_body(config: SplunkHecConfig) -> Callable[[dict[str, Any]], bytes] | None:
    """The OCSF mapper for ``schema: ocsf``; None sends the audit record itself."""
    if getattr(config, "schema", "ccbridge") != "ocsf":
        return None
    from exporters.ocsf import ocsf_body

    return ocsf_body


class SplunkHecExporter(Exporter):
    """Splunk HEC ``/event`` with optional indexer acknowledgement (see the module docstring)."""

    type_name: ClassVar[str] = "splunk_hec"
    config_class: ClassVar[type[DestinationSettings]] = SplunkHecConfig

    def __init__(self, name: str, config: SplunkHecConfig) -> None:
        super().__init__(name, config)
        self.cfg = config
        self.host = config.host or socket.gethostname()
        self.channel = str(uuid.uuid4())
        base = config.base_url + COLLECTOR_PATH
        self.event_url = base + "/event"
        self.ack_url = f"{base}/ack?channel={self.channel}"
        self.health_url = base + "/health"
        self.encoder = EventEncoder(
            host=self.host,
            source=config.source,
            sourcetype=config.sourcetype,
            index=config.index,
            rules=compile_rules(config.routing),
            policy=FieldPolicy.build(SPLUNK_DEFAULT_POLICY, config),
            event_body=_event_body(config),
        )
        self.acks = AckPoller(
            self._query_acks, interval=float(config.ack_poll_interval), timeout=float(config.ack_timeout), name=name
        )
        self.session: aiohttp.ClientSession | None = None
        self.auth_failures = 0
        self._auth_metric: Any = None
        self._auth_problem: str | None = None
        self._health_problem: str | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._auth_log = LogThrottle(LOG_EVERY)
        self._index_log = LogThrottle(LOG_EVERY)
        self._warned_no_ack = False
        self._warned_no_health = False

    def __repr__(self) -> str:
        return f"SplunkHecExporter({self.name!r}, endpoint={self.cfg.endpoint!r}, ack={self.cfg.ack})"

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def bind(self, ctx: SinkContext) -> None:
        """Count token refusals in the process's self-metrics (``ccbridge_exporter_auth_failures_total``)."""
        self.bind_metrics(ctx.self_metrics)

    def bind_metrics(self, metrics: Any) -> None:
        counter = getattr(metrics, "exporter_auth_failures", None)
        self._auth_metric = counter.labels(self.name) if counter is not None else None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            limit = max(8, self.cfg.concurrency * 4)
            self.session = new_session(self.cfg.tls, self.cfg.timeout, limit=limit)
        return self.session

    async def start(self) -> None:
        """Open the session and start health checks (in the background: an unreachable Splunk must not delay
        the bridge's start)."""
        self._session()
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name=f"splunk-health-{self.name}")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._health_task
            self._health_task = None
        await self.acks.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def health(self) -> str | None:
        """A refused token first, then the last health check's finding; None when Splunk looks usable."""
        return self._auth_problem or self._health_problem

    # -- encoding --------------------------------------------------------------------------------------------------

    def _body(self, events: Sequence[bytes]) -> bytes:
        data = b"\n".join(events) + b"\n"
        return gzip_compress(data) if self.cfg.compression == "gzip" else data

    def _headers(self, *, compressed: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Splunk {self.cfg.token.get()}",
            "X-Splunk-Request-Channel": self.channel,
            "Content-Type": "application/json",
        }
        if compressed:
            headers["Content-Encoding"] = "gzip"
        return headers

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        envelopes = [self.encoder.envelope(r) for r in records]
        content = {"Content-Type": "application/json"}
        if self.cfg.compression == "gzip":
            content["Content-Encoding"] = "gzip"
        out = []
        sizes = [len(e.data) for e in envelopes]
        for lo, hi in split_envelopes(sizes, self.cfg.max_request_bytes, self.cfg.max_request_events):
            meta = {"indexes": [e.index for e in envelopes[lo:hi]]}
            body = self._body([e.data for e in envelopes[lo:hi]])
            out.append(Payload(list(records[lo:hi]), body, dict(content), meta))
        return out

    # -- sending ---------------------------------------------------------------------------------------------------

    async def push(self, payload: Payload) -> Outcome:
        """One ``/event`` request for the payload; the outcome says what became of each of its events."""
        records = payload.records
        count = len(records)
        answer = await self._post(self.event_url, payload.data, compressed=self._compressed)
        if not isinstance(answer, HttpAnswer):
            return answer
        status = answer.status
        reply = HecReply.parse(answer.body)
        if 200 <= status < 300:
            self._auth_ok()
            if self._health_problem is not None and self._health_problem.startswith(UNREACHABLE):
                self._health_problem = None  # it answered after all
            if not self.cfg.ack:
                return Success("accepted")
            if reply.ack_id is None:
                if not self._warned_no_ack:
                    self._warned_no_ack = True
                    log.warning(
                        "%s: ack is on but Splunk returned no ackId: the HEC token has indexer acknowledgement "
                        "disabled, so delivery is confirmed on receipt only (enable it on the token)",
                        self.name,
                    )
                return Success("indexed (acknowledged)")  # as far as this token can tell
            result = await self.acks.wait(reply.ack_id)
            if result.state is AckState.ACKED:
                return Success("indexed (acknowledged)")
            return Retry(f"{result.reason}; re-sending the request (its events may be indexed twice)")
        reason = reply.describe(status)
        if status in (401, 403) or reply.code in AUTH_CODES:
            self._auth_failed(reason)
            return Permanent(f"Splunk refused the HEC token ({reason})", status)
        if status == 413:
            if count == 1:  # the engine splits larger requests; one event refused alone is final
                size = len(self.encoder.envelope(records[0]).data)
                reason = (
                    f"event of {size} bytes refused as too large (HTTP 413); raise the HEC max_content_length "
                    "(limits.conf [http_input]) or reduce what the record carries (field policy)"
                )
            return Permanent(reason, 413)
        bad = reply.invalid_event
        if status == 400 and bad is not None and 0 <= bad < count:
            indexes = payload.meta["indexes"]
            detail = f"Splunk refused this event ({reason}; invalid-event-number {bad})"
            if reply.code == 7:
                detail = (
                    f"Splunk refused index {indexes[bad] or '(token default)'!r} for this event: "
                    f"the HEC token may not write there ({reason})"
                )
                if (held := self._index_log.ready()) is not None:
                    log.error("%s: %s%s", self.name, detail, f" ({held} more since the last message)" if held else "")
            # events before N are indexed (never re-sent), N is refused, the rest was not looked at
            return Partial(records[:bad], [Refused(records[bad], detail, status)], records[bad + 1 :], detail, status)
        if status in (408, 429) or status >= 500:
            return Retry(reason, answer.retry_after, status)
        return Permanent(reason, status)

    async def _post(self, url: str, body: bytes, *, compressed: bool) -> HttpAnswer | Outcome:
        """:func:`exporters.httpclient.post`, which must not raise; if it does anyway (an answer it cannot read),
        the request counts as unanswered (``Retry``)."""
        try:
            return await post(self._session(), url, body, self._headers(compressed=compressed))
        except (ValueError, UnicodeError, aiohttp.ClientError, OSError) as exc:
            return Retry(f"unreadable answer: {type(exc).__name__}: {exc}")

    @property
    def _compressed(self) -> bool:
        return self.cfg.compression == "gzip"

    # -- token state ------------------------------------------------------------------------------------------------

    def _auth_failed(self, reason: str) -> None:
        self.auth_failures += 1
        if self._auth_metric is not None:
            self._auth_metric.inc()
        self._auth_problem = f"Splunk refused the HEC token: {reason}"
        if (held := self._auth_log.ready()) is not None:
            log.error(
                "%s: Splunk refused the HEC token (%s); records go to dead letters until the token is fixed "
                "(then: ccbridge dlq replay --destination %s)%s",
                self.name,
                reason,
                self.name,
                f" ({held} more refusals since the last message)" if held else "",
            )

    def _auth_ok(self) -> None:
        if self._auth_problem is not None:
            self._auth_problem = None
            log.info("%s: Splunk accepts the HEC token again", self.name)

    # -- acknowledgement ---------------------------------------------------------------------------------------------

    async def _query_acks(self, ids: list[int]) -> dict[int, bool]:
        body = orjson.dumps({"acks": ids})
        answer = await self._post(self.ack_url, body, compressed=False)
        if not isinstance(answer, HttpAnswer):
            raise AckQueryError(answer.reason)
        reply = HecReply.parse(answer.body)
        status = answer.status
        if status == 200 and reply.acks is not None:
            out = {}
            for key, value in reply.acks.items():
                with contextlib.suppress(ValueError):
                    out[int(key)] = value is True
            return out
        reason = f"acknowledgement poll: {reply.describe(status)}"
        if status in (401, 403) or reply.code in AUTH_CODES:
            self._auth_failed(reason)
            raise AckQueryError(reason, fatal=True)
        if status == 400:
            raise AckQueryError(reason, fatal=True)
        raise AckQueryError(reason)

    # -- health ------------------------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_health()
            except Exception:
                log.exception("%s: health check failed unexpectedly", self.name)
            if self.cfg.health_check_interval <= 0:
                return
            await asyncio.sleep(float(self.cfg.health_check_interval))

    async def check_health(self) -> str | None:
        """Ask ``/services/collector/health`` and probe the token; returns (and keeps) what :meth:`health` says."""
        problem: str | None
        try:
            timeout = aiohttp.ClientTimeout(total=min(float(self.cfg.timeout), HEALTH_TIMEOUT))
            async with self._session().get(self.health_url, timeout=timeout) as resp:
                status, text = resp.status, await resp.text(errors="replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            problem = f"{UNREACHABLE} ({type(exc).__name__}: {exc})"
        else:
            reply = HecReply.parse(text)
            if 200 <= status < 300:
                problem = None
            elif status == 404:
                problem = None
                if not self._warned_no_health:
                    self._warned_no_health = True
                    log.warning(
                        "%s: %s answers 404 (a proxy that only forwards /event?); health checks cover the token only",
                        self.name,
                        self.health_url,
                    )
            elif reply.code is not None:
                problem = f"splunk health: {HEALTH_TEXT.get(reply.code, reply.text or 'unhealthy')} (code {reply.code})"
            else:
                problem = f"splunk health: HTTP {status}" + (f" {reply.text}" if reply.text else "")
        if problem != self._health_problem:
            if problem is None:
                log.info("%s: Splunk HEC is healthy again", self.name)
            else:
                log.warning("%s: %s", self.name, problem)
        self._health_problem = problem
        if problem is None or not problem.startswith(UNREACHABLE):
            await self._probe_token()
        return self.health()

    async def _probe_token(self) -> None:
        """``/ack`` with no ids: 200 (acknowledgement on) or 400 code 14 (off) prove the token valid."""
        answer = await self._post(self.ack_url, b'{"acks":[]}', compressed=False)
        if not isinstance(answer, HttpAnswer):
            return
        reply = HecReply.parse(answer.body)
        if answer.status in (401, 403) or reply.code in AUTH_CODES:
            self._auth_failed(f"token check: {reply.describe(answer.status)}")
        elif answer.status == 200 or reply.code == 14:
            self._auth_ok()
            if reply.code == 14 and self.cfg.ack and not self._warned_no_ack:
                self._warned_no_ack = True
                log.warning(
                    "%s: ack is on but the HEC token has indexer acknowledgement disabled; delivery is confirmed "
                    "on receipt only (enable acknowledgement on the token)",
                    self.name,
                )
