"""The metrics side of the Datadog destination: a tailer that reads the store and submits count series.

The delivery engine ships *records* as logs, batch by batch, through its cursors. Metrics are different: a Datadog
count point is one value per (metric, tags, timestamp) and the last submission wins, so counts must be aggregated
across batches (and across the records and ``metric_points`` tables) before they are sent. The tailer therefore
reads, per store shard of this worker, the ``records`` and ``metric_points`` rows after its own two positions
(persisted as cursors named ``<destination>#series.records`` / ``#series.points`` in the shard's delivery state),
adds their increments to an :class:`~exporters.datadog.series.Aggregator`, and every ``metrics_interval`` submits the
changed buckets with their full totals.

A reader without saved positions (first start, or a new destination on an existing store) starts at the first
row inside the window: older history is neither read nor counted. Positions are saved only after everything read
so far was submitted (or dropped for good); after a restart the
tailer re-reads the last :data:`~exporters.datadog.series.MAX_AGE_SECONDS` of both tables up to its positions to
rebuild bucket totals and cumulative baselines (without sending them), then continues after its positions. So a
crash or restart never double-counts a bucket and never loses a sendable one.

Skips are counted per record or data point (reasons ``too_old``, ``unsupported``, ``invalid``), except
``rejected``, which counts series points the API refused or dropped.

Submission outcomes: 2xx sends; the API's per-point ``errors`` (points it dropped although it answered 202) are
logged and counted (reason ``rejected``); 413 halves the request and resends; 429 / 408 / 5xx / timeouts keep the
buckets changed and wait (``Retry-After`` / ``X-RateLimit-Reset`` honoured); 401/403 mark the destination unhealthy
and keep the buckets until they age out; other 4xx drop the refused series (reason ``rejected``, error logged with
the API's text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.delivery.outcome import Outcome, Permanent, Retry, Success
from collector.delivery.retry import interruptible_sleep
from collector.store import open_reader
from collector.store.api import DeliveryStateStore, ShardLog
from exporters.datadog.series import (
    BRIDGE_KINDS,
    MAX_AGE_SECONDS,
    Aggregator,
    PointConverter,
    build_bodies,
    record_increments,
    split_series,
)

log = logging.getLogger(__name__)

READ_ROWS = 2000
MAX_PASSES = 50
WARMUP_SLACK_SECONDS = 600.0
FINAL_FLUSH_SECONDS = 2.0
AUTH_RETRY_SECONDS = 30.0

SendSeries = Callable[[bytes], Awaitable[tuple[Outcome, list[str]]]]
Count = Callable[[str, int], None]


@dataclass
class _Shard:
    index: int
    state: DeliveryStateStore | None = None
    log: ShardLog | None = None
    records_seq: int = 0
    points_seq: int = 0
    saved: tuple[int, int] = (0, 0)


@dataclass
class TailerStats:
    """What the tailer did, for tests and ``health``."""

    passes: int = 0
    records: int = 0
    points: int = 0
    flushes: int = 0
    series_sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class SeriesTailer:
    """Reads this worker's shards and keeps Datadog's count series up to date (see the module docstring)."""

    def __init__(
        self,
        name: str,
        data_dir: str | Path,
        shards: Sequence[int],
        aggregator: Aggregator,
        converter: PointConverter,
        send: SendSeries,
        *,
        compress: bool,
        interval: float,
        count_skipped: Count | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.data_dir = Path(data_dir)
        self.store = open_reader(data_dir)
        self.shards = [_Shard(i) for i in shards]
        self.aggregator = aggregator
        self.converter = converter
        self.send = send
        self.compress = compress
        self.interval = interval
        self.count_skipped = count_skipped
        self.clock = clock
        self.stats = TailerStats()
        self.not_before = 0.0
        self._warm = False

    @property
    def cursor_names(self) -> tuple[str, str]:
        return f"{self.name}#series.records", f"{self.name}#series.points"

    # -- loop -----------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read, aggregate and submit every ``interval`` until ``stop``; then one last bounded submission."""
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Exception:
                    log.exception("%s: metrics tailer pass failed; trying again", self.name)
                if await interruptible_sleep(self.interval, stop):
                    break
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(self.step(read=False), FINAL_FLUSH_SECONDS)
        finally:
            await asyncio.to_thread(self.close)

    async def step(self, read: bool = True) -> None:
        """One pass: catch up with the shards, then submit what changed (unless waiting out a server delay)."""
        if read:
            await asyncio.to_thread(self.catch_up)
        now = self.clock()
        lost = self.aggregator.expire(now)
        if lost:
            self._skip("too_old", lost)
        if now < self.not_before:
            self.stats.passes += 1
            return
        if self.aggregator.dirty:
            await self.flush()
        if not self.aggregator.dirty:
            await asyncio.to_thread(self._save_positions)
        self.stats.passes += 1

    # -- reading (worker thread) ------------------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Read everything new in every shard (bounded passes), adding increments to the aggregator."""
        if not self._warm:
            self._warm_up()
            self._warm = True
        for shard in self.shards:
            if not self._open(shard):
                continue
            for _ in range(MAX_PASSES):
                if not self._read_once(shard):
                    break

    def _open(self, shard: _Shard) -> bool:
        if shard.log is not None:
            return True
        if not self.store.has_shard(shard.index):
            return False
        log_ = self.store.shard_log(shard.index)
        state = self.store.delivery_state(shard.index)
        rname, pname = self.cursor_names
        records_seq, points_seq = state.cursor(rname, -1), state.cursor(pname, -1)
        saved = (records_seq, points_seq)
        try:
            if records_seq < 0 or points_seq < 0:
                since_ms = int((self.clock() - MAX_AGE_SECONDS) * 1000)
                if records_seq < 0:
                    records_seq = log_.first_position("records", since_ms)
                if points_seq < 0:
                    points_seq = log_.first_position("metric_points", since_ms)
                saved = (-1, -1)
        except BaseException:
            log_.close()
            state.close()
            raise
        shard.log, shard.state, shard.saved = log_, state, saved
        shard.records_seq, shard.points_seq = records_seq, points_seq
        return True

    def _warm_up(self) -> None:
        """Rebuild bucket totals and cumulative baselines from what was read before the last restart."""
        now = self.clock()
        since_ms = int((now - MAX_AGE_SECONDS - WARMUP_SLACK_SECONDS) * 1000)
        for shard in self.shards:
            if not self._open(shard) or shard.log is None:
                continue
            if shard.records_seq:
                for t_ms, body in shard.log.records_between(since_ms, shard.records_seq):
                    for inc in record_increments(orjson.loads(body), t_ms / 1000):
                        self.aggregator.add(inc, now, mark_dirty=False)
            if shard.points_seq:
                for body in shard.log.points_between(since_ms, shard.points_seq):
                    converted = self.converter.convert(orjson.loads(body), now)
                    if not isinstance(converted, str):
                        self.aggregator.add(converted, now, mark_dirty=False)

    def _read_once(self, shard: _Shard) -> bool:
        """One chunk of each table; True when more may be waiting."""
        assert shard.log is not None
        now = self.clock()
        oldest_ms = int((now - MAX_AGE_SECONDS) * 1000)
        rows = shard.log.records_after(shard.records_seq, READ_ROWS, min_time_ms=oldest_ms)
        too_old = 0
        for seq, t_ms, kind, body in rows:
            shard.records_seq = seq
            self.stats.records += 1
            if kind in BRIDGE_KINDS:
                continue
            if body is None:
                too_old += 1
                continue
            added = [self.aggregator.add(inc, now) for inc in record_increments(orjson.loads(body), t_ms / 1000)]
            if not all(added):
                too_old += 1
        more = len(rows) == READ_ROWS
        points = shard.log.points_after(shard.points_seq, READ_ROWS)
        for seq, body in points:
            shard.points_seq = seq
            self.stats.points += 1
            inc = self.converter.convert(orjson.loads(body), now)
            if isinstance(inc, str):
                if inc != "baseline":
                    self._skip(inc, 1)
            elif not self.aggregator.add(inc, now):
                too_old += 1
        if too_old:
            self._skip("too_old", too_old)
        self.converter.prune(now)
        return more or len(points) == READ_ROWS

    def _save_positions(self) -> None:
        rname, pname = self.cursor_names
        for shard in self.shards:
            if shard.state is None:
                continue
            current = (shard.records_seq, shard.points_seq)
            if current != shard.saved:
                shard.state.set_cursor(rname, shard.records_seq)
                shard.state.set_cursor(pname, shard.points_seq)
                shard.saved = current

    def close(self) -> None:
        for shard in self.shards:
            if shard.log is not None:
                shard.log.close()
                shard.log = None
            if shard.state is not None:
                shard.state.close()
                shard.state = None

    # -- submitting --------------------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Submit every changed bucket; keep the ones whose request should be retried."""
        self.stats.flushes += 1
        for group, body in build_bodies(self.aggregator.pending(), self.compress):
            if not await self._submit(group, body):
                return

    async def _submit(self, group: list[dict[str, Any]], body: bytes | None = None) -> bool:
        """Send one group; False when the rest of this flush should wait (retry later)."""
        if body is None:
            bodies = build_bodies(group, self.compress)
            for sub_group, sub_body in bodies:
                if not await self._submit_one(sub_group, sub_body):
                    return False
            return True
        return await self._submit_one(group, body)

    async def _submit_one(self, group: list[dict[str, Any]], body: bytes) -> bool:
        outcome, errors = await self.send(body)
        if isinstance(outcome, Success):
            self.stats.series_sent += len(group)
            if errors:
                log.warning("%s: Datadog dropped %d metric point(s): %s", self.name, len(errors), "; ".join(errors[:3]))
                self._skip("rejected", len(errors))
            self.aggregator.mark_sent(group)
            return True
        if isinstance(outcome, Permanent) and outcome.status == 413:
            halves = split_series(group)
            if halves:
                for half in halves:
                    if not await self._submit(half):
                        return False
                return True
        if isinstance(outcome, Permanent) and outcome.status not in (401, 403):
            log.error("%s: Datadog refused %d series for good: %s", self.name, len(group), outcome.reason)
            self._skip("rejected", sum(len(item["points"]) for item in group))
            self.aggregator.mark_sent(group)
            return True
        if isinstance(outcome, Retry):
            delay = outcome.delay if outcome.delay is not None else self.interval
            log.warning("%s: metrics submission will be retried in %.1fs: %s", self.name, delay, outcome.reason)
        else:
            delay = max(self.interval, AUTH_RETRY_SECONDS)
        self.not_before = self.clock() + delay
        return False

    def _skip(self, reason: str, n: int) -> None:
        self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + n
        if self.count_skipped is not None:
            self.count_skipped(reason, n)
