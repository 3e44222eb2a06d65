"""The one time grammar of every ``--since``/``--until``: RFC 3339, a date, an age, ``now``, ``today``, ``yesterday``.

Dates, ``today`` and ``yesterday`` are midnight UTC; an age (``90m``, ``24h``, ``7d``, ``2w``) is that long before
now. ``--until`` is exclusive everywhere: ``--until 2026-11-08`` ends at the first instant of 8 November.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

TIME_FORMS = "RFC 3339 (2026-11-25T10:00:00Z), a date (2026-11-25), an age (24h, 7d), now, today or yesterday"
_AGE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """``text`` as an aware UTC-based datetime; ValueError naming the accepted forms otherwise."""
    now = now or datetime.now(UTC)
    s = text.strip()
    low = s.lower()
    midnight = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
    if low == "now":
        return now
    if low == "today":
        return midnight
    if low == "yesterday":
        return midnight - timedelta(days=1)
    m = _AGE_RE.match(s)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _AGE_UNITS[m.group(2).lower()])
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    dt: datetime | None = None
    if s and not s.isdigit():
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            dt = None
    if dt is None:
        raise ValueError(f"invalid time {text!r}: use {TIME_FORMS}")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def first_day(since: datetime) -> date:
    """The UTC day an inclusive ``--since`` starts in."""
    return since.astimezone(UTC).date()


def last_day(until: datetime) -> date:
    """The last UTC day an exclusive ``--until`` still covers (``--until 2026-11-08`` -> 7 November)."""
    return (until.astimezone(UTC) - timedelta(microseconds=1)).date()
