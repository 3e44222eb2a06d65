"""The bridge's PostgreSQL schema: versioned migrations, applied under an advisory lock, and their status.

Everything lives in one schema (``storage.postgresql.schema``, default ``ccbridge``), owned by the bridge. A bridge
applies pending migrations at start (:func:`migrate`); ``ccbridge db migrate`` does the same on demand and
``ccbridge db status`` reports :func:`schema_status`. N replicas starting together migrate once: each takes a
transaction-scoped advisory lock (:func:`lock_key`, one per schema name) before it reads the version, so the
others wait, then find nothing pending. All pending migrations apply in one transaction (PostgreSQL DDL is
transactional): a failure leaves the schema as it was. A schema newer than this code knows is refused
(:class:`SchemaTooNew`), naming both versions, so an older bridge never writes into tables it does not understand.

Design for 100 M records (docs/schema.md, "PostgreSQL schema"):

* Every row carries its writer (``writer_id``: one per replica x worker, table ``writers``) and a per-writer
  sequence ``writer_seq`` (``UNIQUE (writer_id, writer_seq)``). One writer commits its batches one after another,
  so within a writer the sequence is in commit order: a destination's progress is a cursor per (destination,
  stream, writer) in ``delivery_progress``, and that row is what a replica leases (owner, expiry) to deliver. When
  a replica dies its leases expire and another replica continues from the cursor. A global sequence would not do:
  concurrent writers commit out of sequence order, and a tailer would skip rows that commit late.
* Records are deduplicated cluster-wide by ``PRIMARY KEY (time_ms, id)`` (the embedded store's key).
* Each writer has its own tamper-evidence chain (``chain`` column: the link after this record); its head is in
  ``chain_heads``; the anchors retention leaves behind are in ``chain_anchors``.
* Retention deletes, per writer, the oldest prefix of the writer's sequence in batches driven by the
  ``(writer_id, writer_seq)`` index (:mod:`collector.store.postgres.retention`), so a chain stays one unbroken run
  from its anchor. Time partitions would make expiry a ``DROP TABLE``, but a unique key on a partitioned table must
  contain the partition key: partitions on event time cannot expire in chain order (late events), partitions on
  receive time cannot hold the cluster-wide ``(time_ms, id)`` key. Measured, the batched delete is cheap at this
  size (docs/performance.md, "PostgreSQL retention").

Statements use ``{schema}`` for the quoted schema name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "MIGRATIONS",
    "Migration",
    "MigrationResult",
    "SchemaStatus",
    "SchemaTooNew",
    "latest_version",
    "lock_key",
    "migrate",
    "quote_ident",
    "schema_status",
]

_V1 = (
    """CREATE TABLE {schema}.meta (
        key        text PRIMARY KEY,
        value      text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    # one row per bridge process that ever wrote: replica (host/pod name) x worker index
    """CREATE TABLE {schema}.writers (
        writer_id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name         text NOT NULL UNIQUE,
        host         text NOT NULL,
        worker       integer NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE {schema}.records (
        id          text   NOT NULL,
        time_ms     bigint NOT NULL,
        kind        text   NOT NULL,
        "user"      text,
        user_id     text,
        session     text,
        received_ms bigint NOT NULL,
        writer_id   integer NOT NULL,
        writer_seq  bigint NOT NULL,
        body        bytea  NOT NULL,
        chain       bytea,
        PRIMARY KEY (time_ms, id),
        UNIQUE (writer_id, writer_seq)
    )""",
    "CREATE INDEX records_session ON {schema}.records (session, time_ms)",
    'CREATE INDEX records_user ON {schema}.records ("user", time_ms)',
    "CREATE INDEX records_kind ON {schema}.records (kind, time_ms)",
    """CREATE TABLE {schema}.metric_points (
        time_ms    bigint NOT NULL,
        key        text   NOT NULL,
        name       text   NOT NULL,
        writer_id  integer NOT NULL,
        writer_seq bigint NOT NULL,
        body       bytea  NOT NULL,
        PRIMARY KEY (time_ms, key),
        UNIQUE (writer_id, writer_seq)
    )""",
    """CREATE TABLE {schema}.spans (
        time_ms    bigint NOT NULL,
        trace_id   text   NOT NULL,
        span_id    text   NOT NULL,
        name       text   NOT NULL,
        writer_id  integer NOT NULL,
        writer_seq bigint NOT NULL,
        body       bytea  NOT NULL,
        PRIMARY KEY (trace_id, span_id),
        UNIQUE (writer_id, writer_seq)
    )""",
    "CREATE INDEX spans_time ON {schema}.spans (time_ms)",
    # the next writer_seq per writer and stream, taken in the writer's commit transaction
    """CREATE TABLE {schema}.writer_sequences (
        writer_id integer NOT NULL REFERENCES {schema}.writers (writer_id),
        stream    text    NOT NULL CHECK (stream IN ('records', 'metric_points', 'spans')),
        last_seq  bigint  NOT NULL DEFAULT 0,
        PRIMARY KEY (writer_id, stream)
    )""",
    """CREATE TABLE {schema}.chain_heads (
        writer_id  integer PRIMARY KEY REFERENCES {schema}.writers (writer_id),
        writer_seq bigint      NOT NULL,
        head       bytea       NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    # where a writer's chain continues after retention removed the records before it
    """CREATE TABLE {schema}.chain_anchors (
        writer_id  integer     NOT NULL REFERENCES {schema}.writers (writer_id),
        writer_seq bigint      NOT NULL,
        link       bytea       NOT NULL,
        reason     text        NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (writer_id, writer_seq)
    )""",
    # a destination's progress through one writer's stream, and who may deliver it until when
    """CREATE TABLE {schema}.delivery_progress (
        destination      text    NOT NULL,
        stream           text    NOT NULL CHECK (stream IN ('records', 'metric_points', 'spans')),
        writer_id        integer NOT NULL REFERENCES {schema}.writers (writer_id),
        delivered_seq    bigint  NOT NULL DEFAULT 0,
        lease_owner      text,
        lease_expires_at timestamptz,
        updated_at       timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (destination, stream, writer_id),
        CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
    )""",
    "CREATE INDEX delivery_progress_lease ON {schema}.delivery_progress (lease_expires_at)",
    """CREATE TABLE {schema}.dead_letters (
        dead_letter_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        destination    text    NOT NULL,
        stream         text    NOT NULL,
        batch_id       text    NOT NULL,
        reason         text    NOT NULL,
        status         integer,
        attempts       integer NOT NULL DEFAULT 1,
        created_ms     bigint  NOT NULL,
        record_time_ms bigint,
        record_id      text,
        body           bytea   NOT NULL,
        replayed_ms    bigint
    )""",
    "CREATE INDEX dead_letters_destination ON {schema}.dead_letters (destination, created_ms)",
    "CREATE INDEX dead_letters_batch ON {schema}.dead_letters (batch_id)",
    "CREATE INDEX dead_letters_created ON {schema}.dead_letters (created_ms)",
    # usage history from the Claude Code Analytics API (the embedded store's usage.sqlite3, cluster-wide)
    """CREATE TABLE {schema}.usage_daily (
        date              date    NOT NULL,
        actor_type        text    NOT NULL,
        actor_id          text    NOT NULL,
        terminal_type     text    NOT NULL,
        customer_type     text    NOT NULL,
        subscription_type text,
        organization_id   text,
        num_sessions      integer NOT NULL,
        lines_added       integer NOT NULL,
        lines_removed     integer NOT NULL,
        commits           integer NOT NULL,
        pull_requests     integer NOT NULL,
        edit_accepted     integer NOT NULL,
        edit_rejected     integer NOT NULL,
        cost_cents        numeric NOT NULL,
        fetched_at        timestamptz NOT NULL,
        raw               jsonb   NOT NULL,
        PRIMARY KEY (date, actor_type, actor_id, terminal_type, customer_type)
    )""",
    "CREATE INDEX usage_daily_actor ON {schema}.usage_daily (actor_type, actor_id, date)",
    """CREATE TABLE {schema}.usage_sync_state (
        date             date        PRIMARY KEY,
        fetched_at       timestamptz NOT NULL,
        first_fetched_at timestamptz NOT NULL,
        final            boolean     NOT NULL,
        rows             integer     NOT NULL,
        pages            integer     NOT NULL
    )""",
    """CREATE TABLE {schema}.identity_map (
        kind       text        NOT NULL,
        value      text        NOT NULL,
        email      text        NOT NULL,
        first_seen timestamptz NOT NULL,
        last_seen  timestamptz NOT NULL,
        PRIMARY KEY (kind, value)
    )""",
)


@dataclass(frozen=True)
class Migration:
    """One schema version: the statements that take the schema from ``version - 1`` to ``version``."""

    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """sha256 of the statements: an applied migration edited afterwards shows in :func:`schema_status`."""
        h = hashlib.sha256()
        for s in self.statements:
            h.update(s.encode())
            h.update(b"\x00")
        return h.hexdigest()


MIGRATIONS: tuple[Migration, ...] = (Migration(1, "initial schema", _V1),)

_BOOKKEEPING = """CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text        NOT NULL DEFAULT current_user
)"""


class SchemaTooNew(RuntimeError):
    """The database's schema is newer than this code knows; it must not write there."""

    def __init__(self, schema: str, current: int, latest: int) -> None:
        super().__init__(
            f"PostgreSQL schema {schema!r} is at version {current}, newer than this ccbridge knows (version {latest}); "
            "upgrade ccbridge to a release that knows it, or use another storage.postgresql.schema"
        )
        self.schema = schema
        self.current = current
        self.latest = latest


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    applied_at: datetime
    checksum_matches: bool | None  # None: a version this code does not know


