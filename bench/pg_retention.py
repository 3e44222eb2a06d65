"""Retention cost in the PostgreSQL store: batched, index-driven deletes of each writer's oldest records.

Fills the bridge's own schema (``collector/store/postgres/migrations.py``) on a throwaway server (fsync on) with
``--rows`` audit-record-shaped rows (~1.5 KB body, the four record indexes) spread over ``--writers`` writers,
generated server-side, then expires the oldest ``--expire`` fraction with
:func:`collector.store.postgres.retention.delete_expired_records` (``--batch`` rows per transaction) and reports
rows/s, per-batch transaction time (how long a batch holds its row locks), WAL written, and the ``VACUUM`` that
makes the space reusable. Usage::

    .venv/bin/python bench/pg_retention.py --rows 2000000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.store.postgres.migrations import migrate, quote_ident
from collector.store.postgres.retention import _delete_batch
from tests.pg_support import ThrowawayPostgres

SCHEMA = "ccbridge"
T0 = 1_765_000_000_000

FILL = """
INSERT INTO {q}.records (id, time_ms, kind, "user", user_id, session, received_ms, writer_id, writer_seq, body, chain)
SELECT md5(g::text), $1::bigint + g, 'tool_result', 'user' || (g % 31) || '@example.com', 'u' || (g % 31),
       'session-' || (g % 997), $1::bigint + g, 1 + (g % $3::int), 1 + g / $3::int,
       convert_to(repeat(md5(g::text), 46), 'UTF8'), sha256(int8send(g))
FROM generate_series($2::bigint, $4::bigint) AS g
"""


async def run(args: argparse.Namespace, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    q = quote_ident(SCHEMA)
    await migrate(conn, SCHEMA)
    for w in range(args.writers):
        await conn.execute(f"INSERT INTO {q}.writers (name, host, worker) VALUES ($1, 'bench', $2)", f"bench/{w}", w)
    t = time.perf_counter()
    step = 200_000
    for lo in range(0, args.rows, step):
        await conn.execute(FILL.format(q=q), T0, lo, args.writers, min(args.rows, lo + step) - 1)
    fill_s = time.perf_counter() - t
    await conn.execute(f"ANALYZE {q}.records")
    size = await conn.fetchval(f"SELECT pg_total_relation_size('{q}.records')")
    print(f"filled {args.rows:,} rows over {args.writers} writers in {fill_s:.1f} s")
    print(f"records + indexes: {size / 2**20:,.0f} MiB")

    cutoff = T0 + int(args.rows * args.expire)
    lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
    batches: list[float] = []
    deleted = 0
    t = time.perf_counter()
    for w in range(1, args.writers + 1):
        while True:  # the loop of delete_expired_records, one timed batch (one transaction) at a time
            b0 = time.perf_counter()
            n, _anchor, _free = await _delete_batch(conn, SCHEMA, w, cutoff, None, args.batch)
            if n:
                batches.append(time.perf_counter() - b0)
            deleted += n
            if n < args.batch:
                break
    total_s = time.perf_counter() - t
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn0)
    t = time.perf_counter()
    await conn.execute(f"VACUUM {q}.records")
    vacuum_s = time.perf_counter() - t
    left = await conn.fetchval(f"SELECT count(*) FROM {q}.records")
    print(f"deleted {deleted:,} rows in {total_s:.1f} s = {deleted / total_s:,.0f} rows/s")
    print(f"{total_s / deleted * 1e6:.1f} µs per deleted row")
    print(
        f"per {args.batch:,}-row batch (one transaction): median {statistics.median(batches) * 1e3:.0f} ms, "
        f"max {max(batches) * 1e3:.0f} ms"
    )
    print(f"WAL written {wal / 2**20:,.0f} MiB ({wal / deleted:.0f} bytes/row)")
    print(f"VACUUM {vacuum_s:.1f} s; {left:,} rows left")
    await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--expire", type=float, default=0.5, help="fraction of the oldest rows to expire")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--dsn", default="", help="use this server (its schema ccbridge is filled!)")
    args = ap.parse_args()
    server = None if args.dsn else ThrowawayPostgres(fsync=True, settings={"max_wal_size": "'4GB'"}).start()
    try:
        asyncio.run(run(args, args.dsn or (server.dsn if server else "")))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
