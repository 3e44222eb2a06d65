"""A bound on the request bytes one bridge process reads, decodes and stores at once.

A request being processed costs several times its body in memory: the body, the parsed protobuf, the normalized
records and their encoded rows, held until its commit. With many clients sending large batches at once (a fleet
reconnecting after an outage) that is unbounded. Each request therefore takes its size from an
:class:`InflightBudget` and gives it back once it is answered. Over HTTP it takes its declared ``Content-Length`` (or
one read chunk for a chunked body) *before* its body is read, and adds what the body turns out to hold beyond that
(a chunked body, a gunzipped one) as it learns it, without waiting again; so a waiting request holds no more than the
socket buffers of its unread body. Over gRPC the message has already arrived, and its size is taken before decoding.

Requests that do not fit wait their turn, first come first served; one request larger than the whole budget runs
when it is alone, so nothing the body limits accept is refused here. Waiting is backpressure, not failure: the
client's own timeout bounds it (an HTTP request whose client has gone by its turn is dropped unread), and the
records of a request that gave up were never acknowledged.
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

    __slots__ = ("_budget", "size")

    def __init__(self, budget: InflightBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def grow_to(self, size: int) -> None:
        """Hold ``size`` bytes in all, if that is more than now, without waiting: the request is already admitted
        and what it turned out to need is counted, so later requests wait for it."""
        extra = size - self.size
        if extra > 0:
            self.size = size
            self._budget._grow(extra)


class InflightBudget:
    """Bytes in flight at most ``limit`` (0: no bound); ``on_change(in_use)`` hears every change of the bytes held,
    ``on_wait()`` every request that has to wait."""

    def __init__(
        self,
        limit: int,
        on_change: Callable[[int], None] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.limit = limit
        self.in_use = 0
        self.waits = 0
        self._on_change = on_change
        self._on_wait = on_wait
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for room now."""
        return sum(1 for _, fut in self._waiters if not fut.done())

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[Held]:
        """Hold ``size`` bytes of the budget (and whatever :meth:`Held.grow_to` adds) for the ``async with``."""
        if self.limit <= 0:
            yield Held(self, size)
            return
        await self._acquire(size)
        held = Held(self, size)
        try:
            yield held
        finally:
            self._release(held.size)

    def _grow(self, extra: int) -> None:
        if self.limit > 0:
            self.in_use += extra
            self._notify(self._on_change, self.in_use)

    def _fits(self, size: int) -> bool:
        return self.in_use == 0 or self.in_use + size <= self.limit

    def _notify(self, callback: Callable[..., None] | None, *args: int) -> None:
        """Tell a listener (a metric); its failure (a metrics file on a full disk) must not cost a request."""
        if callback is not None:
            try:
                callback(*args)
            except Exception:
                log.debug("in-flight budget listener failed", exc_info=True)

    async def _acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self.in_use += size
            self._notify(self._on_change, self.in_use)
            return
        self.waits += 1
        self._notify(self._on_wait)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(size)  # room was granted just as the request went away
            else:
                self._wake()  # it may have been first in line
                self._notify(self._on_change, self.in_use)
            raise

    def _release(self, size: int) -> None:
        self.in_use -= size
        self._wake()
        self._notify(self._on_change, self.in_use)

    def _wake(self) -> None:
        while self._waiters:
            size, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if not self._fits(size):
                return
            self._waiters.popleft()
            self.in_use += size
            fut.set_result(None)
