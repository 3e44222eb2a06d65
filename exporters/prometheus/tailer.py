"""Feeds the accumulator by tailing every store shard read-only (metric points and records), through the store.

Runs in the primary worker. Each shard has an in-memory cursor per table that starts at the shard's end when the
tailer starts: exported counters restart at zero after a bridge restart (Prometheus treats the drop as a counter
reset, so ``rate()``/``increase()`` stay right). The first poll starts with a *warm-up*: it reads the cumulative
metric points of the last ``series_expiration`` stored before the start without counting them, so cumulative streams
resume from their last value instead of being counted in full again (positioning is instant; the warm-up runs in the
background and never delays start-up). A shard that appears later (a worker started after the tailer) is read from
its beginning.

Every poll (``poll_interval``) reads up to ``poll_batch`` new rows per table and shard in a worker thread
(:func:`asyncio.to_thread`); it keeps polling without pause while a shard has more. Metric points of one poll are
applied in time order across shards, so a stream whose points landed in two shards is not seen out of order. A read
error is logged, counted and retried on the next poll; it never stops ingestion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.store import StorageError, open_reader
from collector.store.api import ShardLog
from exporters.prometheus.accumulator import EVENT_KINDS, Accumulator

log = logging.getLogger(__name__)

WARMUP_MAX_ROWS = 500_000
EXPIRE_EVERY_S = 10.0
_RECORD_KINDS = tuple(sorted(EVENT_KINDS))


@dataclass
class _Shard:
    index: int
    log: ShardLog | None = None
    cursors: dict[str, int] = field(default_factory=lambda: {"metric_points": 0, "records": 0})
    positioned: bool = True

    @property
    def name(self) -> str:
        return f"shard {self.index}"


class StoreTailer:
    """Reads new rows from every shard under ``data_dir`` into an :class:`Accumulator`."""

    def __init__(
        self,
        data_dir: str | Path,
        accumulator: Accumulator,
        *,
        poll_interval: float = 1.0,
        poll_batch: int = 5000,
        warmup: bool = True,
    ) -> None:
        if poll_batch < 1:
            raise ValueError("poll_batch must be >= 1")
        self.data_dir = Path(data_dir)
        self.store = open_reader(data_dir)
        self.accumulator = accumulator
        self.poll_interval = poll_interval
        self.poll_batch = poll_batch
        self.warmup = warmup
        self.shards: dict[int, _Shard] = {}
        self.errors = 0
        self.last_success = 0.0
        self.rows_read = {"metric_points": 0, "records": 0}
        self._last_expire = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()
        self._logged: set[str] = set()
        self._warm_plan: list[tuple[_Shard, int]] = []

    def stats(self) -> dict[str, float]:
        return {
            "errors": float(self.errors),
            "last_success": self.last_success,
            "records_read": float(self.rows_read["records"]),
            "points_read": float(self.rows_read["metric_points"]),
        }

    # -----------------------------------------------------------------------------------------------------------
    # lifecycle

    async def start(self) -> None:
        """Position the cursors at the end of every existing shard, then poll periodically (warm-up first)."""
        async with self._busy:
            await asyncio.to_thread(self.initialize)
        self._task = asyncio.create_task(self._run(), name="prometheus-tailer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._busy:
            await asyncio.to_thread(self.close)

    async def poll(self) -> int:
        """One poll now (tests and the periodic task): rows read. Never runs two at once."""
        async with self._busy:
            return await asyncio.to_thread(self.poll_once)

    async def _run(self) -> None:
        while True:
            try:
                n = await self.poll()
            except Exception as exc:  # a bug must not kill the loop; the next poll tries again
                self.errors += 1
                log.error("prometheus tailer poll failed: %s", exc)
                n = 0
            if n < self.poll_batch:
                await asyncio.sleep(self.poll_interval)
            else:
                await asyncio.sleep(0)

    def close(self) -> None:
        for shard in self.shards.values():
            self._close_shard(shard)

    # -----------------------------------------------------------------------------------------------------------
    # reading (worker thread; one at a time)

    def initialize(self) -> None:
        """Cursors at the end of every shard present now (fast); the warm-up runs at the start of the first poll."""
        for index in self.store.shards():
            shard = _Shard(index, positioned=False)
            self.shards[index] = shard
            log_ = self._log(shard)
            try:
                self._position(shard, log_)
            except StorageError as exc:
                if exc.reason == "not_ready":
                    shard.positioned = True  # created this instant: nothing stored before the tailer started
                self._failed(shard, exc)
                continue
            if self.warmup:
                self._warm_plan.append((shard, shard.cursors["metric_points"]))

    def _warm_up(self) -> None:
        """Re-learn cumulative streams from the last ``series_expiration`` of stored points, without counting them.

        Only cumulative points are read (filtered by the store): delta streams need no history to be counted right.
        """
        cutoff_ms = int((time.time() - self.accumulator.expiration) * 1000)
        plan, self._warm_plan = self._warm_plan, []
        warm: list[dict[str, Any]] = []
        for shard, end in plan:
            log_ = self._log(shard)
            try:
                bodies = log_.points_between(cutoff_ms, end, cumulative_only=True, newest=WARMUP_MAX_ROWS)
            except StorageError as exc:
                self._failed(shard, exc)
                continue
            warm.extend(_loads(b) for b in bodies)
        warm.sort(key=_point_time)
        for p in warm:
            self.accumulator.add_point(p, count=False)
        if warm:
            log.info("prometheus exporter: warm-up re-learned %d recent cumulative metric points", len(warm))

    def poll_once(self) -> int:
        """Read and apply new rows of every shard; returns the largest batch read from one table of one shard."""
        if self._warm_plan:
            self._warm_up()
        for index in self.store.shards():
            if index not in self.shards:
                self.shards[index] = _Shard(index)  # appeared after start: every row is new
        points: list[dict[str, Any]] = []
        largest = 0
        ok = True
        for shard in self.shards.values():
            log_ = self._log(shard)
            try:
                if not shard.positioned:
                    self._position(shard, log_)
                largest = max(largest, self._read_points(shard, log_, points))
                largest = max(largest, self._read_records(shard, log_))
            except StorageError as exc:
                self._failed(shard, exc)
                ok = False
        points.sort(key=_point_time)
        for p in points:
            self.accumulator.add_point(p)
        now = time.monotonic()
        if now - self._last_expire >= min(EXPIRE_EVERY_S, self.accumulator.expiration / 10):
            self._last_expire = now
            self.accumulator.expire()
        if ok:
            self.last_success = time.time()
        return largest

    @staticmethod
    def _position(shard: _Shard, log_: ShardLog) -> None:
        """Cursors at the shard's current end (what was stored before the tailer started is not counted)."""
        records, points = log_.end_positions()
        shard.cursors["records"], shard.cursors["metric_points"] = records, points
        shard.positioned = True

    def _read_points(self, shard: _Shard, log_: ShardLog, out: list[dict[str, Any]]) -> int:
        rows = log_.points_after(shard.cursors["metric_points"], self.poll_batch)
        if rows:
            out.extend(_loads(body) for _, body in rows)
            shard.cursors["metric_points"] = int(rows[-1][0])
            self.rows_read["metric_points"] += len(rows)
        return len(rows)

    def _read_records(self, shard: _Shard, log_: ShardLog) -> int:
        """Count the shard's next records into the accumulator, parsing one at a time (a parsed record is about ten
        times its JSON in memory, so a whole poll's worth is never held at once)."""
        rows = log_.records_after(shard.cursors["records"], self.poll_batch)
        if rows:
            add = self.accumulator.add_record
            for _, _, kind, body in rows:
                if kind in EVENT_KINDS:
                    add(_loads(body))
            shard.cursors["records"] = int(rows[-1][0])
            self.rows_read["records"] += len(rows)
        return len(rows)

    def _log(self, shard: _Shard) -> ShardLog:
        if shard.log is None:
            shard.log = self.store.shard_log(shard.index)
        return shard.log

    def _failed(self, shard: _Shard, exc: StorageError) -> None:
        """A shard that is not readable yet or failing: reopen it on the next poll.

        A shard a worker is creating this instant (file there, tables not yet) is not an error. Anything else is
        counted and logged once per message. A shard that existed at start but could not be positioned then is
        positioned at its end once readable, so a transient error never makes its whole history count again.
        """
        message = exc.detail
        self._close_shard(shard)
        if exc.reason == "not_ready":
            log.debug("prometheus exporter: %s is being created", shard.name)
            return
        self.errors += 1
        if message not in self._logged:
            self._logged.add(message)
            log.warning("prometheus exporter cannot read %s (retrying each poll): %s", shard.name, message)

    @staticmethod
    def _close_shard(shard: _Shard) -> None:
        if shard.log is not None:
            shard.log.close()
            shard.log = None


def _loads(body: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(bytes(body) if isinstance(body, memoryview) else body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _point_time(p: dict[str, Any]) -> int:
    t = p.get("time_unix_nano")
    return t if isinstance(t, int) else 0