@dataclass(frozen=True)
class SchemaStatus:
    """What ``ccbridge db status`` shows."""

    schema: str
    exists: bool
    current: int  # 0: no migration applied (or no schema yet)
    latest: int
    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]

    @property
    def too_new(self) -> bool:
        return self.current > self.latest

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest

    @property
    def modified(self) -> tuple[int, ...]:
        """Versions whose statements changed after they were applied (a packaging error, to be investigated)."""
        return tuple(a.version for a in self.applied if a.checksum_matches is False)


@dataclass(frozen=True)
class MigrationResult:
    schema: str
    before: int
    after: int
    applied: tuple[int, ...] = field(default_factory=tuple)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str) -> int:
    """The advisory lock (a signed 64-bit key) that serialises migrations of ``schema`` in one database."""
    digest = hashlib.sha256(f"ccbridge.migrate\x1f{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max((m.version for m in migrations), default=0)


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... without gaps; got {versions}")


async def _schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema))


async def _bookkeeping_exists(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.schema_migrations"))


async def _applied(
    conn: asyncpg.Connection, schema: str, migrations: Sequence[Migration]
) -> tuple[AppliedMigration, ...]:
    known = {m.version: m for m in migrations}
    rows = await conn.fetch(
        f"SELECT version, name, checksum, applied_at FROM {quote_ident(schema)}.schema_migrations ORDER BY version"
    )
    return tuple(
        AppliedMigration(
            version=r["version"],
            name=r["name"],
            applied_at=r["applied_at"],
            checksum_matches=(known[r["version"]].checksum == r["checksum"]) if r["version"] in known else None,
        )
        for r in rows
    )


async def schema_status(
    conn: asyncpg.Connection, schema: str, migrations: Sequence[Migration] = MIGRATIONS
) -> SchemaStatus:
    """The schema's version, what was applied when, and what is pending (read-only; takes no lock)."""
    _check_sequence(migrations)
    exists = await _schema_exists(conn, schema)
    applied = await _applied(conn, schema, migrations) if exists and await _bookkeeping_exists(conn, schema) else ()
    current = max((a.version for a in applied), default=0)
    return SchemaStatus(
        schema=schema,
        exists=exists,
        current=current,
        latest=latest_version(migrations),
        applied=applied,
        pending=tuple(m for m in migrations if m.version > current),
    )


def check_compatible(status: SchemaStatus) -> None:
    """Raise :class:`SchemaTooNew` when the database is ahead of this code."""
    if status.too_new:
        raise SchemaTooNew(status.schema, status.current, status.latest)


async def migrate(
    conn: asyncpg.Connection, schema: str, migrations: Sequence[Migration] = MIGRATIONS
) -> MigrationResult:
    """Bring ``schema`` to the latest version, once across any number of concurrent callers.

    Takes the schema's advisory lock for the length of one transaction, creates the schema and the bookkeeping
    table when missing, refuses a newer schema (:class:`SchemaTooNew`), applies what is pending and records each
    version with its checksum, and sets ``meta.schema_version``. Waiting callers find nothing pending.
    """
    _check_sequence(migrations)
    latest = latest_version(migrations)
    q = quote_ident(schema)
    async with conn.transaction():
        # A migration may rebuild an index on a large table: no statement_timeout for it, and replicas wait for it.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        # CREATE SCHEMA needs CREATE on the database even with IF NOT EXISTS; a DBA may have created the schema for
        # a role that lacks it, so only create what is missing.
        if not await _schema_exists(conn, schema):
            await conn.execute(f"CREATE SCHEMA {q}")
        await conn.execute(_BOOKKEEPING.format(schema=q))
        current = int(await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {q}.schema_migrations"))
        if current > latest:
            raise SchemaTooNew(schema, current, latest)
        applied: list[int] = []
        for m in migrations:
            if m.version <= current:
                continue
            for statement in m.statements:
                await conn.execute(statement.format(schema=q))
            await conn.execute(
                f"INSERT INTO {q}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.checksum,
            )
            applied.append(m.version)
        if applied:
            await conn.execute(
                f"INSERT INTO {q}.meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                str(latest),
            )
    return MigrationResult(schema=schema, before=current, after=max(current, latest), applied=tuple(applied))
