"""``ccbridge db import --from-sqlite DIR``: copy an embedded store into PostgreSQL, incrementally and only once.

Each SQLite shard becomes one writer (``writers.name`` = ``sqlite-import:<directory>:shard-<N>``) whose
``writer_seq`` is the shard's ``seq``, so its records keep their chain links unchanged: the import stores the link
the shard's chain starts from as the writer's first anchor in ``chain_anchors`` (the shard's genesis link, or the
anchor SQLite retention left), and ``audit verify`` checks the imported chain exactly as it checked the shard.
Metric points and spans keep their ``seq`` too; destinations' cursors become that writer's ``delivery_progress``
(never moved backwards, no lease); dead letters keep their reason, status, attempts and times; the Analytics usage
history and identity map are upserted.

Re-running copies nothing twice: records, metric points and spans continue after the highest ``writer_seq``
already imported for the writer, dead letters after the highest source id already copied (``sqlite_imports``),
usage rows and identities are keyed. A source still being written to can be imported again later to bring the
rest across. The source is only read (read-only SQLite connections).

A record whose ``(time_ms, id)`` is already in PostgreSQL under another writer (the same request was also sent to a
PostgreSQL bridge) is not stored twice; it is counted in :attr:`ShardImport.duplicates`, and the imported chain then
misses that record, which ``audit verify`` reports as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.store.chain import chain_genesis
from collector.store.delivery_state import state_path
from collector.store.postgres.migrations import migrate, quote_ident
from collector.store.sqlite import as_bytes, connect, shard_paths

if TYPE_CHECKING:
    import asyncpg

    from collector.store.postgres.session import Connector

__all__ = ["BATCH", "ImportResult", "ShardImport", "import_sqlite"]

BATCH = 5000


@dataclass
class ShardImport:
    shard: int
    writer_id: int
    records: int = 0
    duplicates: int = 0
    metric_points: int = 0
    spans: int = 0
    cursors: int = 0
    dead_letters: int = 0


@dataclass
class ImportResult:
    source: str
    shards: list[ShardImport] = field(default_factory=list)
    usage_days: int = 0
    usage_rows: int = 0
    identities: int = 0

    @property
    def copied(self) -> int:
        """Rows copied by this run (0 on a re-run over an unchanged source)."""
        return sum(s.records + s.metric_points + s.spans + s.dead_letters for s in self.shards)

    def summary(self) -> str:
        lines = [f"imported {self.source}:"]
        for s in self.shards:
            lines.append(
                f"  shard {s.shard} -> writer {s.writer_id}: {s.records} records"
                + (f" ({s.duplicates} already stored by another writer)" if s.duplicates else "")
                + f", {s.metric_points} metric points, {s.spans} spans, {s.cursors} cursors, "
                f"{s.dead_letters} dead letters"
            )
        lines.append(
            f"  usage history: {self.usage_rows} rows over {self.usage_days} days, {self.identities} identities"
        )
        return "\n".join(lines)


def _shard_number(path: Path) -> int:
    return int(path.stem.removeprefix("shard-"))


def _fetch(path: Path, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    with contextlib.closing(connect(path, readonly=True)) as conn:
        return conn.execute(sql, tuple(args)).fetchall()


def _has_table(path: Path, table: str) -> bool:
    return bool(_fetch(path, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))


async def _writer_for(conn: asyncpg.Connection, q: str, source: str, shard: int) -> tuple[int, int]:
    """(writer_id, dead_letters_after) of the source shard, created on its first import."""
    row = await conn.fetchrow(
        f"SELECT writer_id, dead_letters_after FROM {q}.sqlite_imports WHERE source = $1 AND shard = $2", source, shard
    )
    if row is not None:
        return int(row[0]), int(row[1])
    async with conn.transaction():
        writer_id = await conn.fetchval(
            f"INSERT INTO {q}.writers (name, host, worker) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING writer_id",
            f"sqlite-import:{source}:shard-{shard}",
            socket.gethostname(),
            shard,
        )
        await conn.execute(
            f"INSERT INTO {q}.sqlite_imports (source, shard, writer_id) VALUES ($1, $2, $3)", source, shard, writer_id
        )
    return int(writer_id), 0


async def _anchor(conn: asyncpg.Connection, q: str, db: Path, shard: int, writer_id: int, imported: int) -> None:
    """Where the writer's chain starts: the shard's genesis, or the anchor SQLite retention left (if past what was
    imported before)."""
    row = _fetch(db, "SELECT value FROM meta WHERE key = 'chain_anchor'") if _has_table(db, "meta") else []
    if row:
        aseq, _, ahex = str(row[0][0]).partition(":")
        seq, link = int(aseq), bytes.fromhex(ahex)
    else:
        seq, link = 0, chain_genesis(shard)
    if imported and seq <= imported:
        return
    await conn.execute(
        f"INSERT INTO {q}.chain_anchors (writer_id, writer_seq, link, reason) VALUES ($1, $2, $3, 'import') "
        "ON CONFLICT (writer_id, writer_seq) DO NOTHING",
        writer_id,
        seq,
        link,
    )


async def _sequence(conn: asyncpg.Connection, q: str, writer_id: int, stream: str, last: int) -> None:
    await conn.execute(
        f"INSERT INTO {q}.writer_sequences (writer_id, stream, last_seq) VALUES ($1, $2, $3) "
        f"ON CONFLICT (writer_id, stream) DO UPDATE SET last_seq = greatest({q}.writer_sequences.last_seq, "
        "excluded.last_seq)",
        writer_id,
        stream,
        last,
    )


async def _copy_records(conn: asyncpg.Connection, q: str, db: Path, result: ShardImport) -> None:
    w = result.writer_id
    after = int(await conn.fetchval(f"SELECT coalesce(max(writer_seq), 0) FROM {q}.records WHERE writer_id = $1", w))
    anchored = await conn.fetchval(f"SELECT max(writer_seq) FROM {q}.chain_anchors WHERE writer_id = $1", w)
    if anchored is None or after == 0:
        await _anchor(conn, q, db, result.shard, w, after)
    while True:
        rows = await asyncio.to_thread(
            _fetch,
            db,
            "SELECT seq, id, time_ms, kind, user, user_id, session, received_ms, body, chain FROM records "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, BATCH),
        )
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        bodies = [as_bytes(b) for b in cols[8]]
        links = [None if c is None else as_bytes(c) for c in cols[9]]
        last_seq, last_link = int(rows[-1][0]), links[-1]
        async with conn.transaction():
            inserted = await conn.fetchval(
                f'WITH ins AS (INSERT INTO {q}.records (writer_seq, id, time_ms, kind, "user", user_id, session, '
                "received_ms, body, chain, writer_id) SELECT *, $11::integer FROM unnest($1::bigint[], $2::text[], "
                "$3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bytea[], "
                "$10::bytea[]) ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins",
                *[list(c) for c in cols[:8]],
                bodies,
                links,
                w,
            )
            await _sequence(conn, q, w, "records", last_seq)
            if last_link is not None:
                await conn.execute(
                    f"INSERT INTO {q}.chain_heads (writer_id, writer_seq, head) VALUES ($1, $2, $3) "
                    "ON CONFLICT (writer_id) DO UPDATE SET writer_seq = excluded.writer_seq, head = excluded.head, "
                    "updated_at = now()",
                    w,
                    last_seq,
                    last_link,
                )
        result.records += int(inserted)
        result.duplicates += len(rows) - int(inserted)
        after = last_seq


async def _copy_points_and_spans(conn: asyncpg.Connection, q: str, db: Path, result: ShardImport) -> None:
    w = result.writer_id
    tables = (
        ("metric_points", "time_ms, key, name, body", "$1::bigint[], $2::text[], $3::text[], $4::bytea[]"),
        (
            "spans",
            "trace_id, span_id, time_ms, name, body",
            "$1::text[], $2::text[], $3::bigint[], $4::text[], $5::bytea[]",
        ),
    )
    for table, columns, arrays in tables:
        if not await asyncio.to_thread(_has_table, db, table):
            continue
        after = int(
            await conn.fetchval(f"SELECT coalesce(max(writer_seq), 0) FROM {q}.{table} WHERE writer_id = $1", w)
        )
        n = columns.count(",") + 1
        while True:
            rows = await asyncio.to_thread(
                _fetch, db, f"SELECT seq, {columns} FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?", (after, BATCH)
            )
            if not rows:
                break
            cols = [list(c) for c in zip(*rows, strict=True)]
            cols[n] = [as_bytes(b) for b in cols[n]]
            async with conn.transaction():
                # unnest's columns: the seq array ($n+1) first, then the table's columns ($1..$n)
                inserted = await conn.fetchval(
                    f"WITH ins AS (INSERT INTO {q}.{table} (writer_seq, {columns}, writer_id) "
                    f"SELECT *, ${n + 2}::integer FROM unnest(${n + 1}::bigint[], {arrays}) "
                    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins",
                    *cols[1:],
                    cols[0],
                    w,
                )
                await _sequence(conn, q, w, table, int(rows[-1][0]))
            if table == "spans":
                result.spans += int(inserted)
            else:
                result.metric_points += int(inserted)
            after = int(rows[-1][0])


async def _copy_delivery_state(
    conn: asyncpg.Connection, q: str, directory: Path, source: str, result: ShardImport, dl_after: int
) -> None:
    path = state_path(directory, result.shard)
    if not path.is_file():
        return
    w = result.writer_id
    cursors = await asyncio.to_thread(_fetch, path, "SELECT destination, seq FROM cursors")
    has_batch = any(r[1] == "batch" for r in await asyncio.to_thread(_fetch, path, "PRAGMA table_info(dead_letters)"))
    dead = await asyncio.to_thread(
        _fetch,
        path,
        "SELECT dlq_id, destination, record_seq, record_id, time_ms, failed_ms, reason, status, attempts, body, "
        + ("batch" if has_batch else "''")
        + " FROM dead_letters WHERE dlq_id > ? ORDER BY dlq_id",
        (dl_after,),
    )
    async with conn.transaction():
        for destination, seq in cursors:
            await conn.execute(
                f"INSERT INTO {q}.delivery_progress (destination, stream, writer_id, delivered_seq) "
                "VALUES ($1, 'records', $2, $3) ON CONFLICT (destination, stream, writer_id) DO UPDATE SET "
                f"delivered_seq = greatest({q}.delivery_progress.delivered_seq, excluded.delivered_seq)",
                destination,
                w,
                int(seq),
            )
        if dead:
            await conn.executemany(
                f"INSERT INTO {q}.dead_letters (destination, stream, batch_id, reason, status, attempts, created_ms, "
                "failed_ms, record_time_ms, record_id, body, writer_id, record_seq) "
                "VALUES ($1, 'records', $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11)",
                [
                    (
                        d,
                        f"writer {w} {batch}" if batch else f"writer {w} seq {rseq}-{rseq}",
                        reason,
                        status,
                        int(attempts),
                        int(failed),
                        int(t),
                        rid,
                        as_bytes(body),
                        w,
                        int(rseq),
                    )
                    for _id, d, rseq, rid, t, failed, reason, status, attempts, body, batch in dead
                ],
            )
            await conn.execute(
                f"UPDATE {q}.sqlite_imports SET dead_letters_after = $3 WHERE source = $1 AND shard = $2",
                source,
                result.shard,
                int(dead[-1][0]),
            )
    result.cursors = len(cursors)
    result.dead_letters = len(dead)


async def _copy_usage(connect: Connector, schema: str, directory: Path, result: ImportResult) -> None:
    from collector.store.postgres.session import PgSession
    from collector.store.postgres.usage import PgUsageStore
    from collector.store.usage import DB_FILENAME, UsageStore

    path = directory / DB_FILENAME
    if not path.is_file():
        return
    lite = UsageStore.open_existing(directory)
    if lite is None:
        return
    session = PgSession(connect, name="ccbridge-import-usage")
    try:
        pg = PgUsageStore(session, schema)

        def _copy() -> None:
            for day, state in lite.day_states().items():
                rows = lite.rows(day, day)
                result.usage_rows += pg.write_day(day, rows, pages=state.pages, fetched_at=state.fetched_at)
                result.usage_days += 1
            identities = _fetch(path, "SELECT kind, value, email, first_seen, last_seen FROM identity_map")
            result.identities = len(identities)

            async def _ids(conn: asyncpg.Connection) -> None:
                q = quote_ident(schema)
                await conn.executemany(
                    f"INSERT INTO {q}.identity_map (kind, value, email, first_seen, last_seen) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, value) DO UPDATE SET "
                    f"email = CASE WHEN excluded.last_seen > {q}.identity_map.last_seen THEN excluded.email "
                    f"ELSE {q}.identity_map.email END, "
                    f"first_seen = least({q}.identity_map.first_seen, excluded.first_seen), "
                    f"last_seen = greatest({q}.identity_map.last_seen, excluded.last_seen)",
                    [
                        (k, v, e, datetime.fromisoformat(f), datetime.fromisoformat(last))
                        for k, v, e, f, last in identities
                    ],
                )

            session.run(_ids)

        await asyncio.to_thread(_copy)
    finally:
        lite.close()
        session.close()


async def import_sqlite(connect: Connector, schema: str, directory: str | Path) -> ImportResult:
    """Copy the embedded store under ``directory`` into ``schema`` (migrated first if needed); see the module doc."""
    source_dir = Path(directory).resolve()
    shards = shard_paths(source_dir)
    if not shards and not (source_dir / "analytics.db").is_file():
        raise FileNotFoundError(f"{source_dir}: no ccbridge data directory here (no store/shard-*.db)")
    source = str(source_dir)
    q = quote_ident(schema)
    result = ImportResult(source)
    conn = await connect()
    try:
        await migrate(conn, schema)
        for db in shards:
            shard = _shard_number(db)
            writer_id, dl_after = await _writer_for(conn, q, source, shard)
            shard_result = ShardImport(shard, writer_id)
            try:
                await _copy_records(conn, q, db, shard_result)
                await _copy_points_and_spans(conn, q, db, shard_result)
            except sqlite3.Error as exc:
                raise RuntimeError(f"{db}: cannot read the shard: {exc}") from None
            await _copy_delivery_state(conn, q, source_dir, source, shard_result, dl_after)
            result.shards.append(shard_result)
    finally:
        await conn.close()
    await _copy_usage(connect, schema, source_dir, result)
    return result
