"""What a push to a destination came to: a named outcome with a reason, which also reaches the logs.

- :class:`Success`: the destination confirmed every record (2xx; for Splunk with acks, the ack).
- :class:`Retry`: nothing was accepted, try the same batch again later (timeouts, connection errors, 408, 429,
  5xx), optionally after the delay the server asked for (``Retry-After``).
- :class:`Permanent`: the destination will never accept this batch as sent (4xx other than 408/429); the records go
  to dead letters with the reason and status.
- :class:`Partial`: the first ``accepted`` records were accepted, record ``accepted`` failed permanently (e.g. Splunk
  ``invalid-event-number``); the records after it are re-sent.
"""

from __future__ import annotations

from dataclasses import dataclass


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
class Partial:
    accepted: int
    reason: str
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
