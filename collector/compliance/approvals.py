"""The approval trail: one row per tool decision, joined with what the tool would do and how its run ended.

A row says when (``time``), who (``user_email``, ``user_id``, ``user_account_uuid``, ``organization_id``, and
``source_identity``, the sender the bridge authenticated), where (``session_id``, ``prompt_id``), which tool
(``tool_name``, ``tool_use_id``), what it would do (``command`` for shell tools, ``file_path`` for file tools), the
decision (``decision`` accept/reject, ``decision_source`` as Claude Code reports it, ``approval_mode``
manual/automatic/hook), the ``outcome`` of the execution and the decision record's ``record_id`` and ``chain_hash``
(the tamper-evidence chain hash of the record, empty for records stored before the chain existed).

``outcome`` is ``success`` or ``failure`` from the call's ``tool_result``, ``not_executed`` for a rejected call
(Claude Code emits no ``tool_result`` for one), and ``unknown`` for an accepted call whose result was not received.
``command`` and ``file_path`` come from the decision itself when Claude Code put them there (``tool_parameters``,
sent with ``OTEL_LOG_TOOL_DETAILS=1``), else from the matching ``tool_result`` (same session and ``tool_use_id``),
else from the matching ``claude_code.tool`` span (same trace, same ``tool_use_id``, and ``gen_ai.conversation.id``
equal to the session when the span has one).

Memory stays bounded whatever the size of the export: records arrive grouped by session and in time order within a
session (:func:`store_sessions` reads them so from the store, one indexed query per session; the Splunk source asks
Splunk to sort), and only one session's unfinished decisions are held at a time, at most ``max_pending`` of them.
When a session has more, its oldest decision is written out with what is known so far (in practice it already has
its result, which follows a decision within seconds); :attr:`JoinStats.evicted` counts such rows.

Rows are ordered by session, then by decision time within the session.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from collector import csvsafe
from collector.processing.normalize import parse_rfc3339
from collector.store import StorageError, open_reader
from collector.store.api import ShardView

COLUMNS = (
    "time",
    "user_email",
    "user_id",
    "user_account_uuid",
    "organization_id",
    "source_identity",
    "session_id",
    "prompt_id",
    "tool_name",
    "tool_use_id",
    "command",
    "file_path",
    "decision",
    "decision_source",
    "approval_mode",
    "outcome",
    "record_id",
    "chain_hash",
)
OUTCOMES = ("success", "failure", "not_executed", "unknown")
DECISIONS = ("accept", "reject")
MODES = ("manual", "automatic", "hook")
DEFAULT_MAX_PENDING = 10_000
DEFAULT_RESULT_GRACE_MS = 24 * 3600 * 1000
MAX_TRACES_PER_SESSION = 1_000
TOOL_SPAN = "claude_code.tool"
BATCH = 1000

Row = dict[str, Any]
SpanLookup = Callable[[Iterable[str]], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class ApprovalFilter:
    """Which decisions to export: time bounds in Unix ms (inclusive/exclusive) and optional exact matches."""

    since_ms: int
    until_ms: int
    user: str | None = None
    tool: str | None = None
    decision: str | None = None
    mode: str | None = None
    text: str | None = None
    """Free text: a row is kept when its ``command`` or ``file_path`` contains it (case-insensitive)."""

    def matches_text(self, row: Row) -> bool:
        """True when there is no free text, or the joined row's command or file path contains it."""
        if not self.text:
            return True
        needle = self.text.casefold()
        return any(needle in (row.get(c) or "").casefold() for c in ("command", "file_path"))

    def admits(self, time_ms: int, rec: dict[str, Any]) -> bool:
        if not self.since_ms <= time_ms < self.until_ms:
            return False
        tool = rec.get("tool") or {}
        if self.tool is not None and _folded(tool.get("name")) != self.tool.casefold():
            return False
        if self.decision is not None and _folded(tool.get("decision")) != self.decision.casefold():
            return False
        if self.mode is not None and _folded(tool.get("approval_mode")) != self.mode.casefold():
            return False
        if self.user is not None:
            user = rec.get("user") or {}
            if self.user.casefold() not in (_folded(user.get("email")), _folded(user.get("id"))):
                return False
        return True


