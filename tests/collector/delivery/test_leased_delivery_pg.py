"""Two delivery engines ("replicas") on one real PostgreSQL: one delivers each (destination, writer); when one dies
without releasing its leases, the other takes over after the TTL and continues from the saved cursors.

The records are inserted with SQL into the schema the migrations create, and read back through a minimal
:class:`~collector.store.api.ShardLog` over the same tables (the backend's own reader is built separately)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from collector.delivery.api import DeliveryRecord, Exporter, Payload
from collector.delivery.engine import DeliveryEngine
from collector.delivery.outcome import Outcome, Success
from collector.delivery.settings import BatchSettings, DestinationSettings
from collector.store.postgres.delivery import PgLeaseManager
from collector.store.postgres.migrations import migrate, quote_ident
from collector.store.postgres.session import PgSession
from collector.telemetry.selfmetrics import SelfMetrics
from tests.pg_support import PostgresTarget

T = TypeVar("T")
TTL = 1.0


class Destination:
    """What a destination received, from any replica."""

    def __init__(self) -> None:
        self.got: list[str] = []


class Collecting(Exporter):
    type_name = "collecting"
    config_class = DestinationSettings

    def __init__(self, dest: Destination) -> None:
        super().__init__("hec", DestinationSettings(batch=BatchSettings(max_records=10, timeout=0.01)))  # type: ignore[arg-type]
        self.dest = dest

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(list(records), b"")]

    async def push(self, payload: Payload) -> Outcome:
        self.dest.got += [r.id for r in payload.records]
        return Success()


class PgTestShardLog:
    """Reads of one writer's records by ``writer_seq`` (only what the engine's worker asks)."""

    def __init__(self, session: PgSession, schema: str, writer_id: int) -> None:
        self.session, self.q, self.w = session, quote_ident(schema), writer_id

    def close(self) -> None:
        pass

    def read_after(
        self, seq: int, max_records: int, max_bytes: int, make: Callable[[int, str, bytes, int], T]
    ) -> tuple[list[T], int]:
        rows = self.session.run(
            lambda c: c.fetch(
                f"SELECT writer_seq, id, body, time_ms, received_ms FROM {self.q}.records WHERE writer_id = $1 "
                "AND writer_seq > $2 ORDER BY writer_seq LIMIT $3",
                self.w,
                seq,
                max_records,
            )
        )
        return [make(r[0], r[1], bytes(r[2]), r[3]) for r in rows], (rows[0][4] if rows else 0)

    def last_seq(self) -> int:
        return int(
            self.session.run(
                lambda c: c.fetchval(
                    f"SELECT coalesce(max(writer_seq), 0) FROM {self.q}.records WHERE writer_id = $1", self.w
                )
            )
        )

    def oldest_received_after(self, seq: int) -> int | None:
        return self.session.run(
            lambda c: c.fetchval(
                f"SELECT min(received_ms) FROM {self.q}.records WHERE writer_id = $1 AND writer_seq > $2", self.w, seq
            )
        )

    def average_size(self, sample: int = 200) -> float:
        return 100.0


class PgTestReader:
    def __init__(self, session: PgSession, schema: str) -> None:
        self.session, self.schema = session, schema

    def has_shard(self, shard: int) -> bool:
        return True

    def shard_log(self, shard: int) -> PgTestShardLog:
        return PgTestShardLog(self.session, self.schema, shard)


def _session(dsn: str) -> PgSession:
    async def _connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return PgSession(_connect)


async def _insert(conn: asyncpg.Connection, schema: str, writer_id: int, seqs: range) -> None:
    now = int(time.time() * 1000)
    await conn.executemany(
        f"INSERT INTO {quote_ident(schema)}.records (id, time_ms, kind, received_ms, writer_id, writer_seq, body) "
        "VALUES ($1, $2, 'prompt', $3, $4, $5, $6)",
        [(f"w{writer_id}-{s}", now + s, now, writer_id, s, orjson.dumps({"id": f"w{writer_id}-{s}"})) for s in seqs],
    )


@pytest.fixture
async def db(postgres: PostgresTarget, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres.dsn)
    await migrate(conn, pg_schema)
    await conn.execute(
        f"INSERT INTO {quote_ident(pg_schema)}.writers (name, host, worker) VALUES ('a', 'a', 0), ('b', 'b', 0)"
    )
    yield conn
    await conn.close()


class Replica:
    def __init__(self, dsn: str, schema: str, dest: Destination, name: str) -> None:
        self.session = _session(dsn)
        self.metrics = SelfMetrics(CollectorRegistry())
        self.leases = PgLeaseManager(self.session, schema, ttl=TTL, owner=name, metrics=self.metrics)
        self.engine = DeliveryEngine(
            "/nonexistent",
            [],
            [Collecting(dest)],
            self.metrics,
            store=PgTestReader(self.session, schema),  # type: ignore[arg-type]
            assignment=self.leases,
            lease_ttl=TTL,
        )

    async def kill(self) -> None:
        """Die without releasing anything: every task cancelled, the connection gone."""
        tasks: list[asyncio.Task[Any]] = list(self.engine._tasks) + [t for _, t, _ in self.engine._running.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.session.close()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.engine.stop(5)
        self.session.close()


async def _until(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_the_survivor_takes_over_after_the_ttl_and_continues_from_the_cursor(
    postgres: PostgresTarget, pg_schema: str, db: asyncpg.Connection
) -> None:
    dest = Destination()
    await _insert(db, pg_schema, 1, range(1, 31))
    await _insert(db, pg_schema, 2, range(1, 21))
    a = Replica(postgres.dsn, pg_schema, dest, "replica-a")
    b = Replica(postgres.dsn, pg_schema, dest, "replica-b")
    try:
        await a.engine.start()
        await _until(lambda: len(dest.got) == 50, "replica a delivers both writers")
        await b.engine.start()
        await asyncio.sleep(TTL / 2)
        assert not (a.leases.held & b.leases.held)  # never both on one pair
        # a dies mid-stream (kill -9): nothing released; new records arrive meanwhile
        held_by_a = set(a.leases.held)
        await a.kill()
        await _insert(db, pg_schema, 1, range(31, 41))
        await _insert(db, pg_schema, 2, range(21, 26))
        started = time.monotonic()
        await _until(lambda: len(dest.got) == 65, "replica b delivers what a left")
        assert time.monotonic() - started < TTL + 5
        assert b.leases.takeovers == len(held_by_a) >= 1
        assert b.metrics.delivery_lease_takeovers._value.get() == len(held_by_a)
        # every record delivered, and from the saved cursor: nothing a had confirmed is sent again
        assert sorted(dest.got) == sorted([f"w1-{s}" for s in range(1, 41)] + [f"w2-{s}" for s in range(1, 26)])
        cursors = await db.fetch(
            f"SELECT writer_id, delivered_seq, lease_owner FROM {quote_ident(pg_schema)}.delivery_progress "
            "ORDER BY writer_id"
        )
        assert [(r[0], r[2]) for r in cursors] == [(1, "replica-b"), (2, "replica-b")]
    finally:
        await b.stop()
    rows = await db.fetch(
        f"SELECT delivered_seq, lease_owner FROM {quote_ident(pg_schema)}.delivery_progress ORDER BY writer_id"
    )
    assert [(r[0], r[1]) for r in rows] == [(40, None), (25, None)]  # saved, and released at a clean stop


async def test_two_replicas_share_the_work_and_each_record_goes_out_once(
    postgres: PostgresTarget, pg_schema: str, db: asyncpg.Connection
) -> None:
    dest = Destination()
    await _insert(db, pg_schema, 1, range(1, 21))
    await _insert(db, pg_schema, 2, range(1, 21))
    a = Replica(postgres.dsn, pg_schema, dest, "replica-a")
    b = Replica(postgres.dsn, pg_schema, dest, "replica-b")
    try:
        await asyncio.gather(a.engine.start(), b.engine.start())
        await _until(lambda: len(a.leases.held) == 1 and len(b.leases.held) == 1, "one writer each", timeout=10)
        await _insert(db, pg_schema, 1, range(21, 31))
        await _insert(db, pg_schema, 2, range(21, 31))
        await _until(lambda: len(dest.got) >= 60, "all delivered")
        await asyncio.sleep(0.3)
        assert sorted(dest.got) == sorted(f"w{w}-{s}" for w in (1, 2) for s in range(1, 31))
    finally:
        await a.stop()
        await b.stop()
