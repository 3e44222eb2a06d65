"""Service lifecycle: build the pipeline from config, start in order, drain on SIGTERM.

Start order: store (so nothing is accepted that cannot be kept), telemetry, then receivers. Stop order is the
reverse: receivers stop accepting and finish in-flight requests (each already waits for its commit), then the store
finishes its queue and closes. A restart opens the same store and continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from collector.config import Config
from collector.console.server import ConsoleServer
from collector.delivery.api import METRICS, RECORDS, Exporter, MetricSink, SinkContext, takes
from collector.delivery.engine import DeliveryEngine, all_shards
from collector.delivery.registry import create as create_exporter
from collector.enrich.enricher import create_enricher
from collector.pipeline import Pipeline
from collector.processing.redact import Redactor
from collector.receivers.auth import TokenAuthenticator, server_ssl_context
from collector.receivers.context import ReceiverContext
from collector.receivers.inflight import InflightBudget
from collector.receivers.otlp_grpc import OtlpGrpcReceiver
from collector.receivers.otlp_http import OtlpHttpReceiver
from collector.runtime import tune_gc
from collector.store import open_store, open_usage_history
from collector.store.postgres import require_backend_available
from collector.telemetry.logs import fields
from collector.telemetry.selfmetrics import SelfMetrics
from collector.telemetry.server import TelemetryServer

log = logging.getLogger(__name__)


class Service:
    """One bridge process: receivers, store and (unless a secondary worker) the telemetry endpoint."""

    def __init__(
        self, cfg: Config, *, worker_index: int = 0, serve_telemetry: bool = True, reuse_port: bool = False
    ) -> None:
        require_backend_available(cfg.storage)  # before anything is opened or bound
        self.cfg = cfg
        self.worker_index = worker_index
        self.serve_telemetry = serve_telemetry
        self.reuse_port = reuse_port
        self.metrics = SelfMetrics()
        self.store = open_store(cfg.storage, shard=worker_index)
        self.enricher = create_enricher(cfg)
        self.pipeline = Pipeline(self.store, self.metrics, enricher=self.enricher, redactor=self._redactor())
        self.pipeline.max_value_size = int(cfg.receivers.max_attribute_value_size)
        self.pipeline.max_record_size = int(cfg.receivers.max_record_size)
        self.auth = TokenAuthenticator(cfg.receivers.auth) if cfg.receivers.auth.enabled else None
        self.store.on_commit_stats = self._commit_stats
        self.http: OtlpHttpReceiver | None = None
        self.grpc: OtlpGrpcReceiver | None = None
        self.telemetry: TelemetryServer | None = None
        self.console: ConsoleServer | None = None
        self.delivery: DeliveryEngine | None = None
        self._stopping = asyncio.Event()
        self.started = False
        self._analytics: list[object] = []
        self._chain_task: asyncio.Task[None] | None = None
        self.sinks: list[Exporter] = []

    def _redactor(self) -> Redactor | None:
        """The secret redactor (``redaction``), counting matches per kind in ``ccbridge_redactions_total``."""
        if not self.cfg.redaction.enabled:
            return None
        counter = self.metrics.redactions
        return Redactor(self.cfg.redaction, on_match=lambda kind: counter.labels(kind).inc())

    def _commit_stats(self, rows: int, seconds: float) -> None:
        self.metrics.storage_commits.inc()
        self.metrics.storage_commit_rows.inc(rows)
        self.metrics.storage_commit_duration.observe(seconds)

    def _readiness_storage(self) -> str | None:
        healthy = self.store.healthy
        self.metrics.storage_healthy.set(1 if healthy else 0)
        if not healthy and self.store.last_error is not None:
            return f"storage: {self.store.last_error.reason}"
        return None

    def _readiness_receivers(self) -> str | None:
        return None if self.started else "receivers not started"

    async def start(self) -> None:
        cfg = self.cfg
        self.store.open()
        if self.enricher is not None:
            await self.enricher.start()
        await self._start_delivery()
        rcv = cfg.receivers
        ctx = ReceiverContext(
            self.pipeline,
            self.metrics,
            max_depth=rcv.max_attribute_depth,
            storage_retry_after=cfg.storage.retry_after,
            reuse_port=self.reuse_port,
            admit=self.delivery.admit if self.delivery is not None else None,
            inflight=InflightBudget(
                int(rcv.max_inflight_bytes),
                self.metrics.inflight_bytes.set,
                self.metrics.inflight_waits.inc,
                share=float(rcv.max_inflight_share),
            ),
        )
        if self.serve_telemetry:
            self.telemetry = TelemetryServer(
                cfg.telemetry.endpoint, self.metrics.registry, server_ssl_context(cfg.telemetry.tls)
            )
            self.telemetry.status_provider = self.status
            self.telemetry.add_readiness_check("storage", self._readiness_storage)
            self.telemetry.add_readiness_check("receivers", self._readiness_receivers)
            advisory = cfg.telemetry.readiness_destinations == "report"
            for exp in self.delivery.exporters if self.delivery is not None else []:
                self.telemetry.add_readiness_check(f"exporter:{exp.name}", exp.health, advisory=advisory)
            await self.telemetry.start()
        if rcv.otlp.grpc.enabled:
            grpc_auth = self.auth.grpc if self.auth is not None else None
            self.grpc = OtlpGrpcReceiver(rcv.otlp.grpc, ctx, authenticate=grpc_auth)
            await self.grpc.start()
        if rcv.otlp.http.enabled:
            http_auth = self.auth.http if self.auth is not None else None
            self.http = OtlpHttpReceiver(rcv.otlp.http, ctx, authenticate=http_auth)
            await self.http.start()
        if cfg.enrichment.analytics_api.enabled and self.worker_index == 0:
            await self._start_analytics()
        if cfg.console.enabled and self.worker_index == 0:
            await self._start_console()
        self.started = True
        self._chain_task = asyncio.create_task(self._publish_chain_heads(), name="chain-heads")

    async def _start_console(self) -> None:
        """The reviewers' console (primary worker only); its ``trail_access`` records go through this pipeline."""
        from collector.console.server import ConsoleServer

        async def append(rec: dict[str, object]) -> None:
            await self.pipeline.append_record(rec)

        console = ConsoleServer(
            self.cfg.console, self.cfg.storage.directory, append, server_ssl_context(self.cfg.console.tls)
        )
        await console.start()
        self.console = console

    async def _publish_chain_heads(self) -> None:
        """Every ``storage.chain_head_interval``, publish this shard's chain head as a record (and at shutdown)."""
        import socket

        host = socket.gethostname()
        interval = float(self.cfg.storage.chain_head_interval)
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), interval)
                try:
                    await self.pipeline.publish_chain_head(host)
                except Exception as exc:
                    log.warning("could not publish the chain head: %s", exc)
        except asyncio.CancelledError:
            pass

    def shards_to_deliver(self) -> list[int]:
        """This worker's own shard; the primary also adopts shards of workers that no longer exist."""
        shards = [self.worker_index]
        if self.worker_index == 0:
            shards += [i for i in all_shards(self.cfg.storage.directory) if i >= self.cfg.server.workers]
        return shards

    async def _start_delivery(self) -> None:
        """Every enabled destination by the signals it declares: record exporters to the delivery engine, metric
        sinks started with this worker's store shards (and, in the worker serving the telemetry endpoint, its
        registry, where pull destinations such as Prometheus are served)."""
        active = {k: v for k, v in self.cfg.exporters.items() if v.enabled}
        exps = [create_exporter(key, cfg) for key, cfg in active.items()]
        serving = self.serve_telemetry and self.worker_index == 0
        ctx = SinkContext(
            data_dir=Path(self.cfg.storage.directory),
            shards=tuple(self.shards_to_deliver()),
            worker_index=self.worker_index,
            self_metrics=self.metrics,
            registry=self.metrics.registry if serving else None,
        )
        for exp in exps:
            exp.bind(ctx)
        records = [e for e in exps if takes(e, RECORDS)]
        loop = asyncio.get_running_loop()
        engine = DeliveryEngine(
            self.cfg.storage.directory,
            self.shards_to_deliver(),
            records,
            self.metrics,
            retention=float(self.cfg.storage.retention),
            run_retention=self._retention,
            lease_ttl=float(self.cfg.delivery.lease_ttl),
        )
        if records:

            def wake_delivery() -> None:
                loop.call_soon_threadsafe(engine.notify)

            self.store.on_commit = wake_delivery
        await engine.start()
        self.delivery = engine
        for exp in exps:
            if takes(exp, METRICS) and isinstance(exp, MetricSink) and await exp.start_metrics(ctx):
                self.sinks.append(exp)

    async def _stop_sinks(self) -> None:
        """Metric sinks stop before the engine, so a last submission still has its connections."""
        for sink in self.sinks:
            try:
                if isinstance(sink, MetricSink):
                    await sink.stop_metrics()
            except Exception as exc:
                log.error("error while stopping %s: %s", sink.name, exc)
        self.sinks = []

    async def _retention(self, shard: int, cutoff_ms: int, max_seq: int | None) -> int:
        if shard != self.worker_index:
            return 0
        return await self.store.delete_expired(cutoff_ms, max_seq)

    async def _start_analytics(self) -> None:
        """Periodic Analytics API sync: one per bridge (the primary worker), history in ``analytics.db``."""
        from collector.enrich.analytics_client import AnalyticsClient
        from collector.enrich.sync import UsageSyncScheduler
        from collector.reports.metrics import AnalyticsGauges

        api = self.cfg.enrichment.analytics_api
        store = open_usage_history(self.cfg.storage.directory)
        client = AnalyticsClient(api)
        gauges = AnalyticsGauges(store, self.cfg.reports)
        gauges.register(self.metrics.registry)
        await gauges.start()
        enricher = self.enricher

        def synced(_result: object) -> None:
            gauges.request_refresh()
            if enricher is not None:
                enricher.request_refresh()

        scheduler = UsageSyncScheduler(client, store, api, on_cycle=synced)
        scheduler.start()
        self._analytics = [scheduler, client, store, gauges]

    async def _stop_analytics(self) -> None:
        if not self._analytics:
            return
        scheduler, client, store, gauges = self._analytics
        await scheduler.stop()  # type: ignore[attr-defined]
        await client.close()  # type: ignore[attr-defined]
        await gauges.stop()  # type: ignore[attr-defined]
        store.close()  # type: ignore[attr-defined]
        self._analytics = []

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within ``server.shutdown_timeout``, close the store."""
        grace = float(self.cfg.server.shutdown_timeout)
        self.started = False
        self._stopping.set()
        if self._chain_task is not None:
            await asyncio.gather(self._chain_task, return_exceptions=True)
        if self.http is not None:
            self.http.accepting = False
        if self.grpc is not None:
            self.grpc.accepting = False
        if self.console is not None:
            await self.console.stop()
        results = await asyncio.gather(
            *(r.stop(grace) for r in [self.grpc] if r is not None),
            *(r.stop() for r in [self.http] if r is not None),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                log.error("error while stopping a receiver: %s", r)
        await self._stop_analytics()
        if self.enricher is not None:
            await self.enricher.stop()
        await self._stop_sinks()
        pending: dict[str, int] = {}
        if self.delivery is not None:
            await self.delivery.stop(grace)
            pending = {k: v for k, v in self.delivery.pending().items() if v}
        await asyncio.to_thread(self.store.close)
        if self.telemetry is not None:
            await self.telemetry.stop()
        if pending:
            what = ", ".join(f"{name}: {n} record(s)" for name, n in sorted(pending.items()))
            log.info(
                "stopped; still to deliver (kept in the store, sent on the next start): %s",
                what,
                extra=fields(pending=pending),
            )
        else:
            log.info("stopped; nothing pending delivery", extra=fields(pending={}))

    def request_stop(self) -> None:
        self._stopping.set()

    def reload_auth(self) -> None:
        """SIGHUP: re-read the receiver tokens file (a no-op without one), and log what was reloaded."""
        if self.auth is None or not self.cfg.receivers.auth.tokens_file:
            log.info("SIGHUP: nothing to reload (no receivers.auth.tokens_file; other settings need a restart)")
            return
        if self.auth.reload():
            log.info(
                "SIGHUP: reloaded receiver tokens from %s (other settings need a restart)",
                self.cfg.receivers.auth.tokens_file,
                extra=fields(reloaded=["receivers.auth.tokens_file"]),
            )
        else:
            log.warning(
                "SIGHUP: could not reload %s; the previous tokens stay in force", self.cfg.receivers.auth.tokens_file
            )

    def status(self) -> dict[str, Any]:
        """What ``ccbridge status`` shows of a running bridge (``/status`` on the telemetry endpoint)."""
        from collector import __version__

        return {
            "version": __version__,
            "data_dir": self.cfg.storage.directory,
            "source": "running bridge",
            "destinations": self.delivery.status() if self.delivery is not None else {},
            "receivers": self.metrics.receiver_status(),
        }

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_auth)
        await self.start()
        tune_gc()
        try:
            await self._stopping.wait()
        finally:
            log.info("shutting down")
            await self.stop()