def _folded(v: Any) -> str | None:
    return v.casefold() if isinstance(v, str) else None


@dataclass
class JoinStats:
    """What an export did: rows written, by outcome, sessions with rows, rows written before their session ended."""

    rows: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    evicted: int = 0
    sessions: int = 0


def _str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return v if isinstance(v, str) else str(v)


def decision_row(rec: dict[str, Any]) -> Row:
    """The row of a ``tool_decision`` record, before the join."""
    user = rec.get("user") or {}
    tool = rec.get("tool") or {}
    chain = rec.get("chain")
    return {
        "time": rec.get("time"),
        "user_email": _str(user.get("email")),
        "user_id": _str(user.get("id")),
        "user_account_uuid": _str(user.get("account_uuid")),
        "organization_id": _str((rec.get("organization") or {}).get("id")),
        "source_identity": _str((rec.get("source") or {}).get("identity")),
        "session_id": _str((rec.get("session") or {}).get("id")),
        "prompt_id": _str((rec.get("prompt") or {}).get("id")),
        "tool_name": _str(tool.get("name")),
        "tool_use_id": _str(tool.get("use_id")),
        "command": _str(tool.get("command")),
        "file_path": _str((rec.get("file") or {}).get("path")),
        "decision": _str(tool.get("decision")),
        "decision_source": _str(tool.get("decision_source")),
        "approval_mode": _str(tool.get("approval_mode")),
        "outcome": "not_executed" if tool.get("decision") == "reject" else "unknown",
        "record_id": _str(rec.get("id")),
        "chain_hash": _str(chain.get("hash")) if isinstance(chain, dict) else None,
    }


def apply_result(row: Row, rec: dict[str, Any]) -> None:
    """Complete ``row`` with its ``tool_result``: outcome, and command / file path when the decision lacked them."""
    tool = rec.get("tool") or {}
    success = tool.get("success")
    if success is True:
        row["outcome"] = "success"
    elif success is False or tool.get("error"):
        row["outcome"] = "failure"
    if row["command"] is None:
        row["command"] = _str(tool.get("command"))
    if row["file_path"] is None:
        row["file_path"] = _str((rec.get("file") or {}).get("path"))


def apply_span(row: Row, span: dict[str, Any]) -> None:
    """Fill command / file path from a ``claude_code.tool`` span's ``full_command`` / ``file_path`` attributes."""
    attrs = span.get("attributes") or {}
    if row["command"] is None:
        row["command"] = _str(attrs.get("full_command"))
    if row["file_path"] is None:
        row["file_path"] = _str(attrs.get("file_path"))


def _use_id(rec: dict[str, Any]) -> str | None:
    return _str((rec.get("tool") or {}).get("use_id"))


