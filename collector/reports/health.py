"""Telemetry health: is every Claude Code CLI still sending everything it should?

Administrators' most repeated complaint is telemetry that silently stops or loses attributes after a CLI update.
:class:`HealthTracker` is fed audit records as they arrive (one :meth:`HealthTracker.observe` per record, O(1)) and
metric points (:meth:`HealthTracker.observe_point`), and answers, per CLI version (``app.version``, from the
resource's ``service.version``) and per sender (user, else host):

* **sequence gaps** within a session: ``event.sequence`` rises by one per event without gaps across all event
  types, so a session whose sequences 0..max miss some lost events between the CLI and the bridge; the estimate of
  how many is the number of missing sequence numbers below the highest seen;
* the **share of events missing an attribute their kind should carry** (:data:`EXPECTED`): ``tool_use_id`` and
  the decision source on decisions, ``tool_use_id`` on results, cost and model on API requests;
* **senders that went quiet**: users or hosts that sent on earlier working days of the period and nothing on its
  last working day;
* **CLI versions whose events per session or metric points per session dropped** against the previous version
  (by version order) below :data:`DROP_RATIO`.

``ccbridge report telemetry-health`` computes it over the store; the Prometheus destination keeps the same
counters as records arrive (``claude_code_telemetry_*``, see docs/destinations/prometheus.md).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

# kind -> (attribute name as the docs call it, record path) that every record of the kind should carry
EXPECTED: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "tool_decision": (("tool_use_id", ("tool", "use_id")), ("decision_source", ("tool", "decision_source"))),
    "tool_result": (("tool_use_id", ("tool", "use_id")),),
    "api_request": (("cost_usd", ("cost_usd",)), ("model", ("model",))),
    "api_error": (("model", ("model",)),),
}
DROP_RATIO = 0.5  # a version sending less than half of the previous version's events (or points) per session
MISSING_SHARE = 0.05  # more than 5 % of a kind's events missing an attribute is reported
MAX_SESSIONS = 200_000  # sessions whose sequences are tracked (oldest forgotten first)
UNKNOWN = "unknown"


def _dig(rec: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = rec
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def version_of(rec: dict[str, Any]) -> str:
    app = rec.get("app")
    v = app.get("version") if isinstance(app, dict) else None
    return v if isinstance(v, str) and v else UNKNOWN


def sender_of(rec: dict[str, Any]) -> str:
    """The user (e-mail, else user id), else the host (``host.name`` resource attribute), else ``unknown``."""
    user = rec.get("user")
    if isinstance(user, dict):
        for key in ("email", "id"):
            v = user.get(key)
            if isinstance(v, str) and v:
                return v
    res = rec.get("resource")
    host = res.get("host.name") if isinstance(res, dict) else None
    return host if isinstance(host, str) and host else UNKNOWN


def version_key(version: str) -> tuple[Any, ...]:
    """Order versions numerically (``2.1.99`` < ``2.1.197``); non-numeric parts sort after numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+]", version))


@dataclass
class _Session:
    """Per session: how many distinct events arrived and the highest sequence (callers pass each record once)."""

    version: str
    sender: str
    count: int = 0
    high: int = -1


@dataclass
class VersionFigures:
    events: int = 0
    sessions: int = 0
    metric_points: int = 0
    gaps: int = 0
    lost: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missing: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))


