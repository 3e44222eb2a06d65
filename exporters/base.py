"""The exporter interface, as exporters import it: defined in :mod:`collector.delivery.api` (imports point from
``exporters`` to ``collector``, never back)."""

from __future__ import annotations

from collector.delivery.api import (
    GZIP_LEVEL,
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

__all__ = [
    "GZIP_LEVEL",
    "METRICS",
    "RECORDS",
    "DeliveryRecord",
    "Exporter",
    "LogThrottle",
    "MetricSink",
    "Payload",
    "SinkContext",
    "gzip_compress",
]
