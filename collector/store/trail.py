"""The store's reads behind the reviewers' console (collector/console), as small functions over a data directory.

Every function here takes the data directory and plain filter values and returns plain data, so the console's
pages do not know tables or files. Approval rows are built by :mod:`collector.compliance.approvals` (the same join
as ``ccbridge approvals export``), so a row on a page and the same row in an export have the same cells.

What it relies on in the store (:mod:`collector.store.sqlite`): the ``decisions`` table, one small row per
``tool_decision`` record (time, id, session, user, tool, decision, approval mode) kept by triggers, whose covering
index ``decisions_time`` gives the trail's newest-first page and its counts without reading record bodies;
``records_chain_heads`` (partial index, ``kind = 'chain_head'``) for the last published chain heads;
``records_session`` and ``records_user``.
"""

from __future__ import annotations

import contextlib
import heapq
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from collector.compliance.approvals import (
    ApprovalFilter,
    JoinStats,
    Row,
    SessionJoin,
    StoreSource,
    store_rows,
)
from collector.store.api import RecordQuery, StorageError
from collector.store.reader import iter_records
from collector.store.sqlite import as_bytes, connect, shard_paths

PAGE_SIZE = 50
SCAN_BATCH = 200
MAX_TIMELINE = 5000
MAX_USER_SESSIONS = 500


@dataclass(frozen=True)
class Counts:
    decisions: int = 0
    rejected: int = 0
    manual: int = 0
    automatic: int = 0
    hook: int = 0


@dataclass
class TrailPage:
    rows: list[Row]
    counts: Counts
    has_more: bool


def _shards(data_dir: str | Path) -> list[Path]:
    dbs = shard_paths(data_dir)
    if not dbs:
        raise StorageError("missing", f"no store under {data_dir}")
    return dbs


def _where(flt: ApprovalFilter) -> tuple[str, list[Any]]:
    """SQL over the ``decisions`` table for what ``flt`` admits (all but the free text, which applies to rows)."""
    sql = "time_ms >= ? AND time_ms < ?"
    args: list[Any] = [flt.since_ms, flt.until_ms]
    if flt.user is not None:
        sql += " AND (user = ? OR user_id = ?)"
        args += [flt.user, flt.user]
    for column, value in (("tool", flt.tool), ("decision", flt.decision), ("mode", flt.mode)):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    return sql, args


HOUR_MS = 3_600_000


@dataclass
class _ShardTally:
    """Decisions per hour and (decision, approval mode) of one shard, brought up to date by ``seq``."""

    seq: int = 0
    low: int | None = None
    hours: dict[int, dict[tuple[Any, Any], int]] = field(default_factory=dict)


_tallies: dict[Path, _ShardTally] = {}
_tally_lock = threading.Lock()


