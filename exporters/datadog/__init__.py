"""The ``datadog`` destination: audit records as logs (Logs intake v2) and counters as metric series (Metrics v2).

Logs go through the delivery engine like every destination: :meth:`DatadogExporter.encode` turns a batch into one or
more ``/api/v2/logs`` requests (gzip JSON arrays within 1000 entries and 5 MB, see :mod:`exporters.datadog.logs`),
and :meth:`DatadogExporter.push` sends one and maps the answer (:mod:`exporters.datadog.intake`):

- 2xx: ``Success``.
- 413: ``Permanent(413)``; the delivery engine splits a request of several entries in halves and sends each half as
  its own request (so a retry never re-sends an accepted half), down to single entries; an entry refused alone is
  dead-lettered.
- 429: ``Retry`` after ``Retry-After`` or ``X-RateLimit-Reset``; 408 and 5xx: ``Retry``.
- 401/403: ``Permanent`` (dead letters), logged as an error (throttled), counted in
  ``ccbridge_exporter_auth_failures_total{destination}`` and reported by :meth:`DatadogExporter.health` (so on
  ``/readyz``) until a request succeeds again.
- other 4xx (400 ...): ``Permanent`` with the API's error text.

With ``send_metrics`` the destination also takes the metrics signal (``signals``): the service binds it to the
store and self-metrics (:meth:`DatadogExporter.bind`) and starts it as a metric sink
(:meth:`DatadogExporter.start_metrics`): a :class:`~exporters.datadog.tailer.SeriesTailer` per worker reads the
store's records and Claude Code metric points, aggregates counts and submits them to ``/api/v2/series`` every
``metrics_interval`` (see :mod:`exporters.datadog.series` for what is counted and why). Without ``send_metrics`` it
takes records only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp

from collector.configtypes import ConfigError, Duration, Secret
from collector.delivery.outcome import Outcome, Permanent, Retry, Success
from collector.delivery.settings import DestinationSettings
from exporters.base import (
    METRICS,
    RECORDS,
    DeliveryRecord,
    Exporter,
    LogThrottle,
    MetricSink,
    Payload,
    SinkContext,
    gzip_compress,
)
from exporters.datadog import intake
from exporters.datadog.logs import LogEncoder, json_array, split_entries
from exporters.datadog.series import FORBIDDEN_TAG_ATTRIBUTES, POINT_TAG_ATTRIBUTES, Aggregator, PointConverter
from exporters.datadog.tailer import SeriesTailer
from exporters.fieldpolicy import PRIVACY_DEFAULTS, FieldPolicy, FieldPolicyConfig
from exporters.httpclient import HttpAnswer, TLSClientConfig, new_session, post

log = logging.getLogger(__name__)

AUTH_LOG_INTERVAL = 60.0
_TAG_RE = re.compile(r"^[A-Za-z][^,\s]*:[^,\s]+$")
_SAFE_KEY_RE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class DatadogExporterConfig(DestinationSettings, FieldPolicyConfig):
    """Keys of one ``exporters.datadog[/<name>]`` section (plus the common delivery keys and the field policy).

    ``fields`` / ``hash_salt`` come from :class:`~exporters.fieldpolicy.FieldPolicyConfig`; the Datadog defaults are
    :data:`~exporters.fieldpolicy.PRIVACY_DEFAULTS`. Without ``hash_salt`` the salt is derived from the API key
    (stable while the key is), so the defaults work without extra configuration.
    """

    site: str = "datadoghq.com"
    api_key: Secret = Secret("")
    service: str = "claude-code"
    hostname: str = ""
    tags: list[str] = field(default_factory=list)
    logs_endpoint: str = ""
    metrics_endpoint: str = ""
    send_metrics: bool = True
    metrics_interval: Duration = Duration(10.0)
    metrics_tag_attributes: list[str] = field(default_factory=list)
    compression: Literal["gzip", "none"] = "gzip"
    timeout: Duration = Duration(30.0)
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)

    def validate(self, path: str) -> None:  # noqa: C901 - flat list of independent per-key config checks
        DestinationSettings.validate(self, path)
        if getattr(self, "schema", "ccbridge") != "ccbridge":
            raise ConfigError(f"{path}.schema: the datadog destination sends ccbridge audit records only")
        for key in self.fields:
            if not key or key.startswith(".") or key.endswith("."):
                raise ConfigError(f"{path}.fields: invalid field path {key!r}")
        if self.site not in intake.SITES:
            hint = ""
            if self.site.startswith("app."):
                hint = f" (use the site, not the UI host: {self.site.removeprefix('app.')!r})"
            raise ConfigError(
                f"{path}.site: unknown Datadog site {self.site!r}{hint}; one of {', '.join(intake.SITES)}"
            )
        if not self.api_key:
            raise ConfigError(f"{path}.api_key: required (a Datadog API key; use ${{env:DD_API_KEY}})")
        if not _SAFE_KEY_RE.match(self.api_key.get()):
            raise ConfigError(f"{path}.api_key: must not contain spaces or control characters")
        if not self.service.strip():
            raise ConfigError(f"{path}.service: must not be empty")
        if self.hostname and not _SAFE_KEY_RE.match(self.hostname):
            raise ConfigError(f"{path}.hostname: must not contain spaces or control characters")
        for i, tag in enumerate(self.tags):
            if not _TAG_RE.match(tag):
                raise ConfigError(f"{path}.tags[{i}]: {tag!r} is not a key:value tag (no commas or spaces)")
        for key in ("logs_endpoint", "metrics_endpoint"):
            url = getattr(self, key)
            if url:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise ConfigError(f"{path}.{key}: must be an http:// or https:// URL (got {url!r})")
        if not 1 <= self.metrics_interval <= 300 or self.metrics_interval != int(self.metrics_interval):
            raise ConfigError(f"{path}.metrics_interval: must be a whole number of seconds between 1s and 5m")
        for i, attr in enumerate(self.metrics_tag_attributes):
            if attr in FORBIDDEN_TAG_ATTRIBUTES:
                raise ConfigError(
                    f"{path}.metrics_tag_attributes[{i}]: {attr!r} is per user/session (unbounded tag cardinality, "
                    "and no identities in metric tags); use the logs for it"
                )
            if not attr.strip():
                raise ConfigError(f"{path}.metrics_tag_attributes[{i}]: must not be empty")

    @property
    def logs_url(self) -> str:
        return _endpoint(self.logs_endpoint, intake.LOGS_PATH) or intake.logs_url(self.site)

    @property
    def series_url(self) -> str:
        return _endpoint(self.metrics_endpoint, intake.SERIES_PATH) or intake.series_url(self.site)

    def effective_salt(self) -> str:
        """``hash_salt``, else a secret derived from the API key."""
        if self.hash_salt:
            return self.hash_salt.get()
        return hashlib.sha256(b"ccbridge/datadog/hash-salt\x00" + self.api_key.get().encode()).hexdigest()


def _endpoint(url: str, api_path: str) -> str:
    """An override URL; the API path is appended when the URL has no path of its own."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        return url.rstrip("/") + api_path
    return url


