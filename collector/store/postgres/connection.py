"""Connecting to the PostgreSQL store from ``storage.postgresql`` settings, and what ``ccbridge db`` runs.

Every error that leaves this module is one line and shows the DSN redacted; the driver's own message is kept (it
says what went wrong: refused, timeout, authentication) with the password scrubbed out of it. ``wait_at_start``
turns "unreachable" into a bounded wait with a log line per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from collector.configtypes import redact_dsn, scrub_secret_text
from collector.store.postgres.migrations import (
    MigrationResult,
    SchemaStatus,
    check_compatible,
    migrate,
    schema_status,
)

if TYPE_CHECKING:
    import asyncpg

    from collector.config import PostgresStorageConfig

log = logging.getLogger(__name__)

__all__ = [
    "APPLICATION_NAME",
    "PostgresUnavailableError",
    "connect",
    "connect_waiting",
    "describe_status",
    "format_status",
    "prepare_schema",
]

APPLICATION_NAME = "ccbridge"
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL cannot be reached or refuses us; the message is one line with the DSN redacted."""


def _driver() -> Any:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - depends on the installation
        raise PostgresUnavailableError(
            "storage.backend: postgresql needs the asyncpg driver: pip install 'ccbridge[postgresql]'"
        ) from None
    return asyncpg


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException, dsn: str) -> str:
    timed_out = isinstance(exc, asyncio.TimeoutError | TimeoutError)
    reason = "timed out" if timed_out else (str(exc) or type(exc).__name__)
    return _one_line(scrub_secret_text(reason, dsn))


async def connect(settings: PostgresStorageConfig) -> asyncpg.Connection:
    """One connection with the settings' connect timeout, statement timeout and application name."""
    driver = _driver()
    dsn = settings.dsn.get()
    try:
        return await driver.connect(
            dsn,
            timeout=float(settings.connect_timeout),
            server_settings={
                "application_name": APPLICATION_NAME,
                "statement_timeout": str(round(float(settings.statement_timeout) * 1000)),
            },
        )
    except (TimeoutError, OSError, driver.PostgresError, driver.InterfaceError, ValueError) as exc:
        raise PostgresUnavailableError(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {_describe(exc, dsn)}"
        ) from None


async def connect_waiting(
    settings: PostgresStorageConfig,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> asyncpg.Connection:
    """:func:`connect`, retried with capped backoff for up to ``wait_at_start`` (``0``: one attempt)."""
    deadline = clock() + float(settings.wait_at_start)
    delay = RETRY_INITIAL_S
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect(settings)
        except PostgresUnavailableError as exc:
            left = deadline - clock()
            if left <= 0:
                if attempt > 1:
                    raise PostgresUnavailableError(
                        f"{exc} (gave up after {attempt} attempts over storage.postgresql.wait_at_start)"
                    ) from None
                raise
            pause = min(delay, left)
            log.warning("%s; attempt %d, retrying in %.1fs (waiting up to %.0fs more)", exc, attempt, pause, left)
            await sleep(pause)
            delay = min(delay * 2, RETRY_MAX_S)


async def prepare_schema(settings: PostgresStorageConfig) -> MigrationResult:
    """Connect (waiting if configured) and bring the schema to this code's version: what a bridge does at start
    and ``ccbridge db migrate`` does on demand. Refuses a newer schema (:class:`SchemaTooNew`)."""
    conn = await connect_waiting(settings)
    try:
        result = await migrate(conn, settings.schema)
    finally:
        await conn.close()
    if result.applied:
        log.info("PostgreSQL schema %r migrated from version %d to %d", settings.schema, result.before, result.after)
    return result


async def describe_status(settings: PostgresStorageConfig, *, require_compatible: bool = False) -> SchemaStatus:
    """The schema's status (``ccbridge db status``); with ``require_compatible``, refuse a newer schema."""
    conn = await connect(settings)
    try:
        status = await schema_status(conn, settings.schema)
    finally:
        await conn.close()
    if require_compatible:
        check_compatible(status)
    return status


def format_status(status: SchemaStatus) -> str:
    """Human-readable status, one fact per line."""
    if not status.exists:
        head = f"schema {status.schema}: does not exist yet (this ccbridge knows version {status.latest})"
    elif status.too_new:
        head = (
            f"schema {status.schema}: version {status.current}, NEWER than this ccbridge knows "
            f"(version {status.latest}); this ccbridge refuses to use it"
        )
    elif status.up_to_date:
        head = f"schema {status.schema}: version {status.current}, up to date"
    else:
        head = (
            f"schema {status.schema}: version {status.current}, {len(status.pending)} pending (latest {status.latest})"
        )
    lines = [head]
    for a in status.applied:
        note = {True: "", False: "  MODIFIED since applied", None: "  (unknown to this ccbridge)"}[a.checksum_matches]
        lines.append(f"  applied  {a.version:>4}  {a.applied_at.isoformat(timespec='seconds')}  {a.name}{note}")
    lines.extend(f"  pending  {m.version:>4}  {m.name}" for m in status.pending)
    return "\n".join(lines)