def _hour_tally(conn: sqlite3.Connection, db: Path) -> _ShardTally:
    """The shard's hourly tally, read incrementally: only decisions with a ``seq`` above the last one read.

    Rebuilt when retention removed old decisions (the lowest ``seq`` moved) or the shard was replaced.
    """
    # two queries: SQLite answers MIN or MAX alone from the b-tree's edge, but scans the table for both at once
    low = conn.execute("SELECT MIN(seq) FROM decisions").fetchone()[0]
    high = conn.execute("SELECT MAX(seq) FROM decisions").fetchone()[0]
    tally = _tallies.get(db)
    if tally is None or low != tally.low or (high or 0) < tally.seq:
        tally = _tallies[db] = _ShardTally(low=low)
    cur = conn.execute("SELECT seq, time_ms, decision, mode FROM decisions WHERE seq > ? ORDER BY seq", (tally.seq,))
    while batch := cur.fetchmany(10_000):
        for _seq, t, decision, mode in batch:
            bucket = tally.hours.get(t // HOUR_MS)
            if bucket is None:
                bucket = tally.hours[t // HOUR_MS] = {}
            key = (decision, mode)
            bucket[key] = bucket.get(key, 0) + 1
        tally.seq = batch[-1][0]
    return tally


def warm(data_dir: str | Path) -> None:
    """Build the hourly tallies now (at start), so the first trail view does not read every decision."""
    for db in shard_paths(data_dir):
        with contextlib.closing(connect(db, readonly=True)) as conn, _tally_lock:
            _hour_tally(conn, db)


def counts(data_dir: str | Path, flt: ApprovalFilter) -> Counts:
    """Decisions the filter admits, rejected ones, and by approval mode (free text applied when set).

    Without a user, tool or text filter (the trail's default view, over any period), whole hours come from an
    in-memory hourly tally kept up to date incrementally, and only the partial hours at both ends are counted in
    the store; otherwise the store's indexes answer directly.
    """
    tally: dict[str, int] = dict.fromkeys(("decisions", "rejected", "manual", "automatic", "hook"), 0)
    if flt.text:
        for row in store_rows(data_dir, flt):
            _tally(tally, row.get("decision"), row.get("approval_mode"), 1)
        return Counts(**tally)
    first_hour = -(-flt.since_ms // HOUR_MS)
    end_hour = flt.until_ms // HOUR_MS
    hourly = flt.user is None and flt.tool is None and first_hour < end_hour
    for db in _shards(data_dir):
        with contextlib.closing(connect(db, readonly=True)) as conn:
            if not hourly:
                _count_range(conn, flt, flt.since_ms, flt.until_ms, tally)
                continue
            with _tally_lock:
                hours = _hour_tally(conn, db).hours
                for h, bucket in hours.items():
                    if first_hour <= h < end_hour:
                        for (decision, mode), n in bucket.items():
                            if (flt.decision is None or decision == flt.decision) and (
                                flt.mode is None or mode == flt.mode
                            ):
                                _tally(tally, decision, mode, n)
            _count_range(conn, flt, flt.since_ms, first_hour * HOUR_MS, tally)
            _count_range(conn, flt, end_hour * HOUR_MS, flt.until_ms, tally)
    return Counts(**tally)


def _count_range(
    conn: sqlite3.Connection, flt: ApprovalFilter, since_ms: int, until_ms: int, tally: dict[str, int]
) -> None:
    """Add the decisions of ``[since_ms, until_ms)`` that ``flt`` admits, in one pass over the covering index."""
    if until_ms <= since_ms:
        return
    where, args = _where(replace(flt, since_ms=since_ms, until_ms=until_ms))
    sql = (
        "SELECT COUNT(*), TOTAL(decision = 'reject'), TOTAL(mode = 'manual'), TOTAL(mode = 'automatic'), "
        f"TOTAL(mode = 'hook') FROM decisions WHERE {where}"
    )
    row = conn.execute(sql, args).fetchone()
    for key, n in zip(("decisions", "rejected", "manual", "automatic", "hook"), row, strict=True):
        tally[key] += int(n or 0)


def _tally(tally: dict[str, int], decision: Any, mode: Any, n: int) -> None:
    tally["decisions"] += n
    if decision == "reject":
        tally["rejected"] += n
    if mode in ("manual", "automatic", "hook"):
        tally[mode] += n


def _decisions_newest_first(db: Path, flt: ApprovalFilter, limit: int | None) -> Iterator[tuple[int, str, str | None]]:
    """``(time_ms, record id, session)`` of the decisions ``flt`` admits in one shard, newest first."""
    where, args = _where(flt)
    sql = f"SELECT time_ms, id, session FROM decisions WHERE {where} ORDER BY time_ms DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args = [*args, limit]
    with contextlib.closing(connect(db, readonly=True)) as conn:
        cur = conn.execute(sql, args)
        while batch := cur.fetchmany(SCAN_BATCH):
            yield from batch


def _merged_decisions(
    data_dir: str | Path, flt: ApprovalFilter, limit: int | None
) -> Iterator[tuple[int, str, str | None]]:
    streams = [_decisions_newest_first(db, flt, limit) for db in _shards(data_dir)]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda r: (r[0], r[1]), reverse=True)
    last: tuple[int, str] | None = None
    for t, rid, session in merged:
        if (t, rid) == last:
            continue
        last = (t, rid)
        yield t, rid, session


class _SessionRows:
    """Approval rows of whole sessions, joined exactly as the export joins them, cached per session."""

    def __init__(self, src: StoreSource, flt: ApprovalFilter) -> None:
        self.src = src
        self.flt = flt
        self.cache: dict[str | None, dict[str, Row]] = {}

    def row(self, session: str | None, record_id: str) -> Row | None:
        rows = self.cache.get(session)
        if rows is None:
            join = SessionJoin(session, self.flt, JoinStats())
            out: list[Row] = []
            for t, rec in self.src.session_records(session):
                out.extend(join.feed(t, rec))
            out.extend(join.finish(self.src.spans))
            rows = self.cache[session] = {r["record_id"]: r for r in out if r["record_id"]}
        return rows.get(record_id)


def trail_page(data_dir: str | Path, flt: ApprovalFilter, page: int = 1, per_page: int = PAGE_SIZE) -> TrailPage:
    """One page of the trail, newest decision first, with the counts of the whole filter."""
    offset = (page - 1) * per_page
    rows: list[Row] = []
    seen = 0
    has_more = False
    try:
        with StoreSource(data_dir, flt) as src:
            joined = _SessionRows(src, flt)
            limit = None if flt.text else offset + per_page + 1
            for _t, rid, session in _merged_decisions(data_dir, flt, limit):
                row = joined.row(session, rid)
                if row is None or not flt.matches_text(row):
                    continue
                seen += 1
                if seen <= offset:
                    continue
                if len(rows) == per_page:
                    has_more = True
                    break
                rows.append(row)
        return TrailPage(rows, counts(data_dir, flt), has_more)
    except sqlite3.Error as exc:
        raise StorageError("error", f"cannot read the store: {exc}") from None


def export_rows(data_dir: str | Path, flt: ApprovalFilter) -> Iterator[Row]:
    """The rows of ``ccbridge approvals export`` for ``flt`` (same join, same order)."""
    return store_rows(data_dir, flt)


# ---------------------------------------------------------------------------------------------------------------
# a session, a user, chain heads


def session_records(data_dir: str | Path, session_id: str, limit: int = MAX_TIMELINE) -> list[dict[str, Any]]:
    """A session's records in time order (with their chain links), at most ``limit``."""
    _shards(data_dir)
    out: list[dict[str, Any]] = []
    for body in iter_records(data_dir, RecordQuery(session=session_id)):
        out.append(orjson.loads(body))
        if len(out) >= limit:
            break
    return out


@dataclass
class UserSession:
    session_id: str
    first: str = ""
    last: str = ""
    decisions: int = 0
    rejected: int = 0
    cost_usd: float = 0.0


@dataclass
class UserSummary:
    user: str
    sessions: list[UserSession] = field(default_factory=list)
    decisions: int = 0
    rejected: int = 0
    cost_usd: float = 0.0
    prompts: int = 0
    truncated: bool = False


USER_KINDS = ("tool_decision", "api_request", "user_prompt")


def user_summary(data_dir: str | Path, user: str, since_ms: int, until_ms: int) -> UserSummary:
    """A user's sessions, decisions, rejections and cost in ``[since_ms, until_ms)`` (email or user.id)."""
    _shards(data_dir)
    summary = UserSummary(user)
    by_session: dict[str, UserSession] = {}
    q = RecordQuery(since_ms=since_ms, until_ms=until_ms, kinds=USER_KINDS, user=user)
    for body in iter_records(data_dir, q):
        rec = orjson.loads(body)
        sid = str((rec.get("session") or {}).get("id") or "")
        us = by_session.get(sid)
        if us is None:
            us = by_session[sid] = UserSession(sid, first=str(rec.get("time", "")))
        us.last = str(rec.get("time", ""))
        kind = rec.get("kind")
        if kind == "tool_decision":
            rejected = (rec.get("tool") or {}).get("decision") == "reject"
            us.decisions += 1
            summary.decisions += 1
            us.rejected += rejected
            summary.rejected += rejected
        elif kind == "api_request":
            cost = rec.get("cost_usd")
            if isinstance(cost, int | float) and not isinstance(cost, bool):
                us.cost_usd += float(cost)
                summary.cost_usd += float(cost)
        elif kind == "user_prompt":
            summary.prompts += 1
    ordered = sorted(by_session.values(), key=lambda s: s.last, reverse=True)
    summary.truncated = len(ordered) > MAX_USER_SESSIONS
    summary.sessions = ordered[:MAX_USER_SESSIONS]
    return summary


def chain_heads(data_dir: str | Path, limit: int = 20) -> list[dict[str, Any]]:
    """The last published ``chain_head`` records (newest first, all shards)."""
    found: list[tuple[int, dict[str, Any]]] = []
    for db in _shards(data_dir):
        with contextlib.closing(connect(db, readonly=True)) as conn:
            rows = conn.execute(
                "SELECT time_ms, body FROM records WHERE kind = 'chain_head' ORDER BY time_ms DESC LIMIT ?", (limit,)
            )
            found.extend((int(t), orjson.loads(as_bytes(b))) for t, b in rows)
    found.sort(key=lambda r: r[0], reverse=True)
    return [rec for _, rec in found[:limit]]


def store_exists(data_dir: str | Path) -> bool:
    return bool(shard_paths(data_dir))
