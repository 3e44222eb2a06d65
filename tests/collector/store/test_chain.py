"""Tamper evidence: every stored record is chained; `ccbridge audit verify` names the first broken record."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import orjson
import pytest

from collector.cli import main
from collector.pipeline import Pipeline
from collector.store import RecordQuery, iter_records
from collector.store.chain import chain_genesis
from collector.store.reader import verify_chain
from collector.store.sqlite import AuditStore
from collector.telemetry.selfmetrics import SelfMetrics


def _row(i: int, t: int | None = None, rid: str | None = None) -> tuple:
    rid = rid or f"{i:032x}"
    t = 1_795_000_000_000 + i if t is None else t
    body = orjson.dumps({"schema_version": "1.0", "id": rid, "kind": "tool_decision", "n": i})
    return (rid, t, "tool_decision", "dev@example.com", "u1", "s1", t, body)


def _fill(directory, n: int, start: int = 0) -> None:
    with AuditStore(directory) as store:
        for i in range(start, start + n, 10):
            store.append_sync(records=[_row(j) for j in range(i, min(i + 10, start + n))])


def _db(directory) -> sqlite3.Connection:
    return sqlite3.connect(directory / "store" / "shard-0.db")


def test_chain_links_every_record_to_its_predecessor(tmp_path):
    _fill(tmp_path, 25)
    conn = _db(tmp_path)
    prev = chain_genesis(0)
    rows = conn.execute("SELECT seq, body, chain FROM records ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, 26))
    for _seq, body, link in rows:
        expected = hashlib.sha256(prev + body).digest()
        assert link == expected
        prev = expected
    report = verify_chain(tmp_path)
    assert report.broken is None and report.records == 25
    assert report.head[0] == (25, prev.hex())


def test_a_changed_byte_is_reported_at_that_record(tmp_path, capsys):
    _fill(tmp_path, 30)
    conn = _db(tmp_path)
    (body,) = conn.execute("SELECT body FROM records WHERE seq = 17").fetchone()
    tampered = body.replace(b'"n":16', b'"n":61')
    assert tampered != body
    conn.execute("UPDATE records SET body = ? WHERE seq = 17", (tampered,))
    conn.commit()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "CHAIN BROKEN in shard 0 at record seq 17" in out and f"{16:032x}" in out


def test_a_deleted_record_in_the_middle_is_reported(tmp_path, capsys):
    _fill(tmp_path, 20)
    conn = _db(tmp_path)
    conn.execute("DELETE FROM records WHERE seq = 9")
    conn.commit()
    report = verify_chain(tmp_path)
    assert report.broken is not None and report.broken.seq == 10 and "missing" in report.broken.reason


def test_a_rewritten_history_with_recomputed_links_still_differs_from_the_published_head(tmp_path):
    """An attacker can recompute every link; the head already shipped to the SIEM no longer matches."""
    _fill(tmp_path, 10)
    head_before = verify_chain(tmp_path).head[0]
    conn = _db(tmp_path)
    prev = chain_genesis(0)
    for seq, body in conn.execute("SELECT seq, body FROM records ORDER BY seq").fetchall():
        if seq == 3:
            body = body.replace(b"tool_decision", b"tool_decisioX")
        prev = hashlib.sha256(prev + body).digest()
        conn.execute("UPDATE records SET body = ?, chain = ? WHERE seq = ?", (body, prev, seq))
    conn.commit()
    report = verify_chain(tmp_path)
    assert report.broken is None
    assert report.head[0] != head_before


def test_duplicates_do_not_break_the_chain(tmp_path):
    with AuditStore(tmp_path) as store:
        store.append_sync(records=[_row(i) for i in range(5)])
        res = store.append_sync(records=[_row(2), _row(5), _row(5), _row(6)])
        assert res.new_records == 2
    report = verify_chain(tmp_path)
    assert report.broken is None and report.records == 7


def test_chain_continues_after_restart(tmp_path):
    _fill(tmp_path, 5)
    _fill(tmp_path, 5, start=5)
    report = verify_chain(tmp_path)
    assert report.broken is None and report.records == 10


async def test_retention_deletes_a_prefix_and_keeps_the_chain_verifiable(tmp_path):
    now = int(time.time() * 1000)
    store = AuditStore(tmp_path, writer="inline").open()
    try:
        old = [(*_row(i)[:6], now - 100 * 86400_000, _row(i)[7]) for i in range(10)]
        new = [(*_row(i)[:6], now, _row(i)[7]) for i in range(10, 15)]
        await store.append(records=old)
        await store.append(records=new)
        deleted = await store.delete_expired(now - 90 * 86400_000, max_seq=None)
    finally:
        store.close()
    assert deleted == 10
    report = verify_chain(tmp_path)
    assert report.broken is None and report.records == 5


async def test_chain_head_records_are_published_and_chained(tmp_path):
    store = AuditStore(tmp_path, writer="inline").open()
    pipeline = Pipeline(store, SelfMetrics())
    try:
        await store.append(records=[_row(i) for i in range(3)])
        assert await pipeline.publish_chain_head("host-a") is True
        assert await pipeline.publish_chain_head("host-a") is False
        head_seq = store.chain_seq
    finally:
        store.close()
    heads = [orjson.loads(b) for b in iter_records(tmp_path, RecordQuery(kinds=("chain_head",)))]
    assert len(heads) == 1
    assert heads[0]["chain_head"]["seq"] == 3 and heads[0]["chain_head"]["shard"] == 0
    assert head_seq == 4
    assert verify_chain(tmp_path).broken is None


def test_exports_carry_each_records_link(tmp_path):
    _fill(tmp_path, 3)
    recs = [orjson.loads(b) for b in iter_records(tmp_path, RecordQuery())]
    links = _db(tmp_path).execute("SELECT chain FROM records ORDER BY seq").fetchall()
    assert [r["chain"]["hash"] for r in recs] == [link.hex() for (link,) in links]
    assert [r["chain"]["seq"] for r in recs] == [1, 2, 3]


def test_verify_without_a_store_is_a_clear_error(tmp_path, capsys):
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "nothing")]) == 1
    assert "no store" in capsys.readouterr().err


@pytest.mark.parametrize("writer", ["inline", "thread"])
async def test_both_writers_chain_identically(tmp_path, writer):
    store = AuditStore(tmp_path, writer=writer).open()
    try:
        await store.append(records=[_row(i) for i in range(4)])
        await store.append(records=[_row(i) for i in range(4, 8)])
    finally:
        store.close()
    assert verify_chain(tmp_path).records == 8
    assert verify_chain(tmp_path).broken is None