class DatadogExporter(Exporter, MetricSink):
    """Logs to ``/api/v2/logs`` through the engine, counts to ``/api/v2/series`` through a store tailer."""

    type_name: ClassVar[str] = "datadog"
    config_class: ClassVar[type[DestinationSettings]] = DatadogExporterConfig
    signals = frozenset({RECORDS, METRICS})

    def __init__(self, name: str, config: DatadogExporterConfig) -> None:
        super().__init__(name, config)
        self.cfg = config
        if not config.send_metrics:
            self.signals = frozenset({RECORDS})
        self.hostname = config.hostname or socket.gethostname()
        self.logs_url = config.logs_url
        self.series_url = config.series_url
        policy = FieldPolicy.build(PRIVACY_DEFAULTS, FieldPolicyConfig(config.fields, Secret(config.effective_salt())))
        self.encoder = LogEncoder(policy, service=config.service, hostname=self.hostname, tags=config.tags)
        self.session: aiohttp.ClientSession | None = None
        self.tailer: SeriesTailer | None = None
        self._tailer_task: asyncio.Task[None] | None = None
        self._tailer_stop = asyncio.Event()
        self._store: tuple[Path, list[int], int] | None = None
        self._auth_metric: Any = None
        self._skipped_metric: Any = None
        self._auth_problem: str | None = None
        self._auth_log = LogThrottle(AUTH_LOG_INTERVAL)
        self.auth_failures = 0

    def __repr__(self) -> str:
        return f"DatadogExporter({self.name!r}, site={self.cfg.site!r}, logs_url={self.logs_url!r})"

    # -- wiring ----------------------------------------------------------------------------------------------------

    def bind(self, ctx: SinkContext) -> None:
        """The running service's self-metrics (auth failures, skipped points) and this worker's store shards."""
        self.bind_metrics(ctx.self_metrics)
        self.bind_store(ctx.data_dir, ctx.shards, ctx.worker_index)

    def bind_metrics(self, metrics: Any) -> None:
        """Use the process's self-metrics: auth failures and skipped metric points."""
        auth = getattr(metrics, "exporter_auth_failures", None)
        self._auth_metric = auth.labels(self.name) if auth is not None else None
        self._skipped_metric = getattr(metrics, "exporter_metric_points_skipped", None)

    def bind_store(self, data_dir: str | Path, shards: Sequence[int], worker_index: int = 0) -> None:
        """The store shards this worker delivers; enables the metrics tailer (with ``send_metrics``)."""
        self._store = (Path(data_dir), list(shards), worker_index)

    def _new_tailer(self) -> SeriesTailer | None:
        if not self.cfg.send_metrics or self._store is None:
            return None
        data_dir, shards, worker = self._store
        tag_attributes = dict(POINT_TAG_ATTRIBUTES)
        for attr in self.cfg.metrics_tag_attributes:
            tag_attributes.setdefault(attr, attr.replace(".", "_"))
        interval = int(self.cfg.metrics_interval)
        aggregator = Aggregator(interval, (*self.cfg.tags, f"ccbridge_worker:{worker}"), self.hostname)
        return SeriesTailer(
            self.name,
            data_dir,
            shards,
            aggregator,
            PointConverter(tag_attributes),
            self.send_series,
            compress=self.cfg.compression == "gzip",
            interval=float(interval),
            count_skipped=self._count_skipped,
        )

    def _count_skipped(self, reason: str, n: int) -> None:
        if self._skipped_metric is not None:
            self._skipped_metric.labels(self.name, reason).inc(n)

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = new_session(self.cfg.tls, self.cfg.timeout, limit=max(8, self.cfg.concurrency * 4))
        return self.session

    async def start(self) -> None:
        self._session()

    async def start_metrics(self, ctx: SinkContext) -> bool:
        """Start the series tailer on ``ctx``'s shards (binding them first); False without ``send_metrics``."""
        self.bind(ctx)
        self._session()
        if self._tailer_task is None:
            self.tailer = self._new_tailer()
            if self.tailer is None:
                return False
            self._tailer_stop.clear()
            self._tailer_task = asyncio.create_task(
                self.tailer.run(self._tailer_stop), name=f"datadog-series-{self.name}"
            )
        return True

    async def stop_metrics(self) -> None:
        """Stop the series tailer after its last bounded submission."""
        if self._tailer_task is not None:
            self._tailer_stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tailer_task
            self._tailer_task = None

    async def close(self) -> None:
        await self.stop_metrics()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def health(self) -> str | None:
        """Why the destination is unusable (Datadog refused the API key), or None."""
        return self._auth_problem

    # -- logs --------------------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "DD-API-KEY": self.cfg.api_key.get()}
        if self.cfg.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        return headers

    def _pack(self, raw: bytes) -> bytes:
        return gzip_compress(raw) if self.cfg.compression == "gzip" else raw

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        """Logs requests for ``records``: at most 1000 entries and 5 MB of JSON each, gzip unless configured off.

        The API key is added when sending, so payloads (which may reach logs or dead letters) never hold it.
        """
        entries = [(r, self.encoder.encode(r)) for r in records]
        out = []
        for group in split_entries(entries):
            encoded = [e for _, e in group]
            out.append(Payload([r for r, _ in group], self._pack(json_array(encoded))))
        return out

    async def push(self, payload: Payload) -> Outcome:
        """One logs request (all or nothing at the intake). A 413 comes back as ``Permanent(413)``, which the engine
        splits in halves for several entries; for a single entry it is final, with the entry's size in the reason."""
        outcome = await self._post_logs(payload.data)
        if isinstance(outcome, Permanent) and outcome.status == 413 and len(payload.records) == 1:
            size = len(self.encoder.encode(payload.records[0]))
            return Permanent(f"{outcome.reason} (one log entry of {size} bytes refused as too large)", 413)
        return outcome

    async def _post_logs(self, data: bytes) -> Outcome:
        answer = await post(self._session(), self.logs_url, data, self._headers())
        if not isinstance(answer, HttpAnswer):
            return answer
        outcome = intake.outcome_of(answer)
        self._note_auth(answer.status, outcome, "logs")
        return outcome

    # -- series -------------------------------------------------------------------------------------------------------

    async def send_series(self, body: bytes) -> tuple[Outcome, list[str]]:
        """POST one series body; the outcome and the per-point errors of a 2xx answer."""
        answer = await post(self._session(), self.series_url, body, self._headers())
        if not isinstance(answer, HttpAnswer):
            return answer, []
        outcome = intake.outcome_of(answer)
        self._note_auth(answer.status, outcome, "metrics")
        errors = intake.series_errors(answer.body) if isinstance(outcome, Success) else []
        return outcome, errors

    def _note_auth(self, status: int, outcome: Outcome, what: str) -> None:
        if isinstance(outcome, Success):
            if self._auth_problem is not None:
                log.info("%s: Datadog accepts the API key again", self.name)
            self._auth_problem = None
            return
        if status not in intake.AUTH_STATUSES:
            return
        self.auth_failures += 1
        if self._auth_metric is not None:
            self._auth_metric.inc()
        reason = outcome.reason if isinstance(outcome, Permanent | Retry) else f"HTTP {status}"
        self._auth_problem = f"Datadog refused the API key ({what} intake): {reason}"
        held = self._auth_log.ready()
        if held is not None:
            log.error(
                "%s: Datadog refused the API key on the %s intake (%s); log batches go to dead letters and metrics "
                "wait until the key is fixed (exporters.%s.api_key / site)%s",
                self.name,
                what,
                reason,
                self.name,
                f"; {held} more refusals since the last message" if held else "",
            )
