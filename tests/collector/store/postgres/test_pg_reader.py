"""Cluster-wide reads on PostgreSQL give what the embedded store's reader gives on the same input."""

from __future__ import annotations

import orjson
import pytest

from collector.store import RecordQuery, open_reader
from collector.store.postgres.reader import PostgresStoreReader
from collector.store.postgres.writer import PostgresAuditLog
from collector.store.sqlite import AuditStore
from exporters.base import DeliveryRecord
from tests.collector.store.postgres.test_pg_writer import settings  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("postgres")


def rec(i: int, t: int, kind: str, session: str | None, user: str | None) -> tuple:
    rid = f"{i:032x}"
    body = orjson.dumps({"id": rid, "kind": kind, "session": session})
    return (rid, t, kind, user, None, session, 9000 + i, body)


ROWS = [
    rec(i, t=(i * 7919) % 50, kind=("prompt", "tool", "api")[i % 3], session=f"s{i % 4}", user=f"u{i % 2}")
    for i in range(1, 61)
]
QUERIES = [
    RecordQuery(),
    RecordQuery(since_ms=10, until_ms=30),
    RecordQuery(kinds=("tool", "api")),
    RecordQuery(user="u1"),
    RecordQuery(session="s2", kinds=("prompt",)),
]


def _strip_chain(body: bytes) -> dict:
    rec = orjson.loads(body)
    rec.pop("chain", None)
    return rec


def _both(tmp_path, settings):  # noqa: F811
    with AuditStore(tmp_path, shard=0) as a:
        a.append_sync(ROWS[:30])
    with AuditStore(tmp_path, shard=1) as b:
        b.append_sync(ROWS[30:] + ROWS[:5])  # a retry that reached the other worker
    w0 = PostgresAuditLog(settings, shard=0, host="h").open()
    w1 = PostgresAuditLog(settings, shard=1, host="h").open()
    try:
        w0.append_sync(ROWS[:30])
        w1.append_sync(ROWS[30:] + ROWS[:5])
    finally:
        w0.close()
        w1.close()
    return open_reader(tmp_path), PostgresStoreReader(settings)


@pytest.mark.parametrize("q", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
@pytest.mark.parametrize("batch", [7, 1000])
def test_iter_records_equals_the_sqlite_reader(tmp_path, settings, q, batch) -> None:  # noqa: F811
    sqlite_reader, pg = _both(tmp_path, settings)
    with pg:
        got = [_strip_chain(b) for b in pg.iter_records(q, batch_size=batch)]
        assert got == [_strip_chain(b) for b in sqlite_reader.iter_records(q, batch_size=batch)]
        assert got  # every query matches something
        first = orjson.loads(next(pg.iter_records(q)))
        assert set(first["chain"]) == {"hash", "seq", "shard"}


def test_shard_logs_read_by_writer_seq(tmp_path, settings) -> None:  # noqa: F811
    _, pg = _both(tmp_path, settings)
    with pg:
        writers = pg.shards()
        assert len(writers) == 2 and all(pg.has_shard(w) for w in writers) and not pg.has_shard(999)
        log = pg.shard_log(writers[1])
        assert log.last_seq() == 30 and log.end_positions() == (30, 0)
        got, oldest = log.read_after(10, 5, 1 << 20, DeliveryRecord)
        assert [r.seq for r in got] == [11, 12, 13, 14, 15] and oldest == 9000 + 41
        assert [r.id for r in got] == [ROWS[40 + k][0] for k in range(5)]
        small, _ = log.read_after(0, 100, 1, DeliveryRecord)
        assert len(small) == 1  # at least one record, within the byte budget otherwise
        assert [s for s, *_ in log.records_after(28, 10)] == [29, 30]
        assert log.oldest_received_after(30) is None and log.average_size() > 0
        view = pg.shard_view(writers[0])
        assert list(view.sessions_with("prompt", 0, 100, None)) == ["s0", "s1", "s2", "s3"]
        report = pg.verify_chain()
        assert report.broken is None and report.records == 60
