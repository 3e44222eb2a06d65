"""Retry timing: exponential backoff with jitter capped at ``max_interval``, ``Retry-After`` in both forms, the
stalled-destination threshold, interruptible waits.

A retryable failure is retried for as long as the destination's backlog is within its limits; nothing here ever gives
up on a batch. ``retry.max_elapsed_time`` is deprecated as a budget: it is still accepted, and a batch that has been
retrying for longer is reported as stalled (a warning, repeated every ``max_elapsed_time``), never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime

from collector.configtypes import ConfigError, Duration

DEFAULT_INITIAL_INTERVAL = 1.0
DEFAULT_MAX_INTERVAL = 30.0
DEFAULT_MULTIPLIER = 2.0
DEFAULT_JITTER = 0.2
DEFAULT_MAX_ELAPSED = 300.0
MAX_SERVER_DELAY = 3600.0


@dataclass(frozen=True)
class RetrySettings:
    """Backoff policy of one destination (``exporters.<name>.retry``).

    ``max_elapsed_time``: deprecated (it used to dead-letter a batch after this long); now only the time after which
    a batch still retrying is logged as a stalled destination. ``0`` turns that warning off.
    """

    initial_interval: Duration = Duration(DEFAULT_INITIAL_INTERVAL)
    max_interval: Duration = Duration(DEFAULT_MAX_INTERVAL)
    multiplier: float = DEFAULT_MULTIPLIER
    jitter: float = DEFAULT_JITTER
    max_elapsed_time: Duration = Duration(DEFAULT_MAX_ELAPSED)

    def validate(self, path: str) -> None:
        if self.initial_interval <= 0:
            raise ConfigError(f"{path}.initial_interval: must be > 0")
        if self.max_interval < self.initial_interval:
            raise ConfigError(f"{path}.max_interval: must be >= initial_interval")
        if self.multiplier < 1:
            raise ConfigError(f"{path}.multiplier: must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"{path}.jitter: must be in [0, 1)")
        if self.max_elapsed_time < 0:
            raise ConfigError(f"{path}.max_elapsed_time: must be >= 0")


_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")


def parse_retry_after(value: str | None, now: float | datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent or invalid.

    The one parser of the project (destinations and the Analytics API client). Only ASCII decimal seconds are
    accepted (RFC 9110 section 10.2.3 delta-seconds, plus a decimal fraction some servers send; no signs, exponents,
    ``inf`` or other scripts' digits); a date in the past means now; the result is capped at one hour so a hostile
    header cannot stall a client. ``now`` (epoch seconds or an aware datetime) is for tests.
    """
    if isinstance(now, datetime):
        now = now.timestamp()
    if not value:
        return None
    v = value.strip()
    if _DELTA_SECONDS.fullmatch(v):
        return min(float(v), MAX_SERVER_DELAY)
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    delta = dt.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, delta), MAX_SERVER_DELAY)


class Backoff:
    """Delays for successive attempts of one batch, and how long it has been retrying."""

    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.Random()
        self.attempt = 0
        self.started = time.monotonic()

    def next_delay(self, server_delay: float | None = None) -> float:
        """The wait before the next attempt: the server's delay when given, else exponential with jitter."""
        s = self.settings
        self.attempt += 1
        if server_delay is not None:
            return server_delay
        base = min(s.max_interval, s.initial_interval * (s.multiplier ** (self.attempt - 1)))
        spread = base * s.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))

    def elapsed(self) -> float:
        """Seconds since the first attempt."""
        return time.monotonic() - self.started

    def expired(self, upcoming_delay: float = 0.0) -> bool:
        """True when waiting ``upcoming_delay`` more would pass ``max_elapsed_time`` (0 = never).

        The engine uses it only to report a stalled destination (and ``dlq replay`` to stop waiting for one).
        """
        limit = self.settings.max_elapsed_time
        if limit <= 0:
            return False
        return self.elapsed() + upcoming_delay > limit


async def interruptible_sleep(delay: float, stop: asyncio.Event) -> bool:
    """Sleep ``delay`` seconds unless ``stop`` is set first; returns True when interrupted."""
    if delay <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()
