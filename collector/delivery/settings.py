"""Delivery settings shared by every destination: batching, concurrency, retry, backlog limits.

Each exporter's config dataclass extends :class:`DestinationSettings`, so queueing, retry and batching are
configured the same way for every destination and implemented once, in :mod:`collector.delivery.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from collector.configtypes import ByteSize, ConfigError, Duration
from collector.delivery.retry import RetrySettings


@dataclass(frozen=True)
class BatchSettings:
    """A batch is sent when it has ``max_records`` records or ``max_bytes`` of records, or after ``timeout``."""

    max_records: int = 1000
    max_bytes: ByteSize = ByteSize(4 * 1024 * 1024)
    timeout: Duration = Duration(1.0)

    def validate(self, path: str) -> None:
        if self.max_records < 1:
            raise ConfigError(f"{path}.max_records: must be >= 1")
        if self.max_bytes < 1024:
            raise ConfigError(f"{path}.max_bytes: must be >= 1KiB")


@dataclass(frozen=True)
class BacklogSettings:
    """Limits of what one destination may have stored but not yet delivered.

    ``policy: backpressure`` (default): receivers answer 429 / RESOURCE_EXHAUSTED while a limit is exceeded, so no
    record is ever dropped. ``drop_oldest``: the oldest undelivered records are moved to dead letters (counted) to
    get back under the limit, and ingestion continues.
    """

    max_records: int = 5_000_000
    max_bytes: ByteSize = ByteSize(10 * 1024**3)
    max_age: Duration = Duration(7 * 86400.0)
    policy: Literal["backpressure", "drop_oldest"] = "backpressure"
    retry_after: Duration = Duration(10.0)

    def validate(self, path: str) -> None:
        if self.max_records < 1:
            raise ConfigError(f"{path}.max_records: must be >= 1")


@dataclass(frozen=True)
class DeadLetterSettings:
    """What happens to a destination's dead letters (``exporters.<name>.dead_letter``).

    ``auto_replay`` (default on): when the destination answers again after retryable failures (an outage, a
    throttling window), its dead letters are re-sent through the engine, at most once per ``replay_interval``.
    Retryable failures no longer produce dead letters, so what is there was dropped by ``drop_oldest`` during the
    outage or refused permanently; the former is delivered without a person, the latter is refused again and stays
    (one request per batch and recovery, no retry loop). Off: dead letters wait for ``ccbridge dlq replay``.
    """

    auto_replay: bool = True
    replay_interval: Duration = Duration(300.0)

    def validate(self, path: str) -> None:
        if self.replay_interval < 0:
            raise ConfigError(f"{path}.replay_interval: must be >= 0")


@dataclass(frozen=True)
class DestinationSettings:
    """Common keys of every ``exporters.<type>[/<name>]`` section."""

    enabled: bool = True
    concurrency: int = 1
    batch: BatchSettings = field(default_factory=BatchSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    backlog: BacklogSettings = field(default_factory=BacklogSettings)
    dead_letter: DeadLetterSettings = field(default_factory=DeadLetterSettings)
    schema: Literal["ccbridge", "ocsf"] = "ccbridge"

    def validate(self, path: str) -> None:
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"{path}.concurrency: must be between 1 and 64")
