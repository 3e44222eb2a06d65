"""The destination interfaces: a record exporter validates config, encodes (pure) and pushes -> outcome; a metric
sink is started with the store it reads. Nothing else.

Queueing, batching, retry, dead letters and backpressure live in :mod:`collector.delivery.engine`; an exporter only
turns a batch of stored records into request payloads and sends one payload, reporting a typed
:mod:`~collector.delivery.outcome`.

Each destination declares the signals it takes in ``signals``: :data:`RECORDS` (the engine delivers stored audit
records to it: :meth:`Exporter.encode` + :meth:`Exporter.push`) and/or :data:`METRICS` (it is a :class:`MetricSink`:
the service starts it with a :class:`SinkContext` naming the store, this worker's shards and, in the worker that
serves the telemetry endpoint, the registry). The service wires destinations by these declarations only.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson
from isal import isal_zlib

from collector.delivery.outcome import Outcome
from collector.delivery.settings import DestinationSettings

GZIP_LEVEL = 2
"""ISA-L compression level (0-3) of every gzip request body. Measured on stored Claude Code records
(bench/hotpath.py): ISA-L level 2 compresses a Datadog batch ~9.8:1 in 2.5 µs per record and a Splunk batch ~10.4:1
in 1.5 µs; zlib needs 11 and 7 µs at level 3 (11.5-12.8:1) and 17-28 µs at level 6. The bridge is CPU-bound and the
wire is not, so the fast encoder wins; the output is ordinary gzip that every receiver reads."""


def gzip_compress(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """``data`` as one gzip member (header, deflate stream, CRC-32 and size trailer), compressed by ISA-L."""
    return isal_zlib.compress(data, level, wbits=31)


@dataclass
class DeliveryRecord:
    """One stored audit record as the engine hands it to an exporter."""

    seq: int
    id: str
    body: bytes
    time_ms: int
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def record(self) -> dict[str, Any]:
        """The record as a dict (parsed once, on first use, until :meth:`forget`)."""
        if self._parsed is None:
            self._parsed = orjson.loads(self.body)
        return self._parsed

    def forget(self) -> None:
        """Drop the parsed dict (about ten times the JSON's size in memory); ``record`` parses again if asked."""
        self._parsed = None


@dataclass
class Payload:
    """One request body and the records it carries, in order."""

    records: Sequence[DeliveryRecord]
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class LogThrottle:
    """Lets a log message through at most once per ``interval`` seconds and counts what it held back.

    For errors that repeat on every push (a revoked token), so they stay loud without flooding the log.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.held = 0

    def ready(self) -> int | None:
        """None to stay quiet, else how many messages were held back since the last one let through."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held += 1
            return None
        held, self.held, self.last = self.held, 0, now
        return held


RECORDS = "records"
"""Signal: stored audit records, delivered by the engine through ``encode`` + ``push``."""
METRICS = "metrics"
"""Signal: Claude Code metric points and event counters, read from the store by a :class:`MetricSink`."""
SIGNALS = frozenset({RECORDS, METRICS})


@dataclass(frozen=True)
class SinkContext:
    """What the service hands every destination before it starts (:meth:`Exporter.bind`).

    ``data_dir``: the store's directory; ``shards``: the shards this worker delivers (its own, plus, in the primary,
    shards of workers that no longer exist); ``self_metrics``: the process's
    :class:`~collector.telemetry.selfmetrics.SelfMetrics`; ``registry``: the telemetry endpoint's registry when this
    worker serves it (the primary), else None.
    """

    data_dir: Path
    shards: tuple[int, ...]
    worker_index: int
    self_metrics: Any = None
    registry: Any = None


class Exporter(abc.ABC):
    """A destination. Subclasses set ``type_name`` and ``config_class`` and implement ``encode`` and ``push``.

    ``signals`` says what the destination takes (:data:`RECORDS` by default); an instance may narrow it from its
    config (e.g. Datadog without ``send_metrics``).
    """

    type_name: ClassVar[str]
    config_class: ClassVar[type[DestinationSettings]]
    signals: frozenset[str] = frozenset({RECORDS})

    def __init__(self, name: str, config: DestinationSettings) -> None:
        self.name = name
        self.config = config

    @property
    def settings(self) -> DestinationSettings:
        return self.config

    def bind(self, ctx: SinkContext) -> None:  # noqa: B027
        """Take what the running service offers (self-metrics, store location) before :meth:`start`. Default: none."""

    async def start(self) -> None:  # noqa: B027
        """Open connections; called once before the first push. Default: nothing to open."""

    async def close(self) -> None:  # noqa: B027
        """Release connections; called once at shutdown. Default: nothing to release."""

    def health(self) -> str | None:
        """None when the destination looks usable, else a short reason (feeds ``/readyz``)."""
        return None

    @abc.abstractmethod
    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        """Pure: the request payloads for ``records``, in order, each within the destination's limits."""

    @abc.abstractmethod
    async def push(self, payload: Payload) -> Outcome:
        """Send one payload and say what happened. Must not raise for network or HTTP errors."""


class MetricSink(abc.ABC):
    """A destination that takes the :data:`METRICS` signal: started by the service after :meth:`Exporter.bind`,
    stopped before the delivery engine (so a final submission still has its connections)."""

    @abc.abstractmethod
    async def start_metrics(self, ctx: SinkContext) -> bool:
        """Start reading metrics for ``ctx``; False when there is nothing to do in this worker (e.g. a pull
        destination in a worker that does not serve the telemetry endpoint)."""

    @abc.abstractmethod
    async def stop_metrics(self) -> None:
        """Stop reading (a last bounded submission may run); idempotent."""


def takes(exporter: Exporter, signal: str) -> bool:
    """Whether ``exporter`` declared ``signal``. A destination declaring :data:`METRICS` must implement
    :class:`MetricSink` (TypeError otherwise: a declaration the service could not honour is a bug, not a no-op)."""
    if signal not in exporter.signals:
        return False
    if signal == METRICS and not isinstance(exporter, MetricSink):
        raise TypeError(f"{type(exporter).__name__} declares the metrics signal but is not a MetricSink")
    return True
