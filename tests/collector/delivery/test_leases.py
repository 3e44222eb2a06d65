"""The engine follows its delivery assignment: workers start and stop as (destination, shard) leases come and go."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from collector.config import StorageConfig
from collector.delivery.api import DeliveryRecord, Exporter, Payload
from collector.delivery.engine import DeliveryEngine
from collector.delivery.leases import StaticAssignment
from collector.delivery.outcome import Outcome, Success
from collector.delivery.settings import BatchSettings, DestinationSettings
from collector.store import open_reader, open_store
from collector.store.api import AssignmentChange, DeliveryStateStore, LeaseLost, StoreReader
from collector.telemetry.selfmetrics import SelfMetrics


class Collecting(Exporter):
    type_name = "collecting"
    config_class = DestinationSettings

    def __init__(self, name: str) -> None:
        super().__init__(name, DestinationSettings(batch=BatchSettings(max_records=10, timeout=0.01)))  # type: ignore[arg-type]
        self.got: list[str] = []

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(list(records), b"")]

    async def push(self, payload: Payload) -> Outcome:
        self.got += [r.id for r in payload.records]
        return Success()


class Scripted:
    """An assignment whose held pairs the test sets; records what was released."""

    dynamic = True
    interval = 0.05

    def __init__(self, store: StoreReader) -> None:
        self.store = store
        self.held: set[tuple[str, int]] = set()
        self.shed: set[tuple[str, int]] = set()
        self.released: list[tuple[str, int]] = []
        self.closed = False
        self._before: frozenset[tuple[str, int]] = frozenset()

    async def refresh(self, destinations: Sequence[str]) -> AssignmentChange:
        held = frozenset(self.held)
        ch = AssignmentChange(held, held - self._before, self._before - held, frozenset(self.shed))
        self._before = held
        return ch

    async def release(self, pairs: Sequence[tuple[str, int]]) -> None:
        self.released += pairs
        self.held -= set(pairs)
        self.shed -= set(pairs)

    async def close(self) -> None:
        self.closed = True

    def delivery_state(self, shard: int) -> DeliveryStateStore:
        return self.store.delivery_state(shard)


def _store(directory: Path, shards: int, per_shard: int) -> None:
    cfg = StorageConfig(directory=str(directory))
    now = int(time.time() * 1000)
    for shard in range(shards):
        st = open_store(cfg, shard=shard).open()
        rows = [
            (f"s{shard}-{i}", now, "prompt", None, None, None, now, orjson.dumps({"id": f"s{shard}-{i}"}))
            for i in range(per_shard)
        ]
        st.append_sync(rows)
        st.close()


async def _until(pred, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_workers_follow_leases(tmp_path: Path) -> None:
    _store(tmp_path, shards=2, per_shard=5)
    exp = Collecting("dest")
    assignment = Scripted(open_reader(tmp_path))
    assignment.held = {("dest", 0)}
    engine = DeliveryEngine(tmp_path, [], [exp], SelfMetrics(CollectorRegistry()), assignment=assignment)
    await engine.start()
    try:
        await _until(lambda: len(exp.got) == 5, "shard 0 delivered")
        assert set(exp.got) == {f"s0-{i}" for i in range(5)}
        assert set(engine._running) == {("dest", 0)}
        assignment.held.add(("dest", 1))  # acquired
        await _until(lambda: len(exp.got) == 10, "shard 1 delivered")
        assignment.held.discard(("dest", 0))  # lost to another replica
        await _until(lambda: set(engine._running) == {("dest", 1)}, "shard 0 stopped")
        assignment.shed = {("dest", 1)}  # handed over: stopped first, then released
        await _until(lambda: assignment.released == [("dest", 1)], "shard 1 released")
        assert engine._running == {} and engine.workers == []
        assert sorted(exp.got) == sorted(f"s{s}-{i}" for s in range(2) for i in range(5))  # each exactly once
    finally:
        await engine.stop(5)
    assert assignment.closed
    state = open_reader(tmp_path).delivery_state(1)
    assert state.cursor("dest") == 5  # saved before the hand-over
    state.close()


async def test_a_worker_that_loses_its_lease_stops_instead_of_retrying(tmp_path: Path) -> None:
    _store(tmp_path, shards=1, per_shard=3)
    exp = Collecting("dest")
    assignment = Scripted(open_reader(tmp_path))
    assignment.held = {("dest", 0)}
    engine = DeliveryEngine(tmp_path, [], [exp], SelfMetrics(CollectorRegistry()), assignment=assignment)
    real = assignment.store.delivery_state

    def fenced(shard: int):  # type: ignore[no-untyped-def]
        st = real(shard)

        def refuse(destination: str, seq: int) -> None:
            raise LeaseLost(destination, shard, "fenced update refused")

        st.set_cursor = refuse  # type: ignore[method-assign]
        return st

    assignment.store.delivery_state = fenced  # type: ignore[method-assign]
    await engine.start()
    try:
        await _until(lambda: len(exp.got) == 3, "sent once")
        w, task, _ = engine._running[("dest", 0)]
        await asyncio.wait_for(task, 5)  # ended by itself, not restarted
        assert task.done() and task.exception() is None and w.cursor == 3
        await asyncio.sleep(0.3)
        assert len(exp.got) == 3
    finally:
        await engine.stop(5)


async def test_static_assignment_is_every_destination_on_existing_shards(tmp_path: Path) -> None:
    _store(tmp_path, shards=1, per_shard=1)
    st = StaticAssignment(open_reader(tmp_path), [0, 3])
    ch = await st.refresh(["a", "b"])
    assert ch.held == {("a", 0), ("b", 0)} and not st.dynamic


@pytest.mark.parametrize("shards", [[0], [0, 1]])
async def test_embedded_store_engine_delivers_its_shards_without_a_lease_loop(
    tmp_path: Path, shards: list[int]
) -> None:
    _store(tmp_path, shards=2, per_shard=2)
    exp = Collecting("dest")
    engine = DeliveryEngine(tmp_path, shards, [exp], SelfMetrics(CollectorRegistry()))
    await engine.start()
    try:
        await _until(lambda: len(exp.got) == 2 * len(shards), "delivered")
        assert not any(t.get_name() == "delivery-leases" for t in engine._tasks)
        assert sorted({w.shard for w in engine.workers}) == shards
    finally:
        await engine.stop(5)


async def test_workers_stop_when_the_leases_cannot_be_renewed_for_a_ttl(tmp_path: Path) -> None:
    _store(tmp_path, shards=1, per_shard=1)

    class Failing(Scripted):
        failing = False

        async def refresh(self, destinations: Sequence[str]) -> AssignmentChange:
            if self.failing:
                raise OSError("database unreachable")
            return await super().refresh(destinations)

    exp = Collecting("dest")
    assignment = Failing(open_reader(tmp_path))
    assignment.held = {("dest", 0)}
    engine = DeliveryEngine(tmp_path, [], [exp], SelfMetrics(CollectorRegistry()), assignment=assignment, lease_ttl=0.3)
    await engine.start()
    try:
        await _until(lambda: set(engine._running) == {("dest", 0)}, "worker started")
        assignment.failing = True
        await asyncio.sleep(0.15)
        assert set(engine._running) == {("dest", 0)}  # a short outage: keeps delivering
        await _until(lambda: not engine._running, "workers stopped after the TTL", timeout=5)
        assignment.failing = False  # the database is back: the lease is renewed, delivery resumes
        await _until(lambda: set(engine._running) == {("dest", 0)}, "worker restarted")
    finally:
        await engine.stop(5)


async def test_a_lease_claimed_again_restarts_its_worker_from_the_saved_cursor(tmp_path: Path) -> None:
    _store(tmp_path, shards=1, per_shard=2)
    exp = Collecting("dest")
    assignment = Scripted(open_reader(tmp_path))
    assignment.held = {("dest", 0)}
    engine = DeliveryEngine(tmp_path, [], [exp], SelfMetrics(CollectorRegistry()), assignment=assignment)
    await engine.start()
    try:
        await _until(lambda: len(exp.got) == 2, "delivered")
        first = engine._running[("dest", 0)][1]

        async def refresh_once(destinations: Sequence[str]) -> AssignmentChange:
            held = frozenset(assignment.held)
            return AssignmentChange(held, held, held, frozenset())

        original = assignment.refresh
        assignment.refresh = refresh_once  # type: ignore[method-assign]
        await _until(lambda: engine._running[("dest", 0)][1] is not first, "worker restarted")
        assignment.refresh = original  # type: ignore[method-assign]
        assert first.done()
        await asyncio.sleep(0.2)
        assert len(exp.got) == 2  # continued from the saved cursor: nothing sent again
    finally:
        await engine.stop(5)


async def test_a_worker_that_cannot_start_is_tried_again_at_the_next_renewal(tmp_path: Path) -> None:
    _store(tmp_path, shards=1, per_shard=2)
    exp = Collecting("dest")

    class Flaky(Scripted):
        failures = 2

        def delivery_state(self, shard: int) -> DeliveryStateStore:
            if self.failures:
                self.failures -= 1
                raise OSError("database unreachable")
            return super().delivery_state(shard)

    assignment = Flaky(open_reader(tmp_path))
    assignment.held = {("dest", 0)}
    engine = DeliveryEngine(tmp_path, [], [exp], SelfMetrics(CollectorRegistry()), assignment=assignment)
    await engine.start()
    try:
        await _until(lambda: len(exp.got) == 2, "delivered once the state could be read")
        assert assignment.failures == 0
    finally:
        await engine.stop(5)
