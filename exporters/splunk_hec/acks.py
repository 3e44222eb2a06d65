"""Indexer acknowledgement: one poller per channel asks about every outstanding ``ackId`` in a single request.

A push that got an ``ackId`` calls :meth:`AckPoller.wait`; the poller wakes every ``interval`` seconds while any id
is outstanding, sends ``{"acks": [ids...]}`` once for all of them (so concurrent pushes from every shard share one
poll), and resolves each waiter when its id reads ``true``. Splunk reports an id ``true`` only once (read-once), so
the poller forgets it at that moment. An id still ``false`` after ``timeout`` seconds from its registration resolves
as :attr:`AckState.TIMEOUT`; the caller re-sends the request, which can index the events twice (inherent to HEC
acknowledgement: the first copy may have been indexed after all, or its ``true`` may have been lost in transit).

Poll errors that may pass (timeouts, 5xx, busy) are logged and polling continues until the waiters' own timeouts;
a fatal one (token refused, acknowledgement disabled) resolves every waiter at once as :attr:`AckState.FAILED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class AckState(enum.Enum):
    ACKED = "acked"
    TIMEOUT = "timeout"
    FAILED = "failed"


@dataclass(frozen=True)
class AckResult:
    state: AckState
    reason: str = ""


class AckQueryError(Exception):
    """A poll did not give an answer; ``fatal`` when waiting longer cannot help."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


AckQuery = Callable[[list[int]], Awaitable[dict[int, bool]]]


@dataclass
class _Waiter:
    future: asyncio.Future[AckResult]
    deadline: float


class AckPoller:
    """Waits for acknowledgements of one channel. ``query(ids)`` answers ``{id: acknowledged}`` or raises
    :class:`AckQueryError`."""

    def __init__(self, query: AckQuery, *, interval: float, timeout: float, name: str = "") -> None:
        self.query = query
        self.interval = interval
        self.timeout = timeout
        self.name = name
        self.polls = 0
        self._waiters: dict[int, _Waiter] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    @property
    def outstanding(self) -> list[int]:
        return sorted(self._waiters)

    async def wait(self, ack_id: int) -> AckResult:
        """Until ``ack_id`` is acknowledged, times out, or polling fails fatally."""
        loop = asyncio.get_running_loop()
        previous = self._waiters.get(ack_id)
        if previous is not None and not previous.future.done():
            previous.future.set_result(AckResult(AckState.FAILED, f"ackId {ack_id} was issued again on this channel"))
        waiter = _Waiter(loop.create_future(), loop.time() + self.timeout)
        self._waiters[ack_id] = waiter
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"splunk-acks-{self.name}")
        try:
            return await waiter.future
        finally:
            if self._waiters.get(ack_id) is waiter:
                del self._waiters[ack_id]

    async def close(self) -> None:
        """Stop polling; every waiter resolves as FAILED."""
        self._resolve_all(AckResult(AckState.FAILED, "exporter closed before the acknowledgement arrived"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def _resolve(self, ack_id: int, result: AckResult) -> None:
        waiter = self._waiters.pop(ack_id, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(result)

    def _resolve_all(self, result: AckResult) -> None:
        for ack_id in list(self._waiters):
            self._resolve(ack_id, result)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiters:
            earliest = min(w.deadline for w in self._waiters.values())
            await asyncio.sleep(max(0.0, min(self.interval, earliest - loop.time())))
            ids = sorted(i for i, w in self._waiters.items() if not w.future.done())
            if ids:
                await self._poll(ids)
            now = loop.time()
            for ack_id, waiter in list(self._waiters.items()):
                if now >= waiter.deadline:
                    reason = f"no indexer acknowledgement for ackId {ack_id} within {self.timeout:g}s"
                    self._resolve(ack_id, AckResult(AckState.TIMEOUT, reason))

    async def _poll(self, ids: list[int]) -> None:
        self.polls += 1
        try:
            acks = await self.query(ids)
        except AckQueryError as exc:
            if exc.fatal:
                self._resolve_all(AckResult(AckState.FAILED, exc.reason))
                return
            if time.monotonic() - self._last_warning > 30:
                self._last_warning = time.monotonic()
                log.warning("%s: acknowledgement poll failed, will retry: %s", self.name, exc.reason)
            return
        except Exception:  # a bug in the query must not stop polling (waiters still time out)
            log.exception("%s: acknowledgement poll raised; will retry", self.name)
            return
        for ack_id in ids:
            if acks.get(ack_id) is True:
                self._resolve(ack_id, AckResult(AckState.ACKED))
