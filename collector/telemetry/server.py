"""The telemetry endpoint: ``/metrics`` (Prometheus exposition), ``/healthz`` (alive) and ``/readyz`` (ready).

``/readyz`` answers 503 with the reasons while a readiness check fails (storage unusable, receivers not listening),
so a load balancer stops sending traffic to this instance. *Advisory* checks (a destination's own health: Splunk
busy, a refused token) are reported in the answer under ``degraded`` without failing it: the store keeps accepting
and the backlog is delivered when the destination is back, whereas taking every replica out of the load balancer
because Splunk is down would make the clients drop their telemetry (``telemetry.readiness_destinations: fail``
turns them into failing checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import GaugeMetricFamily, Metric

from collector.configtypes import parse_endpoint

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], str | None]


def enable_multiprocess(directory: str) -> None:
    """Switch this process's metric values to the shared files of ``directory`` (multi-worker mode).

    prometheus_client chooses where values live when it is first imported; loading the configuration may have
    imported it already, so the choice is made again here, before any metric object exists. Worker processes
    inherit the environment variable and choose correctly at import.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


EXTRA_ATTRIBUTE = "_ccbridge_extra"


def attach_collector(registry: CollectorRegistry, collector: Any) -> None:
    """Register a custom collector on ``registry`` and list it on the registry's ``_ccbridge_extra``, which
    :func:`scrape_registry` adds to the merged multi-worker view (metric files only hold the plain metrics)."""
    registry.register(collector)
    extra = getattr(registry, EXTRA_ATTRIBUTE, None)
    if extra is None:
        extra = []
        setattr(registry, EXTRA_ATTRIBUTE, extra)
    extra.append(collector)


def detach_collector(registry: CollectorRegistry, collector: Any) -> None:
    """Undo :func:`attach_collector` (idempotent)."""
    with contextlib.suppress(KeyError):
        registry.unregister(collector)
    extra = getattr(registry, EXTRA_ATTRIBUTE, None)
    if extra is not None and collector in extra:
        extra.remove(collector)


def scrape_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The registry to expose: in multi-worker mode, the merged view of every worker's metric files."""
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not mp_dir:
        return registry
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=mp_dir)
    for collector in getattr(registry, EXTRA_ATTRIBUTE, []):
        merged.register(collector)
    return merged


class TelemetryServer:
    """Serves self-metrics and health on its own listener."""

    def __init__(self, endpoint: str, registry: CollectorRegistry, ssl_context: ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.ssl_context = ssl_context
        self.checks: dict[str, ReadinessCheck] = {}
        self.advisory: set[str] = set()
        self._collector = ReadinessCollector(self)
        attach_collector(registry, self._collector)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.status_provider: Callable[[], dict[str, Any]] | None = None

    def add_readiness_check(self, name: str, check: ReadinessCheck, *, advisory: bool = False) -> None:
        """``check`` returns None when ready, else a short reason shown on ``/readyz``; an ``advisory`` check's
        reason is shown under ``degraded`` and does not make the instance not-ready."""
        self.checks[name] = check
        if advisory:
            self.advisory.add(name)
        else:
            self.advisory.discard(name)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/status", self.status)
        return app

    async def status(self, request: web.Request) -> web.Response:
        """What ``ccbridge status`` shows: per destination its backlog, last success and error, dead letters; per
        receiver what it accepted and refused (JSON)."""
        if self.status_provider is None:
            return web.json_response({"error": "no status in this process"}, status=404)
        body = self.status_provider()  # on the loop: it reads the delivery workers' state
        return web.json_response(body)

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(lambda: encoder(scrape_registry(self.registry)))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def check_all(self) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """Run every check: the failing ones, the advisory ones that report a problem, and the passing ones."""
        failing: dict[str, str] = {}
        degraded: dict[str, str] = {}
        passing: list[str] = []
        for name, check in list(self.checks.items()):  # scrapes run this in a thread; checks are added on the loop
            try:
                reason = check()
            except Exception as exc:
                reason = f"check failed: {exc}"
            if reason:
                (degraded if name in self.advisory else failing)[name] = reason
            else:
                passing.append(name)
        return failing, degraded, passing

    async def readyz(self, request: web.Request) -> web.Response:
        failing, degraded, _ = self.check_all()
        body: dict[str, object] = {"status": "not ready" if failing else "ready"}
        if failing:
            body["failing"] = failing
        if degraded:
            body["degraded"] = degraded
        return web.json_response(body, status=503 if failing else 200)

    async def start(self) -> None:
        host, port = parse_endpoint(self.endpoint)
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        scheme = "https" if self.ssl_context is not None else "http"
        log.info("telemetry endpoint on %s://%s:%s (/metrics, /healthz, /readyz, /status)", scheme, host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        detach_collector(self.registry, self._collector)


class ReadinessCollector:
    """``ccbridge_ready`` and ``ccbridge_check_ok{check}`` at scrape time, from the same checks as ``/readyz``, so a
    destination that is only *degraded* (advisory) can still be alerted on."""

    def __init__(self, server: TelemetryServer) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        failing, degraded, passing = self.server.check_all()
        yield GaugeMetricFamily(
            "ccbridge_ready",
            "1 while /readyz answers 200 (no failing readiness check), else 0.",
            value=0 if failing else 1,
        )
        checks = GaugeMetricFamily(
            "ccbridge_check_ok",
            "1 per readiness check that passes, 0 while it reports a problem (exporter:<name> checks are advisory "
            "unless telemetry.readiness_destinations is fail).",
            labels=["check"],
        )
        for name in sorted((*failing, *degraded, *passing)):
            checks.add_metric([name], 0 if name in failing or name in degraded else 1)
        yield checks
