"""The telemetry endpoint: ``/metrics`` (Prometheus exposition), ``/healthz`` (alive) and ``/readyz`` (ready).

``/readyz`` answers 503 with the reasons while any readiness check fails (storage unusable, receivers not
listening, a destination's health check failing), so a load balancer stops sending traffic to this instance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, exposition

from collector.config import parse_endpoint

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


def scrape_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The registry to expose: in multi-worker mode, the merged view of every worker's metric files."""
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not mp_dir:
        return registry
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=mp_dir)
    for collector in getattr(registry, "_ccbridge_extra", []):
        merged.register(collector)
    return merged


class TelemetryServer:
    """Serves self-metrics and health on its own listener."""

    def __init__(self, endpoint: str, registry: CollectorRegistry, ssl_context: ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.ssl_context = ssl_context
        self.checks: dict[str, ReadinessCheck] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """``check`` returns None when ready, else a short reason shown on ``/readyz``."""
        self.checks[name] = check

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(lambda: encoder(scrape_registry(self.registry)))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        failing = {}
        for name, check in self.checks.items():
            try:
                reason = check()
            except Exception as exc:
                reason = f"check failed: {exc}"
            if reason:
                failing[name] = reason
        if failing:
            return web.json_response({"status": "not ready", "failing": failing}, status=503)
        return web.json_response({"status": "ready"})

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
        log.info("telemetry endpoint on %s://%s:%s (/metrics, /healthz, /readyz)", scheme, host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
