"""One leader among the replicas, by a session-level advisory lock (the Analytics API sync runs on the leader).

The leader holds ``pg_try_advisory_lock(key)`` on a connection of its own, kept open for as long as it leads. The
lock belongs to that database session: when the leader process dies, hangs up or is cut off, PostgreSQL ends the
session (immediately for a closed socket; after the server's TCP keepalive for a vanished host) and the lock is
free, so another replica's next :meth:`AdvisoryLeader.try_lead` takes it. Nothing needs a lease or a clock.

Before each cycle of work, the leader checks that its session is alive (:meth:`try_lead` does a round trip): a
leader whose connection broke knows it no longer leads and tries to take the lock again on a new connection. Two
leaders can overlap only for the moment between a session ending at the server and the old leader noticing; the
analytics sync's writes are idempotent upserts, so such an overlap writes the same rows twice, nothing worse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

    from collector.store.postgres.session import Connector

log = logging.getLogger(__name__)

__all__ = ["ANALYTICS_SYNC", "AdvisoryLeader", "leader_key", "run_while_leader"]

ANALYTICS_SYNC = "analytics-sync"


def leader_key(schema: str, role: str) -> int:
    """The advisory lock (signed 64-bit) of ``role``'s leader in ``schema``."""
    digest = hashlib.sha256(f"ccbridge.leader\x1f{schema}\x1f{role}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLeader:
    """Contends for the leadership of ``role`` in ``schema``; use from one event loop."""

    def __init__(self, connect: Connector, schema: str, role: str = ANALYTICS_SYNC) -> None:
        self._connect = connect
        self.schema = schema
        self.role = role
        self.key = leader_key(schema, role)
        self._conn: asyncpg.Connection | None = None
        self.leading = False

    async def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
        self._conn = None

    async def try_lead(self) -> bool:
        """True when this process leads now: it still holds the lock on a live session, or just took it."""
        try:
            if self._conn is None or self._conn.is_closed():
                if self.leading:  # the session that held the lock is gone, and the lock with it
                    log.warning("lost the %s leadership (its database session ended)", self.role)
                    self.leading = False
                self._conn = None
                self._conn = await self._connect()
            if self.leading:
                # a round trip proves the session (and with it the lock) is still there
                await self._conn.fetchval("SELECT 1")
                return True
            self.leading = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))
        except Exception as exc:
            if self.leading:
                log.warning("lost the %s leadership (database session ended: %s)", self.role, exc)
            else:
                log.debug("cannot contend for the %s leadership: %s", self.role, exc)
            self.leading = False
            await self._drop()
            return False
        if self.leading:
            log.info("this replica leads the %s", self.role)
        else:
            # keep no idle connection while another replica leads
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        return self.leading

    async def resign(self) -> None:
        """Give the leadership up (clean shutdown): unlock and close, so another replica takes over at once."""
        if self._conn is not None and self.leading:
            with contextlib.suppress(Exception):
                await self._conn.fetchval("SELECT pg_advisory_unlock($1)", self.key)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)
        self._conn = None
        self.leading = False


async def run_while_leader(
    leader: AdvisoryLeader,
    cycle: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    interval: float,
    contend_interval: float = 15.0,
) -> None:
    """Run ``cycle`` every ``interval`` seconds while this process leads; otherwise contend every
    ``contend_interval`` seconds, so a dead leader is replaced within about that long. Resigns when ``stop`` is
    set. ``cycle``'s failures are logged, never fatal."""
    try:
        while not stop.is_set():
            if await leader.try_lead():
                try:
                    await cycle()
                except Exception:
                    log.exception("%s cycle failed", leader.role)
                wait = interval
            else:
                wait = contend_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    finally:
        await leader.resign()
