"""What a push to a destination came to: a named outcome with a reason, which also reaches the logs.

- :class:`Success`: the destination confirmed every record (2xx; for Splunk with acks, the ack).
- :class:`Retry`: nothing was accepted, try the same batch again later (timeouts, connection errors, 408, 429,
  5xx), optionally after the delay the server asked for (``Retry-After``).
- :class:`Permanent`: the destination will never accept this batch as sent (4xx other than 408/429); the records go
  to dead letters with the reason and status.
- :class:`Partial`: part of the request was taken (e.g. Splunk ``invalid-event-number``): the outcome names the
  ``accepted`` records, the ``refused`` ones (each with its reason, to dead letters) and the ``unsent`` ones, which
  the engine sends again. The exporter keeps no delivery state of its own: whatever it did not account for as
  accepted or refused is re-sent.

A ``Permanent`` with status 413 for more than one record is not final: the engine splits the records in halves and
sends each half again (:meth:`collector.delivery.engine.DestinationWorker._send`), down to a single record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Success:
    reason: str = "accepted"


@dataclass(frozen=True)
class Retry:
    reason: str
    delay: float | None = None
    status: int | None = None


@dataclass(frozen=True)
class Permanent:
    reason: str
    status: int | None = None


@dataclass(frozen=True)
class Refused:
    """One record of a partly accepted request that the destination refused for good."""

    record: Any  # a collector.delivery.api.DeliveryRecord of the payload
    reason: str
    status: int | None = None


@dataclass(frozen=True)
class Partial:
    """Some records of the payload were accepted, some refused for good, the rest not sent (in payload order)."""

    accepted: Sequence[Any]
    refused: Sequence[Refused]
    unsent: Sequence[Any] = field(default_factory=tuple)
    reason: str = "partly accepted"
    status: int | None = None


Outcome = Success | Retry | Permanent | Partial


def outcome_for_status(status: int, body: str = "", retry_after: float | None = None) -> Outcome:
    """The default mapping of an HTTP answer: 2xx success; 408, 429, 5xx retry; other 4xx permanent."""
    snippet = " ".join(body.split())[:200]
    detail = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if 200 <= status < 300:
        return Success()
    if status in (408, 429) or status >= 500:
        return Retry(detail, retry_after, status)
    return Permanent(detail, status)