class HealthTracker:
    """Telemetry health figures, updated per record; see the module docstring."""

    def __init__(self) -> None:
        self.versions: dict[str, VersionFigures] = defaultdict(VersionFigures)
        self.sessions: dict[str, _Session] = {}
        self.sender_days: dict[str, set[date]] = defaultdict(set)
        self.sender_versions: dict[str, str] = {}

    def observe(self, rec: dict[str, Any]) -> list[tuple[str, Any]]:
        """Count one audit record; returns what it changed (``("gap", lost)``, ``("missing", (kind, attribute))``),
        for a caller that keeps counters (the Prometheus destination)."""
        kind = rec.get("kind")
        if kind in (None, "file_change", "chain_head", "hook_event"):
            return []
        version = version_of(rec)
        sender = sender_of(rec)
        fig = self.versions[version]
        fig.events += 1
        fig.kinds[str(kind)] += 1
        changes: list[tuple[str, Any]] = []
        for attribute, path in EXPECTED.get(str(kind), ()):
            if _dig(rec, path) in (None, ""):
                fig.missing[(str(kind), attribute)] += 1
                changes.append(("missing", (str(kind), attribute)))
        stamp = rec.get("time")
        if isinstance(stamp, str) and len(stamp) >= 10:
            with contextlib.suppress(ValueError):
                self.sender_days[sender].add(date.fromisoformat(stamp[:10]))
        self.sender_versions[sender] = version
        sid = _dig(rec, ("session", "id"))
        seq = rec.get("sequence")
        if isinstance(sid, str) and isinstance(seq, int) and seq >= 0:
            s = self.sessions.get(sid)
            if s is None:
                if len(self.sessions) >= MAX_SESSIONS:
                    self.sessions.pop(next(iter(self.sessions)))
                s = self.sessions[sid] = _Session(version, sender)
                fig.sessions += 1
            before = s.high + 1 - s.count  # missing numbers below the highest seen
            s.count += 1
            s.high = max(s.high, seq)
            after = max(0, s.high + 1 - s.count)
            before = max(0, before)
            if after != before:
                fig_s = self.versions[s.version]
                if before == 0:
                    fig_s.gaps += 1
                elif after == 0:
                    fig_s.gaps -= 1
                fig_s.lost += after - before
                changes.append(("gap", after - before))
        return changes

    def observe_point(self, point: dict[str, Any]) -> None:
        """Count one Claude Code metric data point for its CLI version (``service.version`` of its resource)."""
        res = point.get("resource") or {}
        attrs = point.get("attributes") or {}
        v = attrs.get("app.version") or (res.get("service.version") if isinstance(res, dict) else None)
        self.versions[v if isinstance(v, str) and v else UNKNOWN].metric_points += 1

    # -----------------------------------------------------------------------------------------------------------

    def session_gaps(self) -> list[dict[str, Any]]:
        """Sessions with missing sequence numbers: the session, version, sender and the estimate of lost events."""
        out = []
        for sid, s in self.sessions.items():
            lost = s.high + 1 - s.count
            if lost > 0:
                out.append(
                    {
                        "session": sid,
                        "version": s.version,
                        "sender": s.sender,
                        "lost_estimate": lost,
                        "highest_sequence": s.high,
                    }
                )
        return sorted(out, key=lambda r: (-r["lost_estimate"], r["session"]))

    def missing_attributes(self, threshold: float = MISSING_SHARE) -> list[dict[str, Any]]:
        out = []
        for version, fig in self.versions.items():
            for (kind, attribute), n in fig.missing.items():
                total = fig.kinds.get(kind, 0)
                share = n / total if total else 0.0
                if share > threshold:
                    out.append(
                        {
                            "version": version,
                            "kind": kind,
                            "attribute": attribute,
                            "missing": n,
                            "events": total,
                            "share": round(share, 4),
                        }
                    )
        return sorted(out, key=lambda r: (version_key(r["version"]), r["kind"], r["attribute"]))

    def silent_senders(self, last_day: date) -> list[dict[str, Any]]:
        """Senders active on an earlier working day (Mon-Fri) up to ``last_day`` but not on its last working day."""
        day = last_day
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        out = []
        for sender, days in self.sender_days.items():
            earlier = [d for d in days if d < day and d.weekday() < 5]
            if earlier and not any(d >= day for d in days):
                out.append(
                    {
                        "sender": sender,
                        "last_seen": max(days).isoformat(),
                        "working_days_active": len(earlier),
                        "version": self.sender_versions.get(sender, UNKNOWN),
                    }
                )
        return sorted(out, key=lambda r: r["sender"])

    def version_drops(self, ratio: float = DROP_RATIO) -> list[dict[str, Any]]:
        """Versions whose events per session or metric points per session fell below ``ratio`` times the previous's."""
        known = sorted((v for v in self.versions if v != UNKNOWN and self.versions[v].sessions), key=version_key)
        out = []
        for prev, cur in itertools.pairwise(known):
            p, c = self.versions[prev], self.versions[cur]
            for figure, pv, cv in (
                ("events_per_session", p.events / p.sessions, c.events / c.sessions),
                ("metric_points_per_session", p.metric_points / p.sessions, c.metric_points / c.sessions),
            ):
                if pv > 0 and cv < ratio * pv:
                    out.append(
                        {
                            "version": cur,
                            "previous": prev,
                            "figure": figure,
                            "value": round(cv, 2),
                            "previous_value": round(pv, 2),
                        }
                    )
        return out

    def report(self, last_day: date) -> dict[str, Any]:
        return {
            "versions": [
                {
                    "version": v,
                    "sessions": f.sessions,
                    "events": f.events,
                    "metric_points": f.metric_points,
                    "sessions_with_gaps": f.gaps,
                    "lost_estimate": f.lost,
                }
                for v, f in sorted(self.versions.items(), key=lambda kv: version_key(kv[0]))
            ],
            "session_gaps": self.session_gaps(),
            "missing_attributes": self.missing_attributes(),
            "silent_senders": self.silent_senders(last_day),
            "version_drops": self.version_drops(),
        }


def is_healthy(report: dict[str, Any]) -> bool:
    return not any(report[k] for k in ("session_gaps", "missing_attributes", "silent_senders", "version_drops"))
