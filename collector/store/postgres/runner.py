"""A private event loop in a daemon thread: how the synchronous and asyncio callers of the PostgreSQL backend share
one asyncpg connection (asyncpg is async-only, and an asyncpg connection belongs to the loop that opened it).

The bridge's own loop hands work over with :meth:`LoopThread.submit` (awaitable, never blocks the bridge's loop);
threads without a loop (``asyncio.to_thread`` callers, CLI commands) use :meth:`LoopThread.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """One event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def future(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the private loop and wait for it (from any thread but the private one)."""
        return self.future(coro).result(timeout)

    async def submit(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop; awaitable from another event loop."""
        return await asyncio.wrap_future(self.future(coro))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
