"""What the service gives both OTLP receivers: where decoded requests go, and the limits and hooks they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from collector.pipeline import Pipeline
from collector.receivers.inflight import InflightBudget
from collector.telemetry.selfmetrics import SelfMetrics

Admission = Callable[[str], None]
"""Called with the signal before a request is read; raises :class:`~collector.receivers.status.Backpressure` to
refuse it while a destination's backlog is full."""


@dataclass(frozen=True, eq=False)
class ReceiverContext:
    """The pipeline and self-metrics, the attribute nesting limit, the ``Retry-After`` of storage errors, whether to
    share the port with sibling workers, the backlog admission check and the in-flight budget (one per process,
    shared by both receivers)."""

    pipeline: Pipeline
    metrics: SelfMetrics
    max_depth: int = 32
    storage_retry_after: float = 5.0
    reuse_port: bool = False
    admit: Admission | None = None
    inflight: InflightBudget = field(default_factory=lambda: InflightBudget(0))
