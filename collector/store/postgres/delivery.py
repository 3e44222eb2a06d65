"""Delivery state in PostgreSQL: cursors any replica can take over, claimed with fenced leases; dead letters.

A destination's progress through one writer's records is a row of ``delivery_progress`` (destination, stream
``records``, writer): the cursor ``delivered_seq`` and a lease (owner, expiry, epoch). :class:`PgLeaseManager`
is what a replica runs to decide which (destination, writer) pairs it delivers:

* every ``lease_ttl / 3`` it renews the leases it holds (``lease_expires_at = now() + lease_ttl``) and records its
  presence in ``delivery_replicas``;
* it claims free or expired pairs up to its fair share (pairs / live replicas, rounded up) in one transaction with
  ``SELECT ... FOR UPDATE SKIP LOCKED`` (replicas claiming at the same moment never wait for, nor double-claim, the
  same row); a claim bumps ``lease_epoch``; taking over a pair whose previous owner let it expire counts as a
  takeover;
* it hands over pairs above its share when more replicas are live (the engine stops their worker first, so the
  cursor is saved, then releases them).

Fencing: :meth:`PgDeliveryState.set_cursor` updates the row only ``WHERE lease_owner = me AND lease_epoch = the
epoch I claimed``. A replica that was paused past its lease (GC, partition, SIGSTOP) and then resumes cannot move
a cursor that another replica took over: the update matches no row and raises
:class:`~collector.store.api.LeaseLost`. The new holder continues from the persisted cursor, so the records in
flight at the takeover are the only ones that may be delivered twice (at-least-once).

Dead letters are cluster-wide: one table, every replica sees and replays them; an entry names its writer and the
record's position. Times come from the database clock (``now()``), so replicas' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from collector.store.api import AssignmentChange, LeaseLost
from collector.store.delivery_state import DeadLetter, DeadLetterGroup
from collector.store.postgres.migrations import quote_ident
from collector.store.postgres.session import PgSession, settings_connector

if TYPE_CHECKING:
    import asyncpg

    from collector.config import PostgresStorageConfig
    from collector.telemetry.selfmetrics import SelfMetrics

__all__ = ["PgDeliveryState", "PgLeaseManager", "replica_owner"]

STREAM = "records"


def replica_owner() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix (a restarted process with the same
    pid never inherits the leases of its predecessor; it claims them again, with a new epoch)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


class PgLeaseManager:
    """The (destination, writer) delivery leases of one replica; implements
    :class:`~collector.store.api.DeliveryAssignment`. Call :meth:`refresh` at least every :attr:`interval` seconds."""

    dynamic = True

    def __init__(
        self,
        session: PgSession,
        schema: str,
        *,
        ttl: float = 30.0,
        owner: str | None = None,
        metrics: SelfMetrics | None = None,
        owns_session: bool = False,
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.session = session
        self.schema = schema
        self.q = quote_ident(schema)
        self.ttl = float(ttl)
        self.interval = self.ttl / 3
        self.owner = owner or replica_owner()
        self.metrics = metrics
        self._owns_session = owns_session
        self.takeovers = 0
        self._held: dict[tuple[str, int], int] = {}

    # -- what the delivery state asks ------------------------------------------------------------------------------

    def epoch(self, destination: str, writer_id: int) -> int | None:
        """The epoch of the lease held on (destination, writer), or None when this replica does not hold it."""
        return self._held.get((destination, writer_id))

    @property
    def held(self) -> frozenset[tuple[str, int]]:
        return frozenset(self._held)

    def delivery_state(self, shard: int) -> PgDeliveryState:
        """The delivery state of writer ``shard`` for a worker starting now: its cursor updates are fenced by the
        leases held at this moment (owner and epoch). If a lease lapses and is claimed again (a new epoch: another
        replica may have moved the cursor meanwhile), this state is refused and a new worker starts from the saved
        cursor with a new state."""
        epochs = {d: e for (d, w), e in self._held.items() if w == shard}
        return PgDeliveryState(self.session, self.schema, shard, leases=self, epochs=epochs)

    # -- the heartbeat -----------------------------------------------------------------------------------------------

    async def refresh(self, destinations: Sequence[str]) -> AssignmentChange:
        """Heartbeat: renew held leases, claim free or expired ones up to the fair share, name the ones to hand over."""
        dests = sorted(set(destinations))
        before = dict(self._held)
        renewed, claimed, takeovers, share = await self.session.arun(lambda c: self._refresh(c, dests, before))
        held = dict(renewed)
        held.update(claimed)
        self._held = held
        lost = frozenset(p for p in before if before[p] != held.get(p))
        acquired = frozenset(p for p in held if before.get(p) != held[p])
        shed: frozenset[tuple[str, int]] = frozenset()
        if len(held) > share:
            # hand over the most recently numbered writers first (a stable choice, so two refreshes agree)
            shed = frozenset(sorted(held, key=lambda p: (p[1], p[0]), reverse=True)[: len(held) - share])
        self.takeovers += takeovers
        if self.metrics is not None:
            self.metrics.delivery_leases_held.set(len(held))
            if takeovers:
                self.metrics.delivery_lease_takeovers.inc(takeovers)
        return AssignmentChange(held=frozenset(held), acquired=acquired, lost=lost, shed=shed)

    async def _refresh(
        self, conn: asyncpg.Connection, dests: list[str], before: dict[tuple[str, int], int]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int], int, int]:
        q, ttl = self.q, self.ttl
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO {q}.delivery_replicas (owner, heartbeat_at, expires_at) "
                "VALUES ($1, now(), now() + make_interval(secs => $2)) ON CONFLICT (owner) DO UPDATE "
                "SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at",
                self.owner,
                ttl,
            )
            await conn.execute(
                f"DELETE FROM {q}.delivery_replicas WHERE expires_at < now() - make_interval(secs => $1)", ttl * 10
            )
            await conn.execute(
                f"INSERT INTO {q}.delivery_progress (destination, stream, writer_id) "
                f"SELECT d, '{STREAM}', w.writer_id FROM {q}.writers w CROSS JOIN unnest($1::text[]) AS d "
                "ON CONFLICT DO NOTHING",
                dests,
            )
            rows = await conn.fetch(
                f"UPDATE {q}.delivery_progress SET lease_expires_at = now() + make_interval(secs => $2), "
                f"lease_heartbeat_at = now() WHERE stream = '{STREAM}' AND lease_owner = $1 "
                "AND destination = ANY($3::text[]) RETURNING destination, writer_id, lease_epoch",
                self.owner,
                ttl,
                dests,
            )
        renewed = {(r["destination"], r["writer_id"]): int(r["lease_epoch"]) for r in rows}
        live = int(await conn.fetchval(f"SELECT count(*) FROM {q}.delivery_replicas WHERE expires_at > now()"))
        total = int(
            await conn.fetchval(
                f"SELECT count(*) FROM {q}.delivery_progress WHERE stream = '{STREAM}' "
                "AND destination = ANY($1::text[])",
                dests,
            )
        )
        share = math.ceil(total / max(live, 1))
        claimed: dict[tuple[str, int], int] = {}
        takeovers = 0
        want = share - len(renewed)
        if want > 0:
            async with conn.transaction():
                free = await conn.fetch(
                    f"SELECT destination, writer_id, lease_owner FROM {q}.delivery_progress "
                    f"WHERE stream = '{STREAM}' AND destination = ANY($1::text[]) "
                    "AND (lease_owner IS NULL OR lease_expires_at < now()) "
                    "ORDER BY writer_id, destination LIMIT $2 FOR UPDATE SKIP LOCKED",
                    dests,
                    want,
                )
                for r in free:
                    epoch = await conn.fetchval(
                        f"UPDATE {q}.delivery_progress SET lease_owner = $1, lease_epoch = lease_epoch + 1, "
                        "lease_expires_at = now() + make_interval(secs => $2), lease_heartbeat_at = now(), "
                        f"updated_at = now() WHERE destination = $3 AND stream = '{STREAM}' AND writer_id = $4 "
                        "RETURNING lease_epoch",
                        self.owner,
                        ttl,
                        r["destination"],
                        r["writer_id"],
                    )
                    claimed[(r["destination"], r["writer_id"])] = int(epoch)
                    if r["lease_owner"] is not None and r["lease_owner"] != self.owner:
                        takeovers += 1
        return renewed, claimed, takeovers, share

    async def release(self, pairs: Sequence[tuple[str, int]]) -> None:
        """Hand pairs over (their worker has stopped and saved its cursor): free the lease for another replica."""
        todo = [(d, w, self._held[(d, w)]) for d, w in pairs if (d, w) in self._held]
        for d, w, _ in todo:
            del self._held[(d, w)]
        if not todo:
            return

        async def _release(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                f"UPDATE {self.q}.delivery_progress SET lease_owner = NULL, lease_expires_at = NULL, "
                f"lease_heartbeat_at = NULL WHERE destination = $1 AND stream = '{STREAM}' AND writer_id = $2 "
                "AND lease_owner = $3 AND lease_epoch = $4",
                [(d, w, self.owner, e) for d, w, e in todo],
            )

        await self.session.arun(_release)
        if self.metrics is not None:
            self.metrics.delivery_leases_held.set(len(self._held))

    async def close(self) -> None:
        """Release every lease and leave the replica list (a clean shutdown hands work over at once)."""
        try:
            await self.release(list(self._held))

            async def _leave(conn: asyncpg.Connection) -> None:
                await conn.execute(f"DELETE FROM {self.q}.delivery_replicas WHERE owner = $1", self.owner)

            await self.session.arun(_leave)
        finally:
            if self._owns_session:
                await asyncio.to_thread(self.session.close)

    @classmethod
    def from_settings(
        cls, settings: PostgresStorageConfig, *, ttl: float, metrics: SelfMetrics | None = None
    ) -> PgLeaseManager:
        """A lease manager on its own connection from ``storage.postgresql`` (closed with the manager)."""
        session = PgSession(settings_connector(settings), name="ccbridge-pg-leases")
        return cls(session, settings.schema, ttl=ttl, metrics=metrics, owns_session=True)


_DL_COLUMNS = (
    "dead_letter_id, destination, record_seq, record_id, record_time_ms, failed_ms, reason, status, attempts, body, "
    "batch_id, writer_id"
)
_GROUP = (
    "SELECT destination, batch_id, reason, max(status), count(*), min(dead_letter_id), max(dead_letter_id), "
    "min(failed_ms), max(failed_ms) FROM {q}.dead_letters"
)


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        dlq_id=int(row[0]),
        destination=row[1],
        record_seq=int(row[2] or 0),
        record_id=row[3] or "",
        time_ms=int(row[4] or 0),
        failed_ms=int(row[5]),
        reason=row[6],
        status=row[7],
        attempts=int(row[8]),
        body=bytes(row[9]),
        shard_file=f"writer-{row[11]}" if row[11] is not None else "",
        batch=row[10],
    )


def _group(row: asyncpg.Record) -> DeadLetterGroup:
    return DeadLetterGroup(row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), int(row[6]), row[7], row[8])


class PgDeliveryState:
    """Cursors and dead letters of one writer (``writer_id``), or of the whole cluster (``writer_id`` None: dead
    letters of every writer, no cursors); implements :class:`~collector.store.api.DeliveryStateStore`.

    Cursor updates need a lease: ``leases`` (a :class:`PgLeaseManager`) supplies the owner and epoch the update is
    fenced with. Without one the state is read-mostly: dead-letter housekeeping (list, replay bookkeeping, purge)
    works, moving a cursor raises :class:`~collector.store.api.LeaseLost`.
    """

    def __init__(
        self,
        session: PgSession,
        schema: str,
        writer_id: int | None,
        *,
        leases: PgLeaseManager | None = None,
        epochs: dict[str, int] | None = None,
    ) -> None:
        self.session = session
        self.q = quote_ident(schema)
        self.writer_id = writer_id
        self.leases = leases
        self.epochs = epochs  # per destination: the lease epoch this state was issued under (None: the current one)

    def close(self) -> None:
        """The session belongs to whoever made it (shared by every writer's state)."""

    # -- cursors --------------------------------------------------------------------------------------------------

    def _writer(self) -> int:
        if self.writer_id is None:
            raise ValueError("cursors belong to one writer; this is the cluster-wide dead-letter view")
        return self.writer_id

    def cursor(self, destination: str, default: int = 0) -> int:
        w = self._writer()
        seq = self.session.run(
            lambda c: c.fetchval(
                f"SELECT delivered_seq FROM {self.q}.delivery_progress WHERE destination = $1 AND stream = '{STREAM}' "
                "AND writer_id = $2",
                destination,
                w,
            )
        )
        return int(seq) if seq is not None else default

    def cursors(self) -> dict[str, int]:
        w = self._writer()
        rows = self.session.run(
            lambda c: c.fetch(
                f"SELECT destination, delivered_seq FROM {self.q}.delivery_progress WHERE stream = '{STREAM}' "
                "AND writer_id = $1",
                w,
            )
        )
        return {r[0]: int(r[1]) for r in rows}

    def _fence(self, destination: str) -> tuple[str, int]:
        w = self._writer()
        current = self.leases.epoch(destination, w) if self.leases is not None else None
        if self.leases is None or current is None:
            raise LeaseLost(destination, w, "no lease held")
        epoch = self.epochs.get(destination) if self.epochs is not None else current
        if epoch != current:
            raise LeaseLost(destination, w, "the lease lapsed and was claimed again since this worker started")
        return self.leases.owner, current

    async def _set_cursor(self, conn: asyncpg.Connection, destination: str, seq: int, owner: str, epoch: int) -> None:
        status = await conn.execute(
            f"UPDATE {self.q}.delivery_progress SET delivered_seq = $1, updated_at = now() WHERE destination = $2 "
            f"AND stream = '{STREAM}' AND writer_id = $3 AND lease_owner = $4 AND lease_epoch = $5",
            seq,
            destination,
            self.writer_id,
            owner,
            epoch,
        )
        if _count(status) != 1:
            raise LeaseLost(destination, self._writer(), "another replica took it over (fenced update refused)")

    def set_cursor(self, destination: str, seq: int) -> None:
        """Move the cursor, fenced: refused (:class:`LeaseLost`) unless this replica still holds the lease it
        claimed (same owner and epoch)."""
        owner, epoch = self._fence(destination)
        self.session.run(lambda c: self._set_cursor(c, destination, seq, owner, epoch))

    # -- dead letters -----------------------------------------------------------------------------------------------

    def dead_letter(
        self,
        destination: str,
        records: Sequence[tuple[int, str, int, bytes]],
        reason: str,
        status: int | None,
        attempts: int,
        advance_to: int | None = None,
    ) -> None:
        """Store ``(seq, id, time_ms, body)`` rows as dead letters (and optionally advance the fenced cursor) in one
        transaction: a refused cursor update stores no dead letter either."""
        w = self._writer()
        fence = self._fence(destination) if advance_to is not None else None
        now = _now_ms()
        batch = f"writer {w} seq {records[0][0]}-{records[-1][0]}" if records else ""
        rows = [
            (destination, batch, reason, status, attempts, now, t, rid, body, w, seq) for seq, rid, t, body in records
        ]

        async def _store(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {self.q}.dead_letters (destination, stream, batch_id, reason, status, attempts, "
                    f"created_ms, failed_ms, record_time_ms, record_id, body, writer_id, record_seq) "
                    f"VALUES ($1, '{STREAM}', $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11)",
                    rows,
                )
                if fence is not None and advance_to is not None:
                    await self._set_cursor(conn, destination, advance_to, *fence)

        self.session.run(_store)

    def _scope(self, destination: str | None, args: list[object]) -> str:
        where = []
        if self.writer_id is not None:
            args.append(self.writer_id)
            where.append(f"writer_id = ${len(args)}")
        if destination is not None:
            args.append(destination)
            where.append(f"destination = ${len(args)}")
        return " AND ".join(where) if where else "TRUE"

    def dead_letter_count(self, destination: str | None = None) -> int:
        args: list[object] = []
        cond = self._scope(destination, args)
        return int(
            self.session.run(lambda c: c.fetchval(f"SELECT count(*) FROM {self.q}.dead_letters WHERE {cond}", *args))
        )

    def dead_letters(
        self, destination: str | None = None, limit: int | None = None, after: int = 0
    ) -> list[DeadLetter]:
        """Entries in id order (of ``destination`` only, when given), those with an id above ``after``."""
        args: list[object] = [after]
        cond = self._scope(destination, args)
        sql = (
            f"SELECT {_DL_COLUMNS} FROM {self.q}.dead_letters WHERE dead_letter_id > $1 AND {cond} "
            "ORDER BY dead_letter_id"
        )
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        return [_dead_letter(r) for r in self.session.run(lambda c: c.fetch(sql, *args))]

    def delete_dead_letters(self, dlq_ids: Sequence[int]) -> None:
        ids = [int(i) for i in dlq_ids]
        if ids:
            self.session.run(
                lambda c: c.execute(f"DELETE FROM {self.q}.dead_letters WHERE dead_letter_id = ANY($1::bigint[])", ids)
            )

    def fail_again(self, dlq_ids: Sequence[int], reason: str, status: int | None) -> None:
        """Entries a replay sent and the destination refused again: new reason and time, one more attempt."""
        ids = [int(i) for i in dlq_ids]
        if ids:
            self.session.run(
                lambda c: c.execute(
                    f"UPDATE {self.q}.dead_letters SET reason = $1, status = $2, failed_ms = $3, "
                    "attempts = attempts + 1 WHERE dead_letter_id = ANY($4::bigint[])",
                    reason,
                    status,
                    _now_ms(),
                    ids,
                )
            )

    def dead_letter_groups(self, destination: str | None = None) -> list[DeadLetterGroup]:
        """Dead letters grouped by destination, batch and reason, oldest group first."""
        args: list[object] = []
        cond = self._scope(destination, args)
        sql = (
            _GROUP.format(q=self.q)
            + f" WHERE {cond} GROUP BY destination, batch_id, reason ORDER BY min(dead_letter_id)"
        )
        return [_group(r) for r in self.session.run(lambda c: c.fetch(sql, *args))]

    def purge_dead_letters(
        self, destination: str | None = None, failed_before_ms: int | None = None
    ) -> list[DeadLetterGroup]:
        """Delete the dead letters of ``destination`` (all when None) that failed before ``failed_before_ms`` (any
        time when None); returns what was deleted, grouped as :meth:`dead_letter_groups`."""
        args: list[object] = []
        cond = self._scope(destination, args)
        if failed_before_ms is not None:
            args.append(failed_before_ms)
            cond += f" AND failed_ms < ${len(args)}"
        select = (
            _GROUP.format(q=self.q)
            + f" WHERE {cond} GROUP BY destination, batch_id, reason ORDER BY min(dead_letter_id)"
        )

        async def _purge(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            async with conn.transaction(isolation="repeatable_read"):
                rows = await conn.fetch(select, *args)
                await conn.execute(f"DELETE FROM {self.q}.dead_letters WHERE {cond}", *args)
            return rows

        return [_group(r) for r in self.session.run(_purge)]
