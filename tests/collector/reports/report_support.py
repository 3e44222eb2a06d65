"""Builders shared by the report tests: Analytics API rows, audit records and metric points, and a data dir."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import orjson

from collector.enrich.analytics_client import DailyUsage, parse_record
from collector.pipeline import metric_point_key, record_row
from collector.store.sqlite import AuditStore
from collector.store.usage import UsageStore

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-5-20251101"
HAIKU = "claude-haiku-4-5-20251001"


def row(
    day: str,
    who: str,
    *,
    sessions: int = 0,
    commits: int = 0,
    prs: int = 0,
    added: int = 0,
    removed: int = 0,
    tools: dict[str, tuple[int, int]] | None = None,
    models: list[tuple[str, int, int, int]] | None = None,
    terminal: str = "vscode",
    api_key: bool = False,
) -> DailyUsage:
    """One Analytics API record; ``models`` are (model, input tokens, output tokens, cost in cents)."""
    actor = {"type": "api_actor", "api_key_name": who} if api_key else {"type": "user_actor", "email_address": who}
    return parse_record(
        {
            "date": f"{day}T00:00:00Z",
            "actor": actor,
            "organization_id": "org-1",
            "customer_type": "api",
            "terminal_type": terminal,
            "core_metrics": {
                "num_sessions": sessions,
                "lines_of_code": {"added": added, "removed": removed},
                "commits_by_claude_code": commits,
                "pull_requests_by_claude_code": prs,
            },
            "tool_actions": {k: {"accepted": a, "rejected": r} for k, (a, r) in (tools or {}).items()},
            "model_breakdown": [
                {
                    "model": m,
                    "tokens": {"input": i, "output": o, "cache_read": 0, "cache_creation": 0},
                    "estimated_cost": {"currency": "USD", "amount": c},
                }
                for m, i, o, c in (models or [])
            ],
        },
        date.fromisoformat(day),
    )


def at(day: str, hour: int = 12, minute: int = 0) -> int:
    """Unix nanoseconds of ``day`` at ``hour:minute`` UTC."""
    moment = datetime.combine(date.fromisoformat(day), time(hour, minute), tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000


def record(
    kind: str, t_ns: int, *, email: str | None = None, uid: str | None = None, session: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A minimal audit record of ``kind`` at ``t_ns``."""
    rec: dict[str, Any] = {
        "id": hashlib.sha256(
            orjson.dumps([kind, t_ns, email, uid, session, fields], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()[:32],
        "kind": kind,
        "event": f"claude_code.{kind}",
        "time": datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    user = {k: v for k, v in (("id", uid), ("email", email)) if v}
    if user:
        rec["user"] = user
    if session:
        rec["session"] = {"id": session}
    rec.update(fields)
    return rec


def point(
    name: str,
    t_ns: int,
    value: float,
    *,
    attrs: dict[str, Any],
    temporality: str = "delta",
    start_ns: int | None = None,
) -> dict[str, Any]:
    """A stored metric point body."""
    return {
        "name": name,
        "type": "sum",
        "temporality": temporality,
        "monotonic": True,
        "attributes": attrs,
        "resource": {"service.name": "claude-code"},
        "start_time_unix_nano": start_ns if start_ns is not None else t_ns - 1_000_000_000,
        "time_unix_nano": t_ns,
        "value": value,
    }


def write_audit(data_dir: Path, records: list[dict[str, Any]], points: list[dict[str, Any]], shard: int = 0) -> None:
    """Store records and points in ``shard`` of the audit store under ``data_dir``."""
    rows = [record_row(r, int(datetime.fromisoformat(r["time"][:-1] + "+00:00").timestamp() * 1e9), 0) for r in records]
    metric_rows = [(p["time_unix_nano"] // 1_000_000, metric_point_key(p), p["name"], orjson.dumps(p)) for p in points]
    store = AuditStore(data_dir, shard=shard, writer="thread").open()
    try:
        store.append_sync(records=rows, metrics=metric_rows)
    finally:
        store.close()


def write_analytics(data_dir: Path, rows: list[DailyUsage], *, identities: list[tuple[str, str, str]] = ()) -> None:
    """Store ``rows`` in ``analytics.db`` day by day, as final fetches, plus identity mappings."""
    with UsageStore.open(data_dir) as store:
        for day in sorted({r.day for r in rows}):
            store.write_day(
                day, [r for r in rows if r.day == day], pages=1, fetched_at=datetime(2030, 1, 1, tzinfo=UTC)
            )
        if identities:
            store.save_identities(identities, seen_at=datetime(2030, 1, 1, tzinfo=UTC))
