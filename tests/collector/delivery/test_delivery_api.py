"""Signal declarations of the destination interface."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from collector.delivery.api import (
    METRICS,
    RECORDS,
    DeliveryRecord,
    Exporter,
    MetricSink,
    Payload,
    SinkContext,
    takes,
)
from collector.delivery.outcome import Outcome, Success
from collector.delivery.settings import DestinationSettings


class Records(Exporter):
    type_name = "records"
    config_class = DestinationSettings

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(records, b"")]

    async def push(self, payload: Payload) -> Outcome:
        return Success()


class Claims(Records):
    """Declares metrics without being a sink: a bug the service must not silently ignore."""

    signals = frozenset({RECORDS, METRICS})


class Sink(Records, MetricSink):
    signals = frozenset({METRICS})

    async def start_metrics(self, ctx: SinkContext) -> bool:
        return True

    async def stop_metrics(self) -> None:
        return None


def test_an_exporter_takes_records_by_default() -> None:
    exp = Records("records", DestinationSettings())
    assert takes(exp, RECORDS) and not takes(exp, METRICS)


def test_a_metric_sink_takes_what_it_declares() -> None:
    sink = Sink("sink", DestinationSettings())
    assert takes(sink, METRICS) and not takes(sink, RECORDS)


def test_declaring_metrics_without_implementing_a_sink_is_an_error() -> None:
    with pytest.raises(TypeError, match="Claims declares the metrics signal but is not a MetricSink"):
        takes(Claims("claims", DestinationSettings()), METRICS)
