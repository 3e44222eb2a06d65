"""A bound on the request bytes one bridge process reads, decodes and stores at once.

A request being processed costs several times its body in memory: the body, the parsed protobuf, the normalized
records and their encoded rows, held until its commit. With many clients sending large batches at once (a fleet
reconnecting after an outage) that is unbounded. Each request therefore takes its size from an
:class:`InflightBudget` and gives it back once it is answered.

Over HTTP the budget is taken **as bytes arrive**, never from the declared ``Content-Length``: a request is admitted
with at most one read chunk, and :meth:`Held.take` adds each chunk as it is read (a client that declares 16 MiB
and sends a byte a second holds a few bytes, not the budget). What gunzip adds is counted by :meth:`Held.grow_to`
without waiting. Over gRPC the message has already arrived, and its size is taken before decoding.

**Fair share.** Each request has an *owner*: its authenticated identity, or its connection when auth is off. An
owner is admitted while it holds less than ``share`` of the budget, and a request's body may grow past its owner's
share only while nobody is waiting for room; otherwise it waits (its socket is not read, so TCP holds the client
back) until room is given back. One connection or identity therefore cannot take more than its share from other
clients. When everyone holding bytes is waiting to grow, the oldest grows anyway, so waiting never deadlocks.

Requests that do not fit wait their turn, first come first served; one request larger than the whole budget runs
when it is alone, so nothing the body limits accept is refused here. Waiting is backpressure, not failure: the
receivers' deadlines bound it (``408``/``DEADLINE_EXCEEDED``, releasing what was held), and the records of a request
that gave up were never acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)


class Held:
    """What one request holds of an :class:`InflightBudget`."""

    __slots__ = ("_budget", "owner", "size")

    def __init__(self, budget: InflightBudget, size: int, owner: object = None) -> None:
        self._budget = budget
        self.size = size
        self.owner = owner

    def grow_to(self, size: int) -> None:
        """Hold ``size`` bytes in all, if that is more than now, without waiting: the request is already admitted
        and what it turned out to need is counted, so later requests wait for it."""
        extra = size - self.size
        if extra > 0:
            self._budget._add(self, extra)

    async def take(self, size: int) -> None:
        """Hold ``size`` bytes in all (bytes that arrived), waiting for room when the request is past its owner's
        share while others wait, or when the budget is full (see the module docstring)."""
        extra = size - self.size
        if extra > 0:
            await self._budget._take(self, extra)


class InflightBudget:
    """Bytes in flight at most ``limit`` (0: no bound), at most ``share`` of it per owner while others wait;
    ``on_change(in_use)`` hears every change of the bytes held, ``on_wait()`` every request that has to wait."""

    def __init__(
        self,
        limit: int,
        on_change: Callable[[int], None] | None = None,
        on_wait: Callable[[], None] | None = None,
        share: float = 1.0,
    ) -> None:
        self.limit = limit
        self.share_limit = max(1, int(limit * share)) if 0 < share < 1 else limit
        self.in_use = 0
        self.waits = 0
        self._on_change = on_change
        self._on_wait = on_wait
        self._waiters: deque[tuple[int, object, asyncio.Future[None]]] = deque()
        self._growers: deque[tuple[Held, int, asyncio.Future[None]]] = deque()
        self._owners: dict[object, int] = {}

    @property
    def waiting(self) -> int:
        """Requests waiting for room now (to be admitted or to grow)."""
        return sum(1 for _, _, fut in self._waiters if not fut.done()) + sum(
            1 for _, _, fut in self._growers if not fut.done()
        )

    def held_by(self, owner: object) -> int:
        """Bytes ``owner`` holds now."""
        return self._owners.get(owner, 0)

    @contextlib.asynccontextmanager
    async def hold(self, size: int, owner: object = None) -> AsyncIterator[Held]:
        """Hold ``size`` bytes of the budget (and whatever :meth:`Held.grow_to`/:meth:`Held.take` add) for the
        ``async with``."""
        if self.limit <= 0:
            yield Held(self, size, owner)
            return
        await self._acquire(size, owner)
        held = Held(self, size, owner)
        try:
            yield held
        finally:
            self._release(held)

    def _count(self, owner: object, delta: int) -> None:
        n = self._owners.get(owner, 0) + delta
        if n > 0:
            self._owners[owner] = n
        else:
            self._owners.pop(owner, None)

    def _add(self, held: Held, extra: int) -> None:
        held.size += extra
        if self.limit > 0:
            self.in_use += extra
            self._count(held.owner, extra)
            self._notify(self._on_change, self.in_use)

    def _fits(self, size: int, owner: object = None) -> bool:
        return self._room(size) and self._within_share(size, owner)

    def _room(self, size: int) -> bool:
        return self.in_use == 0 or self.in_use + size <= self.limit

    def _within_share(self, size: int, owner: object) -> bool:
        own = self._owners.get(owner, 0)
        return own == 0 or own + size <= self.share_limit

    def _may_grow(self, held: Held, extra: int) -> bool:
        if self.in_use == self._owners.get(held.owner, 0):
            return True  # alone: nobody to wait for
        if self.in_use + extra > self.limit:
            return False
        if self._owners.get(held.owner, 0) + extra > self.share_limit:
            return not any(not fut.done() for _, _, fut in self._waiters)  # past its share: others first
        return True

    def _notify(self, callback: Callable[..., None] | None, *args: int) -> None:
        """Tell a listener (a metric); its failure (a metrics file on a full disk) must not cost a request."""
        if callback is not None:
            try:
                callback(*args)
            except Exception:
                log.debug("in-flight budget listener failed", exc_info=True)

    async def _acquire(self, size: int, owner: object) -> None:
        if not self._waiters and self._fits(size, owner):
            self.in_use += size
            self._count(owner, size)
            self._notify(self._on_change, self.in_use)
            return
        self.waits += 1
        self._notify(self._on_wait)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, owner, fut))
        self._wake()  # those ahead may only wait for their owner's share: this one may fit now
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.in_use -= size  # room was granted just as the request went away
                self._count(owner, -size)
            self._wake()  # it may have been first in line
            self._notify(self._on_change, self.in_use)
            raise

    async def _take(self, held: Held, extra: int) -> None:
        if self.limit <= 0 or (not self._growers and self._may_grow(held, extra)):
            self._add(held, extra)
            return
        self.waits += 1
        self._notify(self._on_wait)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._growers.append((held, extra, fut))
        self._wake()  # everyone may be waiting now: the oldest grows
        try:
            await fut
        except asyncio.CancelledError:
            self._wake()  # if it was granted just as the request went away, _release gives it back with the rest
            raise

    def _release(self, held: Held) -> None:
        self.in_use -= held.size
        self._count(held.owner, -held.size)
        held.size = 0
        self._wake()
        self._notify(self._on_change, self.in_use)

    def _wake(self) -> None:
        # first come, first served for room; a request waiting only because its owner holds its share is passed
        # over (it does not hold up other owners) and keeps its place
        for entry in list(self._waiters):
            size, owner, fut = entry
            if fut.done():
                self._waiters.remove(entry)
                continue
            if not self._room(size):
                break
            if not self._within_share(size, owner):
                continue
            self._waiters.remove(entry)
            self.in_use += size
            self._count(owner, size)
            fut.set_result(None)
        progressed = True
        while progressed:
            progressed = False
            for entry in list(self._growers):
                held, extra, fut = entry
                if fut.done():
                    self._growers.remove(entry)
                    continue
                if self._may_grow(held, extra):
                    self._growers.remove(entry)
                    self._add(held, extra)
                    fut.set_result(None)
                    progressed = True
        live = [e for e in self._growers if not e[2].done()]
        if live and self.in_use == sum(h.size for h, _, _ in live):
            held, extra, fut = live[0]  # everyone holding bytes waits to grow: the oldest goes on
            self._growers.remove(live[0])
            self._add(held, extra)
            fut.set_result(None)
