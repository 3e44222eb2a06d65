"""Durable history of Claude Code usage reports in SQLite (``<data_dir>/analytics.db``).

The file is separate from the audit store and has its own connection (WAL, ``synchronous=FULL``). Nothing is
ever deleted: the API is the source only for recent days, so this file is what keeps older history.

Tables:

``usage_daily``
    One row per ``(date, actor_type, actor_id, terminal_type, customer_type)``, the record key of the
    spec (§4). Scalar columns serve queries; ``raw`` holds the record exactly as received, so nothing the API
    sent is lost and :meth:`UsageStore.rows` re-parses it. Writing a day upserts the rows of the actors
    returned; rows of actors absent from a later fetch are kept (an API that has dropped an old day must not
    erase our copy).
``sync_state``
    One row per day whose walk finished (all pages), with when it was fetched (``fetched_at`` is the start of
    the walk) and whether the day was already final then (fetched at least :data:`FINAL_AFTER` after the day
    ended, so later fetches cannot change it). Rows and state of a day are written in one transaction, so a
    crash leaves either the whole day or none of it.
``identity_map``
    Which e-mail address an installation id (``user.id``) or account (``user.account_uuid``) was last seen with
    in audit records, learned by :class:`collector.enrich.enricher.Enricher` and used to backfill ``user.email``
    on records that lack it. One row per ``(kind, value)``; the latest e-mail wins. Added in schema 2 (a schema 1
    file is upgraded in place when opened).

All methods are thread-safe (one lock around the connection), so async callers may use ``asyncio.to_thread``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from collector.enrich.analytics_client import DailyUsage, parse_record
from collector.private import private_dirs, private_file

DB_FILENAME = "analytics.db"
SCHEMA_VERSION = 2
IDENTITY_KINDS = ("account_uuid", "user_id")
FINAL_AFTER = timedelta(hours=3)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_daily (
    date TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    terminal_type TEXT NOT NULL,
    customer_type TEXT NOT NULL,
    subscription_type TEXT,
    organization_id TEXT,
    num_sessions INTEGER NOT NULL,
    lines_added INTEGER NOT NULL,
    lines_removed INTEGER NOT NULL,
    commits INTEGER NOT NULL,
    pull_requests INTEGER NOT NULL,
    edit_accepted INTEGER NOT NULL,
    edit_rejected INTEGER NOT NULL,
    cost_cents TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    raw TEXT NOT NULL,
    PRIMARY KEY (date, actor_type, actor_id, terminal_type, customer_type)
);
CREATE INDEX IF NOT EXISTS usage_daily_actor ON usage_daily (actor_type, actor_id, date);
CREATE TABLE IF NOT EXISTS sync_state (
    date TEXT PRIMARY KEY,
    fetched_at TEXT NOT NULL,
    first_fetched_at TEXT NOT NULL,
    final INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    pages INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identity_map (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    email TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
"""

_SAVE_IDENTITY = """
INSERT INTO identity_map (kind, value, email, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (kind, value) DO UPDATE SET email = excluded.email, last_seen = excluded.last_seen
"""

_UPSERT = """
INSERT INTO usage_daily (date, actor_type, actor_id, terminal_type, customer_type, subscription_type,
    organization_id, num_sessions, lines_added, lines_removed, commits, pull_requests, edit_accepted,
    edit_rejected, cost_cents, fetched_at, raw)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (date, actor_type, actor_id, terminal_type, customer_type) DO UPDATE SET
    subscription_type = excluded.subscription_type, organization_id = excluded.organization_id,
    num_sessions = excluded.num_sessions, lines_added = excluded.lines_added,
    lines_removed = excluded.lines_removed, commits = excluded.commits,
    pull_requests = excluded.pull_requests, edit_accepted = excluded.edit_accepted,
    edit_rejected = excluded.edit_rejected, cost_cents = excluded.cost_cents,
    fetched_at = excluded.fetched_at, raw = excluded.raw
"""

_MARK_DAY = """
INSERT INTO sync_state (date, fetched_at, first_fetched_at, final, rows, pages) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (date) DO UPDATE SET fetched_at = excluded.fetched_at, final = MAX(final, excluded.final),
    rows = excluded.rows, pages = excluded.pages
"""


class UsageStoreError(RuntimeError):
    """The analytics database cannot be used (e.g. written by a newer schema)."""


USAGE_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error, UsageStoreError)
"""What opening or reading the usage history can raise (callers catch these, not a backend's own types)."""


@dataclass(frozen=True, slots=True)
class DayState:
    """A day whose walk completed: when, whether the day was final then, rows and pages of that fetch."""

    day: date
    fetched_at: datetime
    first_fetched_at: datetime
    final: bool
    rows: int
    pages: int


