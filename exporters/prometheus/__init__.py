"""The ``prometheus`` destination: Claude Code metrics and event counters on the telemetry endpoint's ``/metrics``.

Prometheus pulls, so this is not a push destination: it takes only the metrics signal (``signals = {"metrics"}``,
``pull = True``), the delivery engine never hands it records, and the service starts it as a metric sink
(:meth:`PrometheusExporter.start_metrics`), which serves only in the worker that serves the telemetry endpoint (the
primary). There a :class:`~.tailer.StoreTailer` reads
every store shard into an :class:`~.accumulator.Accumulator`, and a :class:`~.collector.PrometheusCollector` on the
self-metrics registry yields the series at scrape time. See ``docs/destinations/prometheus.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from prometheus_client import CollectorRegistry

from collector.delivery.outcome import Outcome, Permanent
from collector.delivery.settings import DestinationSettings
from exporters.base import METRICS, DeliveryRecord, Exporter, MetricSink, Payload, SinkContext
from exporters.prometheus.accumulator import Accumulator
from exporters.prometheus.collector import PrometheusCollector, attach, detach
from exporters.prometheus.config import PerUserSettings, PrometheusConfig
from exporters.prometheus.naming import UserLabeler
from exporters.prometheus.tailer import StoreTailer

__all__ = ["PerUserSettings", "PrometheusConfig", "PrometheusExporter"]

log = logging.getLogger(__name__)


class PrometheusExporter(Exporter, MetricSink):
    """Serves accumulated ``claude_code_*`` series for Prometheus to scrape (one per bridge)."""

    signals = frozenset({METRICS})

    type_name: ClassVar[str] = "prometheus"
    config_class: ClassVar[type[DestinationSettings]] = PrometheusConfig  # type: ignore[assignment]
    pull: ClassVar[bool] = True
    singleton: ClassVar[bool] = True

    def __init__(self, name: str, config: PrometheusConfig) -> None:
        super().__init__(name, config)  # type: ignore[arg-type]
        self.cfg = config
        pu = config.per_user
        self.accumulator = Accumulator(
            max_series_per_metric=config.max_series_per_metric,
            series_expiration=float(config.series_expiration),
            users=UserLabeler(pu.mode, pu.allow, pu.salt.get()),
            mcp_servers=config.mcp_servers,
            max_generic_families=config.max_generic_metrics,
        )
        self.tailer: StoreTailer | None = None
        self.collector: PrometheusCollector | None = None
        self._registry: CollectorRegistry | None = None

    async def serve(self, registry: CollectorRegistry, data_dir: str | Path) -> None:
        """Start tailing the store under ``data_dir`` and expose the series through ``registry``."""
        self.tailer = StoreTailer(
            data_dir,
            self.accumulator,
            poll_interval=float(self.cfg.poll_interval),
            poll_batch=self.cfg.poll_batch,
        )
        await self.tailer.start()
        self.collector = PrometheusCollector(self.accumulator, self.tailer.stats)
        attach(registry, self.collector)
        self._registry = registry
        log.info("prometheus exporter %s: serving claude_code_* metrics on the telemetry endpoint", self.name)

    async def start_metrics(self, ctx: SinkContext) -> bool:
        """Serve on ``ctx.registry`` (the telemetry endpoint's); nothing in a worker that does not serve it."""
        if ctx.registry is None:
            return False
        await self.serve(ctx.registry, ctx.data_dir)
        return True

    async def stop_metrics(self) -> None:
        await self.close()

    async def close(self) -> None:
        if self._registry is not None and self.collector is not None:
            detach(self._registry, self.collector)
            self._registry = None
        if self.tailer is not None:
            await self.tailer.stop()
            self.tailer = None

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        """Nothing to send: Prometheus scrapes (the engine never hands records to a pull destination)."""
        return []

    async def push(self, payload: Payload) -> Outcome:
        return Permanent("prometheus is scraped, not pushed to")
