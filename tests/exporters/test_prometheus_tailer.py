"""The store tailer: cursors at the end at start, warm-up, new shards, cross-shard order and dedupe, errors."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.pipeline import metric_point_key, record_row
from collector.store.sqlite import AuditStore, shard_path
from exporters.prometheus.accumulator import Accumulator
from exporters.prometheus.tailer import StoreTailer

S = 1_000_000_000
T0 = 1_795_643_831 * S
COST = "claude_code_cost_usage_usd_total"
REQUESTS = "claude_code_api_requests_total"


def point(value: float, start: int, end: int, temporality: str = "delta", session: str = "s1") -> dict[str, Any]:
    return {
        "name": "claude_code.cost.usage",
        "unit": "USD",
        "description": "",
        "type": "sum",
        "temporality": temporality,
        "monotonic": True,
        "attributes": {"session.id": session, "user.id": "u1", "model": "m", "query_source": "main"},
        "resource": {"service.name": "claude-code"},
        "scope": {"name": "com.anthropic.claude_code", "version": "2.1.332"},
        "start_time_unix_nano": start,
        "time_unix_nano": end,
        "value": value,
    }


def api_request(rid: str, cost: float = 1.0) -> dict[str, Any]:
    return {"id": rid, "kind": "api_request", "model": "m", "cost_usd": cost, "session": {"id": "s1"}}


class Stores:
    """Shards of one data directory, opened on demand, closed at teardown."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.open: dict[int, AuditStore] = {}

    def shard(self, i: int) -> AuditStore:
        if i not in self.open:
            self.open[i] = AuditStore(self.data_dir, shard=i, synchronous="normal").open()
        return self.open[i]

    def add(self, i: int, points: Sequence[dict[str, Any]] = (), records: Sequence[dict[str, Any]] = ()) -> None:
        metrics = [(p["time_unix_nano"] // 1_000_000, metric_point_key(p), p["name"], orjson.dumps(p)) for p in points]
        rows = [record_row(r, T0, int(time.time() * 1000)) for r in records]
        self.shard(i).append_sync(records=rows, metrics=metrics)

    def close(self) -> None:
        for s in self.open.values():
            s.close()
        self.open.clear()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    s = Stores(tmp_path / "data")
    yield s
    s.close()


def tailer(stores: Stores, **kw: Any) -> tuple[StoreTailer, Accumulator]:
    acc = Accumulator()
    return StoreTailer(stores.data_dir, acc, **kw), acc


def now_ns() -> int:
    return time.time_ns()


def test_starts_at_the_end_of_each_shard(stores: Stores) -> None:
    stores.add(0, [point(5.0, T0, T0 + 60 * S)], [api_request("old")])
    t, acc = tailer(stores)
    t.initialize()
    assert t.poll_once() == 0
    assert acc.value(COST, model="m", query_source="main") is None  # stored before start: not counted
    stores.add(0, [point(1.5, T0 + 60 * S, T0 + 120 * S)], [api_request("new", 0.25)])
    assert t.poll_once() == 1
    assert acc.value(COST, model="m", query_source="main") == 1.5
    assert acc.value(REQUESTS, model="m") == 1.0
    assert acc.value("claude_code_api_cost_usd_total", model="m") == 0.25
    assert t.rows_read == {"metric_points": 1, "records": 1}
    assert t.last_success > 0
    t.close()


def test_warmup_resumes_cumulative_streams_after_a_restart(stores: Stores) -> None:
    start = now_ns() - 120 * S
    stores.add(0, [point(3.0, start, start + 60 * S, "cumulative")])
    t, acc = tailer(stores)
    t.initialize()
    stores.add(0, [point(3.5, start, start + 90 * S, "cumulative")])
    t.poll_once()
    assert acc.value(COST, model="m", query_source="main") == 0.5  # not 3.5: the session was counted before
    t.close()

    cold, acc2 = tailer(stores, warmup=False)
    cold.initialize()
    stores.add(0, [point(4.0, start, start + 100 * S, "cumulative")])
    cold.poll_once()
    assert acc2.value(COST, model="m", query_source="main") == 4.0  # without warm-up it would count it all
    cold.close()


def test_a_shard_created_later_is_read_from_its_start(stores: Stores) -> None:
    stores.add(0, [], [api_request("a")])
    t, acc = tailer(stores)
    t.initialize()
    stores.add(1, [point(2.0, T0, T0 + 60 * S)], [api_request("b")])
    t.poll_once()
    assert acc.value(COST, model="m", query_source="main") == 2.0
    assert acc.value(REQUESTS, model="m") == 1.0
    t.close()


def test_points_of_one_poll_apply_in_time_order_across_shards(stores: Stores) -> None:
    """A stream's later point in shard 0 and earlier one in shard 1 (two workers): both count."""
    stores.add(0, [], [])
    stores.add(1, [], [])
    t, acc = tailer(stores)
    t.initialize()
    stores.add(0, [point(2.0, T0 + 60 * S, T0 + 120 * S)])
    stores.add(1, [point(1.0, T0, T0 + 60 * S)])
    t.poll_once()
    assert acc.value(COST, model="m", query_source="main") == 3.0
    assert acc.stats().ignored == {}
    t.close()


def test_a_retry_stored_in_two_shards_counts_once(stores: Stores) -> None:
    stores.add(0, [], [])
    stores.add(1, [], [])
    t, acc = tailer(stores)
    t.initialize()
    p = point(1.0, T0, T0 + 60 * S)
    stores.add(0, [p], [api_request("same")])
    stores.add(1, [p], [api_request("same")])
    t.poll_once()
    assert acc.value(COST, model="m", query_source="main") == 1.0
    assert acc.value(REQUESTS, model="m") == 1.0
    assert acc.stats().ignored == {"out_of_order": 1, "duplicate_record": 1}
    t.close()


def test_backlog_is_read_in_batches(stores: Stores) -> None:
    stores.add(0, [], [])
    t, acc = tailer(stores, poll_batch=3)
    t.initialize()
    stores.add(0, [], [api_request(f"r{i}") for i in range(10)])
    sizes = [t.poll_once() for _ in range(5)]
    assert sizes == [3, 3, 3, 1, 0]
    assert acc.value(REQUESTS, model="m") == 10.0
    t.close()


def test_unreadable_shard_is_counted_retried_and_positioned_at_its_end(stores: Stores) -> None:
    stores.add(0, [], [])
    bad = shard_path(stores.data_dir, 3)
    bad.write_bytes(b"this is not a database" * 100)
    t, acc = tailer(stores)
    t.initialize()
    assert t.errors >= 1
    stores.add(0, [], [api_request("ok")])
    t.poll_once()
    assert acc.value(REQUESTS, model="m") == 1.0  # the healthy shard is still read
    errors = t.errors
    t.poll_once()
    assert t.errors > errors  # retried every poll
    # the shard becomes readable with history in it: that history must not be counted
    bad.unlink()
    stores.add(3, [], [api_request(f"h{i}") for i in range(5)])
    t.poll_once()
    assert acc.value(REQUESTS, model="m") == 1.0
    stores.add(3, [], [api_request("after")])
    t.poll_once()
    assert acc.value(REQUESTS, model="m") == 2.0
    t.close()


def test_a_shard_being_created_at_start_is_not_an_error_and_is_read_from_its_start(stores: Stores) -> None:
    stores.add(0, [], [])
    path = shard_path(stores.data_dir, 1)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # the file exists, its tables do not yet
        conn.execute("PRAGMA user_version = 1")
    t, acc = tailer(stores)
    t.initialize()
    t.poll_once()
    assert t.errors == 0
    stores.add(1, [point(2.0, T0, T0 + 60 * S)], [api_request("first")])
    t.poll_once()
    assert acc.value(COST, model="m", query_source="main") == 2.0
    assert acc.value(REQUESTS, model="m") == 1.0
    t.close()


async def test_periodic_polling_and_stop(stores: Stores) -> None:
    stores.add(0, [], [])
    t, acc = tailer(stores, poll_interval=0.05)
    await t.start()
    try:
        await asyncio.to_thread(stores.add, 0, [], [api_request("x")])
        deadline = time.monotonic() + 5
        while acc.value(REQUESTS, model="m") != 1.0:
            assert time.monotonic() < deadline, "the tailer did not pick up the new record"
            await asyncio.sleep(0.02)
    finally:
        await t.stop()
    assert all(s.log is None for s in t.shards.values())


def test_empty_data_dir_and_bad_arguments(tmp_path: Path) -> None:
    t = StoreTailer(tmp_path / "nothing", Accumulator())
    t.initialize()
    assert t.poll_once() == 0
    with pytest.raises(ValueError, match="poll_batch"):
        StoreTailer(tmp_path, Accumulator(), poll_batch=0)
