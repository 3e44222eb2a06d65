"""Which PostgreSQL driver for the bridge's write pattern: asyncpg or psycopg 3 (async), measured.

Runs against a throwaway server (``tests/pg_support.py``: initdb in a temp dir, loopback port, fsync ON so a commit
costs what it costs in production) or ``--dsn``. Every measurement writes audit-record-shaped rows of ~1.5 KB JSON
(id, time_ms, kind, user, user_id, session, received_ms, body, chain) into a table with the store's unique key
``(time_ms, id)`` with ``INSERT ... ON CONFLICT DO NOTHING``, from one event loop, one transaction per commit:

* ``batch``: one commit of B records (B = 1, 8, 64, 512), repeated; per-commit latency (median, p99) and per record.
* ``group``: C concurrent "requests" of R records each, joined by a group committer into one transaction (at most
  512 records), the way the store joins concurrent OTLP requests; records/s and commit latency.
* ``dup``: a 512 batch whose ids are all present already (a client retry): what deduplication costs.
* ``copy``: bulk load (``db import`` path): COPY into a temporary staging table, then ``INSERT ... SELECT ... ON
  CONFLICT DO NOTHING``, 20,000 records per commit.

Statement shapes per driver: ``executemany`` (asyncpg: prepared statement, one round trip per batch; psycopg:
pipeline mode) and ``unnest`` (one statement binding one array per column). Usage::

    .venv/bin/python bench/pg_driver.py            # both drivers, all shapes, prints a Markdown table
    .venv/bin/python bench/pg_driver.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import psycopg

from tests.pg_support import ThrowawayPostgres

Row = tuple[str, int, str, str, str, str, int, bytes, bytes]

DDL = """
DROP TABLE IF EXISTS bench_records;
CREATE TABLE bench_records (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    id          text   NOT NULL,
    time_ms     bigint NOT NULL,
    kind        text   NOT NULL,
    "user"      text,
    user_id     text,
    session     text,
    received_ms bigint NOT NULL,
    body        bytea  NOT NULL,
    chain       bytea,
    PRIMARY KEY (time_ms, id)
);
CREATE INDEX bench_records_session ON bench_records (session);
CREATE INDEX bench_records_user ON bench_records ("user");
CREATE INDEX bench_records_seq ON bench_records (seq);
"""
COLS = '(id, time_ms, kind, "user", user_id, session, received_ms, body, chain)'
INSERT_MANY = f"INSERT INTO bench_records {COLS} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
INSERT_MANY_PSYCOPG = (
    f"INSERT INTO bench_records {COLS} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
UNNEST_TYPES = ("text[]", "bigint[]", "text[]", "text[]", "text[]", "text[]", "bigint[]", "bytea[]", "bytea[]")
INSERT_UNNEST = (
    f"INSERT INTO bench_records {COLS} SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}" for i, t in enumerate(UNNEST_TYPES))
    + ") ON CONFLICT DO NOTHING"
)
INSERT_UNNEST_PSYCOPG = (
    f"INSERT INTO bench_records {COLS} SELECT * FROM unnest("
    + ", ".join(f"%s::{t}" for t in UNNEST_TYPES)
    + ") ON CONFLICT DO NOTHING"
)
STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS bench_stage ON COMMIT DELETE ROWS AS "
    f"SELECT {COLS[1:-1]} FROM bench_records WITH NO DATA"
)
STAGE_COLS = ["id", "time_ms", "kind", "user", "user_id", "session", "received_ms", "body", "chain"]
FROM_STAGE = f"INSERT INTO bench_records {COLS} SELECT {COLS[1:-1]} FROM bench_stage ON CONFLICT DO NOTHING"
MAX_GROUP = 512
COPY_PSYCOPG = "COPY bench_stage (" + ", ".join(f'"{c}"' for c in STAGE_COLS) + ") FROM STDIN"


class Rows:
    """Audit-record-shaped rows with unique ids (a counter), ~1.5 KB JSON bodies."""

    def __init__(self) -> None:
        self.n = 0
        self.t0 = 1_765_000_000_000

    def make(self, count: int) -> list[Row]:
        out: list[Row] = []
        for _ in range(count):
            self.n += 1
            n = self.n
            rid = f"{n:032x}"
            t = self.t0 + n
            body = orjson.dumps(
                {
                    "schema_version": "1.2",
                    "id": rid,
                    "kind": "tool_result",
                    "time": t,
                    "session": {"id": f"session-{n % 97}"},
                    "user": {"email": f"user{n % 31}@example.com", "id": f"u{n % 31:04d}"},
                    "attributes": {"tool_name": "Bash", "success": True, "duration_ms": n % 1000},
                    "detail": "x" * 1150,
                }
            )
            out.append(
                (
                    rid,
                    t,
                    "tool_result",
                    f"user{n % 31}@example.com",
                    f"u{n % 31:04d}",
                    f"session-{n % 97}",
                    t,
                    body,
                    b"\x00" * 32,
                )
            )
        return out


def _columns(rows: list[Row]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)]


# --------------------------------------------------------------------------------------------------------------
# drivers behind one shape: connect, write(rows, shape) in one transaction, copy(rows), close


class AsyncpgDriver:
    name = "asyncpg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)

    async def execute(self, sql: str) -> None:
        assert self.conn is not None
        await self.conn.execute(sql)

    async def write(self, rows: list[Row], shape: str) -> None:
        assert self.conn is not None
        async with self.conn.transaction():
            if shape == "executemany":
                await self.conn.executemany(INSERT_MANY, rows)
            else:
                await self.conn.execute(INSERT_UNNEST, *_columns(rows))

    async def copy(self, rows: list[Row]) -> None:
        assert self.conn is not None
        async with self.conn.transaction():
            await self.conn.execute(STAGE)
            await self.conn.copy_records_to_table("bench_stage", records=rows, columns=STAGE_COLS)
            await self.conn.execute(FROM_STAGE)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class PsycopgDriver:
    name = "psycopg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, prepare_threshold=0)

    async def execute(self, sql: str) -> None:
        assert self.conn is not None
        for stmt in filter(None, (s.strip() for s in sql.split(";"))):
            await self.conn.execute(stmt)
        await self.conn.commit()

    async def write(self, rows: list[Row], shape: str) -> None:
        assert self.conn is not None
        async with self.conn.transaction(), self.conn.cursor() as cur:
            if shape == "executemany":
                await cur.executemany(INSERT_MANY_PSYCOPG, rows)
            else:
                await cur.execute(INSERT_UNNEST_PSYCOPG, _columns(rows))

    async def copy(self, rows: list[Row]) -> None:
        assert self.conn is not None
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.execute(STAGE)
            async with cur.copy(COPY_PSYCOPG) as cp:
                for r in rows:
                    await cp.write_row(r)
            await cur.execute(FROM_STAGE)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


Driver = AsyncpgDriver | PsycopgDriver


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


CPU: list[float] = [0.0]  # process CPU seconds of the last _timed() run (this process: the bridge's side)


async def _timed(fn: Callable[[], Awaitable[None]], reps: int) -> list[float]:
    out = []
    cpu0 = time.process_time()
    for _ in range(reps):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    CPU[0] = time.process_time() - cpu0
    return out


async def bench_batches(d: Driver, gen: Rows, shape: str, sizes: list[int], budget: int) -> list[dict[str, Any]]:
    res = []
    for b in sizes:
        reps = max(20, min(400, budget // b))
        for _ in range(3):  # warm up (prepared statements, caches)
            await d.write(gen.make(b), shape)
        batches = [gen.make(b) for _ in range(reps)]
        it = iter(batches)
        lat = await _timed(lambda it=it: d.write(next(it), shape), reps)  # type: ignore[misc]
        med = statistics.median(lat)
        res.append(
            {
                "cpu_us": CPU[0] / (b * reps) * 1e6,
                "case": f"batch {b}",
                "per_commit_ms": med * 1e3,
                "p99_ms": _pct(lat, 0.99) * 1e3,
                "per_record_us": med / b * 1e6,
                "records_s": b * reps / sum(lat),
            }
        )
    return res


async def bench_dup(d: Driver, gen: Rows, shape: str, reps: int) -> dict[str, Any]:
    rows = gen.make(512)
    await d.write(rows, shape)
    lat = await _timed(lambda: d.write(rows, shape), reps)
    med = statistics.median(lat)
    return {
        "cpu_us": CPU[0] / (512 * reps) * 1e6,
        "case": "dup 512",
        "per_commit_ms": med * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
        "per_record_us": med / 512 * 1e6,
        "records_s": 512 * reps / sum(lat),
    }


async def bench_group(d: Driver, gen: Rows, shape: str, clients: int, req: int, seconds: float) -> dict[str, Any]:
    """``clients`` tasks each submit ``req`` records and wait for the commit; one committer joins what is queued."""
    queue: list[tuple[list[Row], asyncio.Future[None]]] = []
    wake = asyncio.Event()
    commits: list[float] = []
    done = 0
    stop = time.perf_counter() + seconds

    async def committer() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while queue:
                take: list[tuple[list[Row], asyncio.Future[None]]] = []
                n = 0
                while queue and (n == 0 or n + len(queue[0][0]) <= MAX_GROUP):
                    item = queue.pop(0)
                    take.append(item)
                    n += len(item[0])
                t = time.perf_counter()
                await d.write([r for rows, _ in take for r in rows], shape)
                commits.append(time.perf_counter() - t)
                for _, fut in take:
                    fut.set_result(None)

    latencies: list[float] = []

    async def client() -> None:
        nonlocal done
        loop = asyncio.get_running_loop()
        while time.perf_counter() < stop:
            rows = gen.make(req)
            fut: asyncio.Future[None] = loop.create_future()
            t = time.perf_counter()
            queue.append((rows, fut))
            wake.set()
            await fut
            latencies.append(time.perf_counter() - t)
            done += req

    task = asyncio.create_task(committer())
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    task.cancel()
    med = statistics.median(commits)
    return {
        "cpu_us": cpu / done * 1e6,
        "case": f"group {clients}x{req}",
        "per_commit_ms": med * 1e3,
        "p99_ms": _pct(latencies, 0.99) * 1e3,
        "per_record_us": elapsed / done * 1e6,
        "records_s": done / elapsed,
        "records_per_commit": done / len(commits),
    }


async def bench_copy(d: Driver, gen: Rows, n: int, reps: int) -> dict[str, Any]:
    await d.copy(gen.make(1000))
    batches = [gen.make(n) for _ in range(reps)]
    it = iter(batches)
    lat = await _timed(lambda: d.copy(next(it)), reps)
    med = statistics.median(lat)
    return {
        "cpu_us": CPU[0] / (n * reps) * 1e6,
        "case": f"copy {n}",
        "per_commit_ms": med * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
        "per_record_us": med / n * 1e6,
        "records_s": n * reps / sum(lat),
    }


async def run(dsn: str, quick: bool, drivers: list[str]) -> list[dict[str, Any]]:
    results = []
    budget = 4000 if quick else 20000
    for name in drivers:
        for shape in ("executemany", "unnest"):
            d: Driver = AsyncpgDriver(dsn) if name == "asyncpg" else PsycopgDriver(dsn)
            await d.open()
            await d.execute(DDL)
            gen = Rows()
            rows = await bench_batches(d, gen, shape, [1, 8, 64, 512], budget)
            rows.append(await bench_dup(d, gen, shape, 10 if quick else 40))
            for clients, req in ((32, 5), (64, 8)):
                rows.append(await bench_group(d, gen, shape, clients, req, 3.0 if quick else 8.0))
            if shape == "unnest":
                rows.append(await bench_copy(d, gen, 20000, 2 if quick else 5))
            for r in rows:
                r.update(driver=name, shape=shape)
                print(_fmt(r), flush=True)
            results += rows
            await d.close()
    return results


def _fmt(r: dict[str, Any]) -> str:
    shape = "COPY + INSERT SELECT" if r["case"].startswith("copy") else r["shape"]
    return (
        f"| {r['driver']} | {shape} | {r['case']} | {r['per_commit_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['per_record_us']:.1f} | {r['cpu_us']:.1f} | {r['records_s']:,.0f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("CCBRIDGE_BENCH_POSTGRES_DSN", ""), help="use this server")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--driver", action="append", choices=["asyncpg", "psycopg"], help="default: both")
    args = ap.parse_args()
    server = None if args.dsn else ThrowawayPostgres(fsync=True).start()
    dsn = args.dsn or (server.dsn if server else "")
    print(f"asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})")
    print("| driver | statement | case | commit ms (median) | p99 ms | µs/record | client CPU µs/record | records/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    try:
        asyncio.run(run(dsn, args.quick, args.driver or ["asyncpg", "psycopg"]))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
