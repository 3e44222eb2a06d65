"""Self-metrics of the bridge (prefix ``ccbridge_``), served on the telemetry endpoint's ``/metrics``.

One :class:`SelfMetrics` per process, on its own registry so tests can run several services side by side. Its
meaning for an operator is documented in ``docs/operations.md``.
"""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

# Counters and histograms would otherwise each add a ``*_created`` gauge family that no dashboard or alert uses.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SelfMetrics:
    """The bridge's own counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            "ccbridge_receiver_accepted_items",
            "Items (log records, metric points, spans) durably stored, by signal and transport.",
            ["signal", "transport"],
            registry=r,
        )
        self.refused = Counter(
            "ccbridge_receiver_refused_requests",
            "Requests answered with an error, by signal, transport and reason.",
            ["signal", "transport", "reason"],
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "ccbridge_receiver_inflight_bytes",
            "Request bytes (decompressed) being decoded and stored now; bounded by receivers.max_inflight_bytes.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_waits = Counter(
            "ccbridge_receiver_inflight_waits",
            "Requests that waited for room under receivers.max_inflight_bytes before being decoded.",
            registry=r,
        )
        self.duplicates = Counter(
            "ccbridge_receiver_duplicate_records",
            "Audit records received again with an id already stored (exporter retries); stored once.",
            registry=r,
        )
        self.truncated = Counter(
            "ccbridge_receiver_truncated_records",
            "Records (log events, metric points, spans) whose strings were cut to receivers.max_attribute_value_size "
            "or receivers.max_record_size; marked attributes_truncated.",
            registry=r,
        )
        self.id_collisions = Counter(
            "ccbridge_receiver_id_collisions",
            "Audit records that arrived with the id of a stored record but different content: stored under a new "
            "id and flagged id_collision (see docs/security.md).",
            registry=r,
        )
        self.request_latency = Histogram(
            "ccbridge_receiver_request_duration_seconds",
            "Time from request received to answer, including the durable commit.",
            ["signal", "transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.records_by_kind = Counter(
            "ccbridge_records",
            "Audit records produced by normalization, by kind.",
            ["kind"],
            registry=r,
        )
        self.delivery_sent = Counter(
            "ccbridge_exporter_sent_records", "Records the destination confirmed.", ["destination"], registry=r
        )
        self.delivery_failed = Counter(
            "ccbridge_exporter_failed_records",
            "Records that failed permanently or ran out of retry time (they went to dead letters).",
            ["destination"],
            registry=r,
        )
        self.delivery_retries = Counter(
            "ccbridge_exporter_retries",
            "Push attempts that will be retried (timeouts, 429, 5xx, ...).",
            ["destination"],
            registry=r,
        )
        self.delivery_dead_letters = Counter(
            "ccbridge_exporter_dead_letter_records",
            "Records written to the dead-letter store.",
            ["destination"],
            registry=r,
        )
        self.delivery_dropped = Counter(
            "ccbridge_exporter_dropped_records",
            "Records dropped by the drop_oldest backlog policy (also dead-lettered).",
            ["destination"],
            registry=r,
        )
        self.exporter_auth_failures = Counter(
            "ccbridge_exporter_auth_failures",
            "Requests a destination refused because of its credentials (revoked, disabled or wrong token).",
            ["destination"],
            registry=r,
        )
        self.exporter_metric_points_skipped = Counter(
            "ccbridge_exporter_metric_points_skipped",
            "Records or metric points not counted in a destination's metric series, by reason (too_old: outside "
            "the destination's time window; unsupported/invalid: not a usable sum); rejected: series points the "
            "destination's API refused or dropped.",
            ["destination", "reason"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "ccbridge_exporter_push_duration_seconds",
            "Time of one push (request and answer) to a destination.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backlog_records = Gauge(
            "ccbridge_exporter_backlog_records",
            "Records stored but not yet delivered, per destination.",
            ["destination"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backlog_bytes = Gauge(
            "ccbridge_exporter_backlog_bytes",
            "Estimated bytes stored but not yet delivered, per destination.",
            ["destination"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backlog_oldest_age = Gauge(
            "ccbridge_exporter_backlog_oldest_age_seconds",
            "Age of the oldest record not yet delivered (0 when the backlog is empty).",
            ["destination"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.redactions = Counter(
            "ccbridge_redactions",
            "Secrets replaced by [REDACTED:<kind>] before storage and export, by detector kind.",
            ["kind"],
            registry=r,
        )
        self.storage_commits = Counter(
            "ccbridge_storage_commits", "Transactions committed by the store writer (one fsync each).", registry=r
        )
        self.storage_commit_rows = Counter(
            "ccbridge_storage_committed_rows", "Rows (records, metric points, spans) committed.", registry=r
        )
        self.storage_commit_duration = Histogram(
            "ccbridge_storage_commit_duration_seconds",
            "Time of one group commit: inserts plus fsync.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.storage_healthy = Gauge(
            "ccbridge_storage_healthy",
            "1 while the last write to the embedded store succeeded.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.storage_healthy.set(1)
        from collector import __version__

        self.build_info = Info(
            "ccbridge_build", "The running ccbridge: version and Python version (value always 1).", registry=r
        )
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, process_start_time_seconds...
        ProcessCollector(registry=r)

    def receiver_status(self) -> dict[str, Any]:
        """Items accepted by signal and transport, and requests refused by reason, since this process started."""
        accepted: dict[str, float] = {}
        refused: dict[str, float] = {}
        for metric in self.accepted.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = f"{sample.labels['transport']}/{sample.labels['signal']}"
                    accepted[key] = accepted.get(key, 0) + sample.value
        for metric in self.refused.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = f"{sample.labels['transport']}/{sample.labels['signal']}: {sample.labels['reason']}"
                    refused[key] = refused.get(key, 0) + sample.value
        return {
            "accepted": {k: int(v) for k, v in accepted.items()},
            "refused": {k: int(v) for k, v in refused.items()},
        }
