"""Reads of the embedded store through the storage interface (``collector.store.reader``)."""

from __future__ import annotations

import threading

import orjson
import pytest

from collector.delivery.engine import all_shards
from collector.store import RecordQuery, StorageError, open_reader
from collector.store.sqlite import AuditStore, shard_path
from exporters.base import DeliveryRecord


def rec(i: int, kind: str = "event", session: str | None = None, t: int | None = None) -> tuple:
    body = orjson.dumps({"id": f"{i:032x}", "kind": kind, "session": session})
    return (f"{i:032x}", t if t is not None else i, kind, None, None, session, i, body)


def point(t: int, key: str, temporality: str) -> tuple[int, str, str, bytes]:
    body = orjson.dumps({"name": "m", "temporality": temporality, "time_unix_nano": t * 1_000_000, "value": 1})
    return (t, key, "m", body)


def test_shard_reader_is_usable_from_any_thread(tmp_path):
    """Regression: the engine calls the reader through ``asyncio.to_thread``, i.e. from any executor thread."""
    with AuditStore(tmp_path) as store:
        store.append_sync(records=[(f"{i:032x}", i, "event", None, None, None, i, b"{}") for i in range(1, 6)])
    reader = open_reader(tmp_path).shard_log(0)
    assert reader.last_seq() == 5  # opened in this thread
    errors: list[BaseException] = []

    def other() -> None:
        try:
            records, oldest = reader.read_after(0, 10, 1 << 20, DeliveryRecord)
            assert [r.seq for r in records] == [1, 2, 3, 4, 5] and isinstance(records[0], DeliveryRecord)
            assert oldest == 1
            assert reader.average_size() == 2.0
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    reader.close()
    assert errors == []


def test_seq_reads_for_tailers(tmp_path):
    with AuditStore(tmp_path, shard=2) as store:
        store.append_sync(
            records=[rec(i, t=1000 * i) for i in range(1, 6)],
            metrics=[point(1000, "a", "cumulative"), point(2000, "b", "delta"), point(3000, "c", "cumulative")],
        )
    reader = open_reader(tmp_path)
    assert reader.shards() == [2] == all_shards(tmp_path)
    assert reader.has_shard(2) and not reader.has_shard(0)
    log = reader.shard_log(2)
    try:
        assert log.end_positions() == (5, 3)
        assert log.first_position("records", 3000) == 2
        assert log.first_position("records", 10**9) == 5
        assert log.first_position("metric_points", 0) == 0
        rows = log.records_after(3, 10, min_time_ms=5000)
        assert [(s, t, k) for s, t, k, _ in rows] == [(4, 4000, "event"), (5, 5000, "event")]
        assert rows[0][3] is None and rows[1][3] is not None
        assert [s for s, _ in log.points_after(1, 10)] == [2, 3]
        assert [t for t, _ in log.records_between(2000, 3)] == [2000, 3000]
        cumulative = log.points_between(0, 3, cumulative_only=True)
        assert [orjson.loads(b)["time_unix_nano"] for b in cumulative] == [1_000_000_000, 3_000_000_000]
        assert len(list(log.points_between(0, 3, newest=1))) == 1
        with pytest.raises(ValueError):
            log.first_position("spans", 0)
    finally:
        log.close()


def test_a_shard_without_tables_is_not_ready(tmp_path):
    path = shard_path(tmp_path, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    log = open_reader(tmp_path).shard_log(0)
    with pytest.raises(StorageError) as err:
        log.end_positions()
    assert err.value.reason == "not_ready"
    log.close()


def test_query_views_and_merged_records(tmp_path):
    with AuditStore(tmp_path, shard=0) as a, AuditStore(tmp_path, shard=1) as b:
        a.append_sync(records=[rec(1, "tool_decision", "s1", 10), rec(2, "tool_result", "s1", 20)])
        b.append_sync(records=[rec(3, "tool_decision", "s2", 15), rec(1, "tool_decision", "s1", 10)])
    reader = open_reader(tmp_path)
    ids = [orjson.loads(x)["id"] for x in reader.iter_records(RecordQuery())]
    assert ids == [f"{1:032x}", f"{3:032x}", f"{2:032x}"]  # time order, the copy in shard 1 once
    view = reader.shard_view(0)
    try:
        assert list(view.sessions_with("tool_decision", 0, 100, None)) == ["s1"]
        got = list(view.session_records("s1", [("tool_decision", 0, 100), ("tool_result", 0, 15)]))
        assert [t for t, *_ in got] == [10] and got[0][3] is not None
    finally:
        view.close()
    report = reader.verify_chain()
    assert report.broken is None and report.shards == 2 and report.records == 4
    with pytest.raises(StorageError):
        list(open_reader(tmp_path / "nothing").iter_records(RecordQuery()))