@dataclass(frozen=True, slots=True)
class UserDailySummary:
    """One user's totals on their latest known day, summed over terminals and customer types.

    ``cost_usd`` is in dollars (the API reports cents). ``acceptance_rate`` is
    accepted / (accepted + rejected) over all edit tools, ``None`` when there was no decision.
    """

    email: str
    day: date
    sessions: int
    commits: int
    pull_requests: int
    lines_added: int
    lines_removed: int
    edit_accepted: int
    edit_rejected: int
    cost_usd: Decimal
    terminals: tuple[str, ...]

    @property
    def acceptance_rate(self) -> float | None:
        total = self.edit_accepted + self.edit_rejected
        return self.edit_accepted / total if total else None


@dataclass(frozen=True, slots=True)
class ActorDay:
    """One actor's scalar figures on one day, summed over terminals and customer types (no per-tool or per-model
    detail; :meth:`UsageStore.rows` has those). ``cost_cents`` is in US cents."""

    day: date
    actor_type: str
    actor_id: str
    sessions: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    commits: int = 0
    pull_requests: int = 0
    edit_accepted: int = 0
    edit_rejected: int = 0
    cost_cents: Decimal = Decimal(0)


def is_final(day: date, fetched_at: datetime) -> bool:
    """Whether a fetch started at ``fetched_at`` saw ``day`` complete (``FINAL_AFTER`` past its end)."""
    day_end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return fetched_at >= day_end + FINAL_AFTER


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class UsageStore:
    """The analytics history database; open with :meth:`open` (a data directory) or a file path."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            private_file(self.path)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        try:
            self._setup(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    @classmethod
    def open(cls, data_dir: str | Path) -> UsageStore:
        """Open (creating if needed) ``<data_dir>/analytics.db``."""
        directory = Path(data_dir)
        private_dirs(directory)
        return cls(directory / DB_FILENAME)

    @classmethod
    def open_existing(cls, data_dir: str | Path) -> UsageStore | None:
        """``<data_dir>/analytics.db`` if a history exists there, else None (nothing is created)."""
        path = Path(data_dir) / DB_FILENAME
        return cls(path) if path.is_file() else None

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise UsageStoreError(f"cannot enable WAL on the analytics database (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageStoreError(
                f"analytics database has schema {version}, newer than this ccbridge understands ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            try:
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise UsageStoreError("analytics store is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> UsageStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------

    def write_day(self, day: date, records: Sequence[DailyUsage], *, pages: int, fetched_at: datetime) -> int:
        """Upsert all records of a completed walk of ``day`` and mark the day, in one transaction.

        Returns the number of rows written. Records repeating a key within one walk: the last one wins.
        """
        fetched = _ts(fetched_at)
        params = [
            (
                *r.key,
                r.subscription_type,
                r.organization_id,
                r.num_sessions,
                r.lines_added,
                r.lines_removed,
                r.commits,
                r.pull_requests,
                r.edit_accepted,
                r.edit_rejected,
                str(r.cost_cents),
                fetched,
                orjson.dumps(r.raw).decode(),
            )
            for r in records
        ]
        final = int(is_final(day, fetched_at))
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, params)
                conn.execute(_MARK_DAY, (day.isoformat(), fetched, fetched, final, len(params), pages))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(params)

    def save_identities(self, mappings: Iterable[tuple[str, str, str]], *, seen_at: datetime) -> int:
        """Upsert ``(kind, value, email)`` mappings (kind in :data:`IDENTITY_KINDS`) in one transaction."""
        stamp = _ts(seen_at)
        params = [(kind, value, email, stamp, stamp) for kind, value, email in mappings]
        for kind, *_ in params:
            if kind not in IDENTITY_KINDS:
                raise ValueError(f"unknown identity kind {kind!r}")
        if not params:
            return 0
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_SAVE_IDENTITY, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(params)

    # -- reading -------------------------------------------------------------------------------------

    def identities(self) -> dict[tuple[str, str], str]:
        """Every stored mapping: ``(kind, value) -> email``."""
        return {(k, v): e for k, v, e in self._query("SELECT kind, value, email FROM identity_map")}

    def latest_day(self, as_of: date | None = None) -> date | None:
        """The most recent day (on or before ``as_of``) with stored rows or a completed fetch."""
        bound = (as_of or date.max).isoformat()
        rows = self._query(
            "SELECT MAX(d) FROM (SELECT MAX(date) AS d FROM sync_state WHERE date <= ? "
            "UNION ALL SELECT MAX(date) FROM usage_daily WHERE date <= ?)",
            (bound, bound),
        )
        return date.fromisoformat(rows[0][0]) if rows[0][0] else None

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db().execute(sql, tuple(args)).fetchall()

    def day_states(self, since: date | None = None, until: date | None = None) -> dict[date, DayState]:
        """Completed days (optionally within ``since..until`` inclusive) and their last fetch."""
        rows = self._query(
            "SELECT date, fetched_at, first_fetched_at, final, rows, pages FROM sync_state "
            "WHERE date >= ? AND date <= ? ORDER BY date",
            ((since or date.min).isoformat(), (until or date.max).isoformat()),
        )
        return {
            date.fromisoformat(d): DayState(
                date.fromisoformat(d), datetime.fromisoformat(f), datetime.fromisoformat(ff), bool(fin), n, p
            )
            for d, f, ff, fin, n, p in rows
        }

    def day_state(self, day: date) -> DayState | None:
        return self.day_states(day, day).get(day)

    def first_day(self) -> date | None:
        """The oldest day with a completed fetch, if any."""
        rows = self._query("SELECT MIN(date) FROM sync_state")
        return date.fromisoformat(rows[0][0]) if rows[0][0] else None

    def known_days(self) -> list[date]:
        """Every day that has stored rows or a completed fetch, oldest first."""
        rows = self._query("SELECT date FROM sync_state UNION SELECT DISTINCT date FROM usage_daily ORDER BY date")
        return [date.fromisoformat(r[0]) for r in rows]

    def count_rows(self, since: date | None = None, until: date | None = None) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM usage_daily WHERE date >= ? AND date <= ?",
            ((since or date.min).isoformat(), (until or date.max).isoformat()),
        )
        return int(rows[0][0])

    def rows(
        self, since: date, until: date, *, actor_type: str | None = None, actor_id: str | None = None
    ) -> list[DailyUsage]:
        """Stored records with ``since <= date <= until``, re-parsed from ``raw``, in key order."""
        sql = "SELECT date, raw FROM usage_daily WHERE date >= ? AND date <= ?"
        args: list[object] = [since.isoformat(), until.isoformat()]
        if actor_type is not None:
            sql += " AND actor_type = ?"
            args.append(actor_type)
        if actor_id is not None:
            sql += " AND actor_id = ?"
            args.append(actor_id)
        sql += " ORDER BY date, actor_type, actor_id, terminal_type, customer_type"
        return [parse_record(orjson.loads(raw), date.fromisoformat(d)) for d, raw in self._query(sql, args)]

    def actor_days(self, since: date, until: date) -> list[ActorDay]:
        """Per ``(date, actor)`` sums of the stored scalar columns for ``since..until``, without parsing ``raw``."""
        rows = self._query(
            "SELECT date, actor_type, actor_id, num_sessions, lines_added, lines_removed, commits, pull_requests, "
            "edit_accepted, edit_rejected, cost_cents FROM usage_daily WHERE date >= ? AND date <= ? "
            "ORDER BY date, actor_type, actor_id",
            (since.isoformat(), until.isoformat()),
        )
        out: list[ActorDay] = []
        key: tuple[str, str, str] | None = None
        sums: list[int] = []
        cents = Decimal(0)
        for day, actor_type, actor_id, *counts, cost in rows:
            if (day, actor_type, actor_id) != key:
                if key is not None:
                    out.append(ActorDay(date.fromisoformat(key[0]), key[1], key[2], *sums, cost_cents=cents))
                key, sums, cents = (day, actor_type, actor_id), [0] * len(counts), Decimal(0)
            sums = [a + b for a, b in zip(sums, counts, strict=True)]
            cents += Decimal(cost)
        if key is not None:
            out.append(ActorDay(date.fromisoformat(key[0]), key[1], key[2], *sums, cost_cents=cents))
        return out

    def data_marker(self) -> tuple[object, ...]:
        """A value that changes whenever a day's fetch is written (to skip re-reading unchanged data)."""
        return tuple(self._query("SELECT MAX(fetched_at), COUNT(*), SUM(rows) FROM sync_state")[0])

    def latest_user_summaries(self, as_of: date | None = None) -> list[UserDailySummary]:
        """For each user email, the totals of the latest day with data (on or before ``as_of``)."""
        rows = self._query(
            """
            SELECT u.actor_id, u.date, u.terminal_type, u.num_sessions, u.commits, u.pull_requests,
                   u.lines_added, u.lines_removed, u.edit_accepted, u.edit_rejected, u.cost_cents
            FROM usage_daily AS u
            JOIN (SELECT actor_id, MAX(date) AS last FROM usage_daily
                  WHERE actor_type = 'user_actor' AND date <= ? GROUP BY actor_id) AS l
              ON u.actor_id = l.actor_id AND u.date = l.last
            WHERE u.actor_type = 'user_actor'
            ORDER BY u.actor_id
            """,
            ((as_of or date.max).isoformat(),),
        )
        sums: dict[str, _Totals] = {}
        for email, day, terminal, *counts, cents in rows:
            totals = sums.setdefault(email, _Totals(date.fromisoformat(day)))
            totals.terminals.add(terminal)
            totals.counts = [a + b for a, b in zip(totals.counts, counts, strict=True)]
            totals.cents += Decimal(cents)
        return [
            UserDailySummary(email, t.day, *t.counts, cost_usd=t.cents / 100, terminals=tuple(sorted(t.terminals)))
            for email, t in sums.items()
        ]


@dataclass
class _Totals:
    day: date
    terminals: set[str] = field(default_factory=set)
    counts: list[int] = field(default_factory=lambda: [0] * 7)
    cents: Decimal = Decimal(0)
