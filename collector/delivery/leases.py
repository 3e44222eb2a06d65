"""Which (destination, shard) pairs this process delivers: the engine's side of the storage's delivery assignment.

The engine asks its :class:`~collector.store.api.DeliveryAssignment` which pairs it may deliver and runs one
:class:`~collector.delivery.engine.DestinationWorker` per pair.

* Embedded store (:class:`StaticAssignment`): a fixed set decided at start -- the worker's own shard, and for the
  primary worker the shards of workers that no longer exist (``Service.shards_to_deliver``). The single-writer lock
  on the data directory already guarantees nobody else delivers them; nothing is renewed.
* PostgreSQL (:class:`~collector.store.postgres.delivery.PgLeaseManager`): the pairs whose lease this replica
  holds. :func:`follow_assignment` renews them every ``interval`` and tells the engine to start workers for pairs it
  got, stop those it lost, and stop-then-release those it hands over to another replica. When the assignment cannot
  be renewed (database unreachable) for longer than ``lease_ttl``, the leases have lapsed at the database and may be
  someone else's: every worker stops until the next successful renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from collector.delivery.retry import interruptible_sleep
from collector.store.api import AssignmentChange, DeliveryAssignment, DeliveryStateStore, StoreReader

log = logging.getLogger(__name__)

__all__ = ["StaticAssignment", "follow_assignment"]

Pair = tuple[str, int]


class StaticAssignment:
    """Every destination on a fixed list of shards (those that exist when asked): the embedded store."""

    dynamic = False
    interval = 0.0

    def __init__(self, store: StoreReader, shards: Sequence[int]) -> None:
        self.store = store
        self.shards = list(shards)

    async def refresh(self, destinations: Sequence[str]) -> AssignmentChange:
        held = frozenset((d, s) for s in self.shards if self.store.has_shard(s) for d in destinations)
        return AssignmentChange(held=held, acquired=held)

    async def release(self, pairs: Sequence[Pair]) -> None:
        return None

    async def close(self) -> None:
        return None

    def delivery_state(self, shard: int) -> DeliveryStateStore:
        return self.store.delivery_state(shard)


async def follow_assignment(
    assignment: DeliveryAssignment,
    destinations: Sequence[str],
    stop: asyncio.Event,
    running: Callable[[], set[Pair]],
    start_worker: Callable[[Pair], None],
    stop_worker: Callable[[Pair], Awaitable[None]],
    *,
    ttl: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Keep the running workers equal to the pairs held, renewing every ``assignment.interval`` until ``stop``."""
    last_ok = clock()
    while not stop.is_set():
        try:
            change = await assignment.refresh(destinations)
        except Exception as exc:
            if clock() - last_ok > ttl and running():
                log.warning(
                    "cannot renew delivery leases for %.0fs (%s); stopping delivery until the database is back",
                    clock() - last_ok,
                    exc,
                )
                for pair in sorted(running()):
                    await stop_worker(pair)
            else:
                log.warning("cannot renew delivery leases: %s", exc)
        else:
            last_ok = clock()
            try:
                await apply_change(assignment, change, running, start_worker, stop_worker)
            except Exception as exc:  # e.g. the database went away while a worker read its cursor: next round
                log.warning("cannot start or stop delivery workers: %s", exc)
        await interruptible_sleep(assignment.interval, stop)


async def apply_change(
    assignment: DeliveryAssignment,
    change: AssignmentChange,
    running: Callable[[], set[Pair]],
    start_worker: Callable[[Pair], None],
    stop_worker: Callable[[Pair], Awaitable[None]],
) -> None:
    """Stop workers of lost pairs, stop and hand over shed ones, start workers for the rest of the held pairs."""
    current = running()
    for pair in sorted(current - change.held):
        log.warning("delivery of %s for shard %d was taken over by another replica; stopping it", *pair)
        await stop_worker(pair)
    for pair in sorted(current & change.held & change.lost):
        # lapsed and claimed again (a new epoch): another replica may have moved the cursor in between, so the
        # worker starts again from the saved cursor
        log.warning("delivery lease of %s for shard %d lapsed and was claimed again; restarting it", *pair)
        await stop_worker(pair)
    if change.shed:
        for pair in sorted(change.shed & running()):
            await stop_worker(pair)
        await assignment.release(sorted(change.shed))
        log.info("handed over %d delivery lease(s) to other replicas", len(change.shed))
    started = sorted(change.held - change.shed - running())
    for pair in started:
        start_worker(pair)
    if started:
        log.info("delivering %s", ", ".join(f"{d} (shard {s})" for d, s in started))
