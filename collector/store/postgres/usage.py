"""The Analytics API usage history in PostgreSQL: what :class:`collector.store.usage.UsageStore` offers, cluster-wide.

Same tables and rules as the embedded ``analytics.db`` (see :mod:`collector.store.usage`), in the bridge's schema
(``usage_daily``, ``usage_sync_state``, ``identity_map``): nothing is ever deleted; writing a day upserts its rows and
marks the day in one transaction; a day once final stays final; the latest e-mail seen for an identity wins. One
replica (the analytics leader, :mod:`collector.store.postgres.leader`) writes usage rows; every replica reads them
and the identity map, so every replica enriches records the same way.

Methods are synchronous and thread-safe (they run on a :class:`~collector.store.postgres.session.PgSession`); the
database's errors are raised as :class:`~collector.store.usage.UsageStoreError`, which callers already catch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from collector.enrich.analytics_client import DailyUsage, parse_record
from collector.store.api import StorageError
from collector.store.postgres.migrations import quote_ident
from collector.store.postgres.session import PgSession
from collector.store.usage import (
    IDENTITY_KINDS,
    ActorDay,
    DayState,
    UsageStoreError,
    UserDailySummary,
    _Totals,
    actor_day,
    is_final,
    user_summary,
)

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")

__all__ = ["PgUsageStore"]

_COLUMNS = (
    "date, actor_type, actor_id, terminal_type, customer_type, subscription_type, organization_id, num_sessions, "
    "lines_added, lines_removed, commits, pull_requests, edit_accepted, edit_rejected, cost_cents, fetched_at, raw"
)


class PgUsageStore:
    """The usage history in ``schema``; ``owns_session``: close the session with the store."""

    def __init__(self, session: PgSession, schema: str, *, owns_session: bool = False) -> None:
        self.session = session
        self.schema = schema
        self.q = quote_ident(schema)
        self._owns = owns_session
        self._closed = False

    def close(self) -> None:
        if not self._closed and self._owns:
            self.session.close()
        self._closed = True

    def __enter__(self) -> PgUsageStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        import asyncpg

        if self._closed:
            raise UsageStoreError("analytics store is closed")
        try:
            return self.session.run(fn)
        except (StorageError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise UsageStoreError(f"usage history in PostgreSQL schema {self.schema!r}: {exc}") from None

    def _query(self, sql: str, *args: object) -> list[Any]:
        return self._run(lambda c: c.fetch(sql.format(q=self.q), *args))

    # -- writing -------------------------------------------------------------------------------------

    def write_day(self, day: date, records: Sequence[DailyUsage], *, pages: int, fetched_at: datetime) -> int:
        """Upsert all records of a completed walk of ``day`` and mark the day, in one transaction."""
        fetched = fetched_at.astimezone(UTC)
        latest: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for r in records:  # a key repeated within one walk: the last one wins
            latest[tuple(r.key)] = (
                r.day,
                *r.key[1:],
                r.subscription_type,
                r.organization_id,
                r.num_sessions,
                r.lines_added,
                r.lines_removed,
                r.commits,
                r.pull_requests,
                r.edit_accepted,
                r.edit_rejected,
                Decimal(str(r.cost_cents)),
                fetched,
                orjson.dumps(r.raw).decode(),
            )
        params = list(latest.values())
        final = is_final(day, fetched_at)
        q = self.q

        async def _write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {q}.usage_daily ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                    "$12, $13, $14, $15, $16, $17::jsonb) "
                    "ON CONFLICT (date, actor_type, actor_id, terminal_type, customer_type) DO UPDATE SET "
                    "subscription_type = excluded.subscription_type, organization_id = excluded.organization_id, "
                    "num_sessions = excluded.num_sessions, lines_added = excluded.lines_added, "
                    "lines_removed = excluded.lines_removed, commits = excluded.commits, "
                    "pull_requests = excluded.pull_requests, edit_accepted = excluded.edit_accepted, "
                    "edit_rejected = excluded.edit_rejected, cost_cents = excluded.cost_cents, "
                    "fetched_at = excluded.fetched_at, raw = excluded.raw",
                    params,
                )
                await conn.execute(
                    f"INSERT INTO {q}.usage_sync_state (date, fetched_at, first_fetched_at, final, rows, pages) "
                    "VALUES ($1, $2, $2, $3, $4, $5) ON CONFLICT (date) DO UPDATE SET fetched_at = "
                    "excluded.fetched_at, final = {q}.usage_sync_state.final OR excluded.final, rows = excluded.rows, "
                    "pages = excluded.pages".replace("{q}", q),
                    day,
                    fetched,
                    final,
                    len(params),
                    pages,
                )

        self._run(_write)
        return len(params)

    def save_identities(self, mappings: Iterable[tuple[str, str, str]], *, seen_at: datetime) -> int:
        """Upsert ``(kind, value, email)`` mappings (kind in :data:`IDENTITY_KINDS`) in one transaction."""
        stamp = seen_at.astimezone(UTC)
        params = [(kind, value, email, stamp) for kind, value, email in mappings]
        for kind, *_ in params:
            if kind not in IDENTITY_KINDS:
                raise ValueError(f"unknown identity kind {kind!r}")
        if not params:
            return 0

        async def _save(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {self.q}.identity_map (kind, value, email, first_seen, last_seen) "
                    "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (kind, value) DO UPDATE SET email = excluded.email, "
                    "last_seen = excluded.last_seen",
                    params,
                )

        self._run(_save)
        return len(params)

    # -- reading -------------------------------------------------------------------------------------

    def identities(self) -> dict[tuple[str, str], str]:
        """Every stored mapping: ``(kind, value) -> email``."""
        return {(k, v): e for k, v, e in self._query("SELECT kind, value, email FROM {q}.identity_map")}

    def latest_day(self, as_of: date | None = None) -> date | None:
        """The most recent day (on or before ``as_of``) with stored rows or a completed fetch."""
        rows = self._query(
            "SELECT greatest((SELECT max(date) FROM {q}.usage_sync_state WHERE date <= $1), "
            "(SELECT max(date) FROM {q}.usage_daily WHERE date <= $1))",
            as_of or date.max,
        )
        return rows[0][0]

    def day_states(self, since: date | None = None, until: date | None = None) -> dict[date, DayState]:
        """Completed days (optionally within ``since..until`` inclusive) and their last fetch."""
        rows = self._query(
            "SELECT date, fetched_at, first_fetched_at, final, rows, pages FROM {q}.usage_sync_state "
            "WHERE date >= $1 AND date <= $2 ORDER BY date",
            since or date.min,
            until or date.max,
        )
        return {r[0]: DayState(r[0], r[1], r[2], bool(r[3]), int(r[4]), int(r[5])) for r in rows}

    def day_state(self, day: date) -> DayState | None:
        return self.day_states(day, day).get(day)

    def first_day(self) -> date | None:
        """The oldest day with a completed fetch, if any."""
        return self._query("SELECT min(date) FROM {q}.usage_sync_state")[0][0]

    def known_days(self) -> list[date]:
        """Every day that has stored rows or a completed fetch, oldest first."""
        rows = self._query(
            "SELECT date FROM {q}.usage_sync_state UNION SELECT DISTINCT date FROM {q}.usage_daily ORDER BY date"
        )
        return [r[0] for r in rows]

    def count_rows(self, since: date | None = None, until: date | None = None) -> int:
        rows = self._query(
            "SELECT count(*) FROM {q}.usage_daily WHERE date >= $1 AND date <= $2", since or date.min, until or date.max
        )
        return int(rows[0][0])

    def rows(
        self, since: date, until: date, *, actor_type: str | None = None, actor_id: str | None = None
    ) -> list[DailyUsage]:
        """Stored records with ``since <= date <= until``, re-parsed from ``raw``, in key order."""
        sql = "SELECT date, raw FROM {q}.usage_daily WHERE date >= $1 AND date <= $2"
        args: list[object] = [since, until]
        if actor_type is not None:
            args.append(actor_type)
            sql += f" AND actor_type = ${len(args)}"
        if actor_id is not None:
            args.append(actor_id)
            sql += f" AND actor_id = ${len(args)}"
        sql += " ORDER BY date, actor_type, actor_id, terminal_type, customer_type"
        return [parse_record(orjson.loads(raw), d) for d, raw in self._query(sql, *args)]

    def actor_days(self, since: date, until: date) -> list[ActorDay]:
        """Per ``(date, actor)`` sums of the stored scalar columns for ``since..until``, without parsing ``raw``."""
        rows = self._query(
            "SELECT date, actor_type, actor_id, sum(num_sessions), sum(lines_added), sum(lines_removed), "
            "sum(commits), sum(pull_requests), sum(edit_accepted), sum(edit_rejected), sum(cost_cents) "
            "FROM {q}.usage_daily WHERE date >= $1 AND date <= $2 GROUP BY date, actor_type, actor_id "
            "ORDER BY date, actor_type, actor_id",
            since,
            until,
        )
        return [actor_day(r[0], r[1], r[2], [int(x) for x in r[3:10]], Decimal(r[10])) for r in rows]

    def data_marker(self) -> tuple[object, ...]:
        """A value that changes whenever a day's fetch is written (to skip re-reading unchanged data)."""
        return tuple(self._query("SELECT max(fetched_at), count(*), sum(rows) FROM {q}.usage_sync_state")[0])

    def latest_user_summaries(self, as_of: date | None = None) -> list[UserDailySummary]:
        """For each user email, the totals of the latest day with data (on or before ``as_of``)."""
        rows = self._query(
            "SELECT u.actor_id, u.date, u.terminal_type, u.num_sessions, u.commits, u.pull_requests, "
            "u.lines_added, u.lines_removed, u.edit_accepted, u.edit_rejected, u.cost_cents "
            "FROM {q}.usage_daily AS u JOIN (SELECT actor_id, max(date) AS last FROM {q}.usage_daily "
            "WHERE actor_type = 'user_actor' AND date <= $1 GROUP BY actor_id) AS l "
            "ON u.actor_id = l.actor_id AND u.date = l.last WHERE u.actor_type = 'user_actor' ORDER BY u.actor_id",
            as_of or date.max,
        )
        sums: dict[str, _Totals] = {}
        for email, day, terminal, *counts, cents in rows:
            totals = sums.setdefault(email, _Totals(day))
            totals.terminals.add(terminal)
            totals.counts = [a + b for a, b in zip(totals.counts, counts, strict=True)]
            totals.cents += Decimal(cents)
        return [
            user_summary(email, t.day, t.counts, t.cents / 100, tuple(sorted(t.terminals))) for email, t in sums.items()
        ]
