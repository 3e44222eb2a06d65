"""One PostgreSQL connection owned by a dedicated event-loop thread, usable from synchronous and async code.

The storage interface's delivery-state calls are synchronous (the delivery engine calls them between awaits, as it
does the embedded store's), while the driver, asyncpg, is asynchronous and bound to the loop that opened the
connection. :class:`PgSession` runs that loop in its own thread: :meth:`PgSession.run` blocks the caller for one
round trip, :meth:`PgSession.arun` awaits it from any other loop. Calls are serialised (an asyncpg connection runs
one statement at a time). A connection that breaks is dropped and the next call opens a new one; the failed call
raises :class:`~collector.store.api.StorageError` (``not_ready``), which callers treat like any storage outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from collector.store.api import StorageError

if TYPE_CHECKING:
    import asyncpg

    from collector.config import PostgresStorageConfig

T = TypeVar("T")

Connector = Callable[[], Awaitable["asyncpg.Connection"]]

__all__ = ["Connector", "PgSession", "settings_connector"]


def settings_connector(settings: PostgresStorageConfig) -> Connector:
    """Connections made from ``storage.postgresql`` settings (redacted one-line errors)."""
    from collector.store.postgres.connection import connect

    async def _connect() -> asyncpg.Connection:
        return await connect(settings)

    return _connect


def _is_connection_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(
        exc,
        asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CannotConnectNowError
        | ConnectionError
        | OSError
        | TimeoutError,
    )


class PgSession:
    """A connection on its own loop thread; ``run``/``arun`` execute ``fn(connection)`` there, one at a time."""

    def __init__(self, connect: Connector, *, name: str = "ccbridge-pg") -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._loop = asyncio.new_event_loop()
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def _call(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise StorageError("not_ready", "the PostgreSQL session is closed")
            if self._conn is None or self._conn.is_closed():
                try:
                    self._conn = await self._connect()
                except Exception as exc:  # connection.connect raises one redacted line
                    raise StorageError("not_ready", str(exc)) from None
            try:
                return await fn(self._conn)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                with contextlib.suppress(Exception):
                    self._conn.terminate()
                self._conn = None
                raise StorageError("not_ready", f"PostgreSQL connection lost: {type(exc).__name__}") from None

    def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` on the session's thread and wait for its result (never from that thread)."""
        return asyncio.run_coroutine_threadsafe(self._call(fn), self._loop).result()

    async def arun(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` on the session's thread, awaiting it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._call(fn), self._loop))

    def drop_connection(self) -> None:
        """Close the connection abruptly (what a crash or a network partition does); the next call reconnects."""

        async def _drop() -> None:
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None

        asyncio.run_coroutine_threadsafe(_drop(), self._loop).result()

    def close(self) -> None:
        if self._closed and not self._thread.is_alive():
            return

        async def _close() -> None:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._conn.close(), 5)
                self._conn = None

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