class SessionJoin:
    """Joins one session's decisions and results (fed in time order) in at most ``max_pending`` held rows."""

    def __init__(
        self, session: str | None, flt: ApprovalFilter, stats: JoinStats, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self.session = session
        self.flt = flt
        self.stats = stats
        self.max_pending = max_pending
        self.pending: OrderedDict[object, Row] = OrderedDict()
        self.by_use_id: dict[str, object] = {}
        self.early_results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.traces: set[str] = set()

    def _note_trace(self, rec: dict[str, Any]) -> None:
        trace = (rec.get("trace") or {}).get("trace_id")
        if isinstance(trace, str) and trace and len(self.traces) < MAX_TRACES_PER_SESSION:
            self.traces.add(trace)

    def feed(self, time_ms: int, rec: dict[str, Any]) -> Iterator[Row]:
        """Take one record; yields rows that had to be written early to stay within ``max_pending``."""
        kind = rec.get("kind")
        use_id = _use_id(rec)
        if kind == "tool_decision":
            if not self.flt.admits(time_ms, rec):
                return
            self._note_trace(rec)
            row = decision_row(rec)
            key: object = object()
            if use_id is not None and use_id not in self.by_use_id:
                key = use_id
                self.by_use_id[use_id] = key
                early = self.early_results.pop(use_id, None)
                if early is not None:
                    apply_result(row, early)
            self.pending[key] = row
            while len(self.pending) > self.max_pending:
                old_key, old = self.pending.popitem(last=False)
                if isinstance(old_key, str):
                    self.by_use_id.pop(old_key, None)
                self.stats.evicted += 1
                yield old
        elif kind == "tool_result" and use_id is not None:
            key = self.by_use_id.get(use_id)
            if key is not None:
                self._note_trace(rec)
                apply_result(self.pending[key], rec)
            else:
                self.early_results[use_id] = rec
                while len(self.early_results) > self.max_pending:
                    self.early_results.popitem(last=False)

    def finish(self, spans: SpanLookup | None = None) -> Iterator[Row]:
        """The session's remaining rows in decision order, completed from tool spans where still needed."""
        if spans is not None and self.traces:
            wanted = {
                k: row
                for k, row in self.pending.items()
                if isinstance(k, str) and (row["command"] is None or row["file_path"] is None)
            }
            if wanted:
                for span in spans(sorted(self.traces)):
                    attrs = span.get("attributes") or {}
                    use_id = _str(attrs.get("tool_use_id") or attrs.get("gen_ai.tool.call.id"))
                    conv = _str(attrs.get("gen_ai.conversation.id") or attrs.get("session.id"))
                    if use_id in wanted and (conv is None or conv == self.session):
                        apply_span(wanted[use_id], span)
        rows = list(self.pending.values())
        self.pending.clear()
        self.by_use_id.clear()
        self.early_results.clear()
        yield from rows


def join(
    sessions: Iterable[tuple[str | None, Iterable[tuple[int, dict[str, Any]]]]],
    flt: ApprovalFilter,
    *,
    spans: SpanLookup | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
    stats: JoinStats | None = None,
) -> Iterator[Row]:
    """Rows for ``sessions``: each a session id and its decision/result records ``(time_ms, record)`` in time order."""
    st = stats if stats is not None else JoinStats()
    for session, records in sessions:
        before = st.rows
        j = SessionJoin(session, flt, st, max_pending)
        for time_ms, rec in records:
            for row in j.feed(time_ms, rec):
                if flt.matches_text(row):
                    _count(st, row)
                    yield row
        for row in j.finish(spans):
            if flt.matches_text(row):
                _count(st, row)
                yield row
        if st.rows > before:
            st.sessions += 1


def _count(st: JoinStats, row: Row) -> None:
    st.rows += 1
    st.outcomes[row["outcome"]] = st.outcomes.get(row["outcome"], 0) + 1


# ---------------------------------------------------------------------------------------------------------------
# the local store


def _session_key(s: str | None) -> tuple[int, str]:
    return (0, "") if s is None else (1, s)


class StoreSource:
    """Decision/result records of a data directory, grouped by session, merged over shards, in bounded memory."""

    def __init__(
        self, data_dir: str | Path, flt: ApprovalFilter, result_grace_ms: int = DEFAULT_RESULT_GRACE_MS
    ) -> None:
        self.data_dir = data_dir
        self.flt = flt
        self.result_until_ms = flt.until_ms + result_grace_ms
        self.reader = open_reader(data_dir)
        self.shards = self.reader.shards()
        if not self.shards:
            raise StorageError("missing", f"no store under {data_dir}")
        self._views: list[ShardView] = []

    def __enter__(self) -> StoreSource:
        try:
            for shard in self.shards:
                self._views.append(self.reader.shard_view(shard))
        except StorageError:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for v in self._views:
            v.close()
        self._views = []

    def _session_ids(self, view: ShardView) -> Iterator[str | None]:
        """Distinct sessions with a decision in range, in session order (None first), from one shard; the user is
        matched case-insensitively."""
        return view.sessions_with("tool_decision", self.flt.since_ms, self.flt.until_ms, self.flt.user)

    def _records(self, view: ShardView, session: str | None) -> Iterator[tuple[int, str, bytes, bytes | None]]:
        windows = (
            ("tool_decision", self.flt.since_ms, self.flt.until_ms),
            ("tool_result", self.flt.since_ms, self.result_until_ms),
        )
        return view.session_records(session, windows)

    def session_records(self, session: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
        """One session's decisions (in range) and results (up to the grace period after), in time order.

        A record's tamper-evidence link (the store's ``chain`` column) is added as ``chain.hash`` when the body
        does not carry one.
        """
        streams = [self._records(v, session) for v in self._views]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda r: (r[0], r[1]))
        last: tuple[int, str] | None = None
        for t, rid, body, link in merged:
            if (t, rid) == last:
                continue
            last = (t, rid)
            rec = orjson.loads(body)
            if link is not None and isinstance(rec, dict) and "chain" not in rec:
                rec["chain"] = {"hash": link.hex()}
            yield t, rec

    def sessions(self) -> Iterator[tuple[str | None, Iterator[tuple[int, dict[str, Any]]]]]:
        streams = [self._session_ids(v) for v in self._views]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_session_key)
        first = True
        last: str | None = None
        for s in merged:
            if not first and s == last:
                continue
            first, last = False, s
            yield s, self.session_records(s)

    def spans(self, trace_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
        """``claude_code.tool`` spans of the given traces (all shards)."""
        for trace in trace_ids:
            for view in self._views:
                for body in view.spans(trace, TOOL_SPAN):
                    yield orjson.loads(body)


def store_rows(
    data_dir: str | Path,
    flt: ApprovalFilter,
    *,
    max_pending: int = DEFAULT_MAX_PENDING,
    result_grace_ms: int = DEFAULT_RESULT_GRACE_MS,
    stats: JoinStats | None = None,
) -> Iterator[Row]:
    """Approval rows from a data directory (all shards)."""
    with StoreSource(data_dir, flt, result_grace_ms) as src:
        yield from join(src.sessions(), flt, spans=src.spans, max_pending=max_pending, stats=stats)


def grouped_by_session(
    records: Iterable[tuple[int, dict[str, Any]]],
) -> Iterator[tuple[str | None, Iterator[tuple[int, dict[str, Any]]]]]:
    """Group a stream already ordered by session into per-session streams; refuse a stream that is not grouped.

    Used for sources that sort remotely (Splunk): a session seen again after another one means the source did not
    sort, and joining would silently miss results, so it is an error.
    """
    previous: tuple[int, str] | None = None
    for session, group in itertools.groupby(records, key=lambda r: _str((r[1].get("session") or {}).get("id"))):
        key = _session_key(session)
        if previous is not None and key <= previous:
            raise ValueError(
                f"records are not grouped by session (session {session!r} after {previous[1]!r}); "
                "the search must end with '| sort 0 session.id _time'"
            )
        previous = key
        yield session, group


# ---------------------------------------------------------------------------------------------------------------
# output


def csv_cell(v: Any) -> Any:
    """A CSV cell, as :func:`collector.csvsafe.cell` writes it (formula text neutralized)."""
    return csvsafe.cell(v)


def write_rows(rows: Iterable[Row], out: IO[str], fmt: str) -> int:
    """Write ``rows`` as ``csv`` (header first) or ``jsonl``; returns the number written."""
    n = 0
    if fmt == "csv":
        writer = csvsafe.writer(out)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([csv_cell(row[c]) for c in COLUMNS])
            n += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(orjson.dumps({c: row[c] for c in COLUMNS}).decode())
            out.write("\n")
            n += 1
    else:
        raise ValueError(f"unknown format {fmt!r}; use csv or jsonl")
    out.flush()
    return n


def sorted_by_time(rows: Iterable[Row]) -> Iterator[Row]:
    """``rows`` ordered by decision time over all sessions (ties by session, then record id); holds them in memory."""
    yield from sorted(rows, key=lambda r: (r.get("time") or "", r.get("session_id") or "", r.get("record_id") or ""))


def rfc3339_to_ms(text: Any) -> int | None:
    """Unix ms of a record's ``time`` (``2026-11-25T21:57:26.254Z``), or None."""
    ns = parse_rfc3339(text)
    return None if ns is None else ns // 1_000_000
