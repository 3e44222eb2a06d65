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
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.delivery.outcome import Outcome, Permanent, Retry, Success
from collector.delivery.retry import interruptible_sleep
from collector.delivery.state import DeliveryState
from collector.store.sqlite import connect, shard_path
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
    path: Path
    state: DeliveryState | None = None
    conn: sqlite3.Connection | None = None
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
        self.shards = [_Shard(i, shard_path(data_dir, i)) for i in shards]
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
        if shard.conn is not None:
            return True
        if not shard.path.exists():
            return False
        shard.conn = connect(shard.path, readonly=True)
        shard.state = DeliveryState.for_shard(self.data_dir, shard.index)
        rname, pname = self.cursor_names
        shard.records_seq = shard.state.cursor(rname, -1)
        shard.points_seq = shard.state.cursor(pname, -1)
        if shard.records_seq < 0 or shard.points_seq < 0:
            since_ms = int((self.clock() - MAX_AGE_SECONDS) * 1000)
            if shard.records_seq < 0:
                shard.records_seq = self._first_position(shard.conn, "records", since_ms)
            if shard.points_seq < 0:
                shard.points_seq = self._first_position(shard.conn, "metric_points", since_ms)
            shard.saved = (-1, -1)
        else:
            shard.saved = (shard.records_seq, shard.points_seq)
        return True

    @staticmethod
    def _first_position(conn: sqlite3.Connection, table: str, since_ms: int) -> int:
        """Where a new reader starts: before the first row inside the window (older history is not read at all)."""
        first = conn.execute(f"SELECT MIN(seq) FROM {table} WHERE time_ms >= ?", (since_ms,)).fetchone()[0]
        if first is not None:
            return int(first) - 1
        last = conn.execute(f"SELECT MAX(seq) FROM {table}").fetchone()[0]
        return int(last or 0)

    def _warm_up(self) -> None:
        """Rebuild bucket totals and cumulative baselines from what was read before the last restart."""
        now = self.clock()
        since_ms = int((now - MAX_AGE_SECONDS - WARMUP_SLACK_SECONDS) * 1000)
        for shard in self.shards:
            if not self._open(shard) or shard.conn is None:
                continue
            if shard.records_seq:
                rows = shard.conn.execute(
                    "SELECT time_ms, body FROM records WHERE time_ms >= ? AND seq <= ? ORDER BY seq",
                    (since_ms, shard.records_seq),
                )
                for t_ms, body in rows:
                    for inc in record_increments(orjson.loads(body), t_ms / 1000):
                        self.aggregator.add(inc, now, mark_dirty=False)
            if shard.points_seq:
                rows = shard.conn.execute(
                    "SELECT body FROM metric_points WHERE time_ms >= ? AND seq <= ? ORDER BY seq",
                    (since_ms, shard.points_seq),
                )
                for (body,) in rows:
                    inc = self.converter.convert(orjson.loads(body), now)
                    if not isinstance(inc, str):
                        self.aggregator.add(inc, now, mark_dirty=False)

    def _read_once(self, shard: _Shard) -> bool:
        """One chunk of each table; True when more may be waiting."""
        assert shard.conn is not None
        now = self.clock()
        oldest_ms = int((now - MAX_AGE_SECONDS) * 1000)
        rows = shard.conn.execute(
            "SELECT seq, time_ms, kind, CASE WHEN time_ms >= ? THEN body END FROM records WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (oldest_ms, shard.records_seq, READ_ROWS),
        ).fetchall()
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
        points = shard.conn.execute(
            "SELECT seq, body FROM metric_points WHERE seq > ? ORDER BY seq LIMIT ?",
            (shard.points_seq, READ_ROWS),
        ).fetchall()
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
            if shard.conn is not None:
                shard.conn.close()
                shard.conn = None
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
