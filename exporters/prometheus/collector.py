"""The ``prometheus_client`` custom collector: the accumulator's series, built fresh on every scrape.

Registered on the service's self-metrics registry, so the ``claude_code_*`` series appear on the telemetry endpoint's
``/metrics`` next to the ``ccbridge_*`` self-metrics. In multi-worker mode that endpoint exposes a registry merged
from the workers' metric files (``collector.telemetry.server.scrape_registry``), which re-registers every collector
listed in the registry's ``_ccbridge_extra`` attribute; :func:`attach` registers in both places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.telemetry.server import attach_collector, detach_collector
from exporters.prometheus.accumulator import COUNTER, Accumulator


class PrometheusCollector:
    """Yields the exported ``claude_code_*`` metrics and the ``ccbridge_prometheus_*`` health of the exporter."""

    def __init__(self, accumulator: Accumulator, tail_stats: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.accumulator = accumulator
        self.tail_stats = tail_stats

    def describe(self) -> list[Metric]:
        """Nothing up front: the metric set is only known at scrape time (avoids a collect at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        for fam in self.accumulator.snapshot():
            metric: CounterMetricFamily | GaugeMetricFamily
            if fam.kind == COUNTER:
                metric = CounterMetricFamily(fam.name, fam.help, labels=fam.labelnames, unit=fam.unit)
                for values, value, created in fam.samples:
                    metric.add_metric(values, value, created=created)
            else:
                metric = GaugeMetricFamily(fam.name, fam.help, labels=fam.labelnames, unit=fam.unit)
                for values, value, _created in fam.samples:
                    metric.add_metric(values, value)
            yield metric
        yield from self._self_metrics()

    def _self_metrics(self) -> Iterator[Metric]:
        stats = self.accumulator.stats()
        overflow = CounterMetricFamily(
            "ccbridge_prometheus_series_overflow",
            "Points and events folded into a metric's __overflow__ series because it reached max_series_per_metric.",
            labels=["metric"],
        )
        for name, n in sorted(stats.overflow.items()):
            overflow.add_metric([name], n)
        yield overflow
        series = GaugeMetricFamily(
            "ccbridge_prometheus_series", "Series exposed per claude_code_* metric.", labels=["metric"]
        )
        for name, n in sorted(stats.series.items()):
            series.add_metric([name], n)
        yield series
        ignored = CounterMetricFamily(
            "ccbridge_prometheus_ignored_points",
            "Stored metric points and records not counted, by reason (out_of_order, unsupported, invalid, ...).",
            labels=["reason"],
        )
        for reason, n in sorted(stats.ignored.items()):
            ignored.add_metric([reason], n)
        yield ignored
        yield CounterMetricFamily(
            "ccbridge_prometheus_counted_points", "Metric points applied to claude_code_* series.", value=stats.points
        )
        yield CounterMetricFamily(
            "ccbridge_prometheus_counted_records",
            "Audit records counted into the event-derived claude_code_* counters.",
            value=stats.records,
        )
        if self.tail_stats is not None:
            tail = self.tail_stats()
            yield CounterMetricFamily(
                "ccbridge_prometheus_tail_errors",
                "Failed reads of a store shard by the Prometheus tailer (retried on the next poll).",
                value=tail.get("errors", 0.0),
            )
            yield CounterMetricFamily(
                "ccbridge_prometheus_tail_read_records",
                "Stored audit records the Prometheus tailer has read from every shard (counted or not).",
                value=tail.get("records_read", 0.0),
            )
            yield GaugeMetricFamily(
                "ccbridge_prometheus_tail_last_success_timestamp_seconds",
                "Unix time of the tailer's last complete poll of every shard.",
                value=tail.get("last_success", 0.0),
            )


def attach(registry: CollectorRegistry, collector: PrometheusCollector) -> None:
    """Register ``collector`` for single-process scrapes and for the merged multi-worker registry."""
    attach_collector(registry, collector)


def detach(registry: CollectorRegistry, collector: PrometheusCollector) -> None:
    """Undo :func:`attach` (idempotent)."""
    detach_collector(registry, collector)
