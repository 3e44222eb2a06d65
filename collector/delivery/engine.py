"""The delivery engine: every destination reads the durable store through its own cursor, independently.

For each (destination, store shard) a :class:`DestinationWorker` reads records after its persisted cursor in
``seq`` order, forms batches (by count, bytes and time), asks the exporter to encode them and pushes the payloads,
with up to ``concurrency`` batches in flight. The cursor advances only over batches whose every record was
confirmed by the destination or moved to dead letters, in order, so a crash re-sends at most the batches that were
in flight (at-least-once).

Failures follow the exporter's typed :mod:`~collector.delivery.outcome`: ``Retry`` (connection errors, timeouts,
408, 429, 5xx) waits (the server's delay, or exponential backoff with jitter capped at ``retry.max_interval``) and
tries again for as long as the destination's backlog is within its limits: an outage never sends records to dead
letters by itself (``retry.max_elapsed_time`` only marks a batch as stalled in the log). ``Permanent`` dead-letters
at once (a 413 for several records first splits them in halves, :meth:`DestinationWorker._split`); ``Partial``
dead-letters the records the destination refused and re-sends the ones it did not take. Shutdown interrupts every
wait; an interrupted batch is simply not confirmed, and is sent again after restart.

When a destination accepts records again after retryable failures, its dead letters are re-sent through the same
loop (``dead_letter.auto_replay``); ``ccbridge dlq replay`` uses that loop too
(:meth:`DestinationWorker.replay_entries`).

A slow or dead destination never blocks ingestion or the other destinations until its own backlog limit: then the
``backpressure`` policy makes receivers answer 429 / RESOURCE_EXHAUSTED (:meth:`DeliveryEngine.admit`), and the
``drop_oldest`` policy moves the oldest undelivered records to dead letters (counted) instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.delivery.api import DeliveryRecord, Exporter, LogThrottle, Payload
from collector.delivery.outcome import Outcome, Partial, Permanent, Retry, Success
from collector.delivery.retry import Backoff, interruptible_sleep
from collector.receivers.status import Backpressure
from collector.store import open_reader
from collector.store.api import DeliveryStateStore, ShardLog, StoreReader
from collector.store.delivery_state import DeadLetter
from collector.telemetry.logs import fields
from collector.telemetry.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

IDLE_POLL_INTERVAL = 0.2
STATS_INTERVAL = 1.0
RETENTION_INTERVAL = 3600.0
RETENTION_BATCH = 10_000


class _Interrupted(Exception):
    """Shutdown interrupted a batch before the destination confirmed it."""


class GaveUp(Exception):
    """A send with a time limit (``dlq replay``) stopped waiting for a destination that keeps failing."""


@dataclass
class Settled:
    """What the destination made of the records of one send: confirmed ones, and groups refused for good as
    ``(records, reason, status, attempts)``."""

    delivered: list[DeliveryRecord] = field(default_factory=list)
    refused: list[tuple[list[DeliveryRecord], str, int | None, int]] = field(default_factory=list)


@dataclass
class BacklogStatus:
    records: int = 0
    bytes: float = 0.0
    oldest_age: float = 0.0
    over_limit: str | None = None


class DestinationWorker:
    """Delivers one shard to one destination."""

    def __init__(
        self,
        exporter: Exporter,
        shard: int,
        reader: ShardLog,
        state: DeliveryStateStore,
        metrics: SelfMetrics,
        stop: asyncio.Event,
        new_data: asyncio.Event,
    ) -> None:
        self.exporter = exporter
        self.name = exporter.name
        self.shard = shard
        self.reader = reader
        self.state = state
        self.metrics = metrics
        self.stop = stop
        self.new_data = new_data
        self.cursor = state.cursor(self.name)
        self.backlog = BacklogStatus()
        self._drop_target = 0
        self._unhealthy = False
        self._last_replay = -math.inf
        self._replay_task: asyncio.Task[tuple[int, int]] | None = None
        self._split_log = LogThrottle(60.0)
        s = exporter.settings
        self.batch = s.batch
        self.concurrency = s.concurrency
        labels = (self.name,)
        self.m_sent = metrics.delivery_sent.labels(*labels)
        self.m_failed = metrics.delivery_failed.labels(*labels)
        self.m_retries = metrics.delivery_retries.labels(*labels)
        self.m_dead = metrics.delivery_dead_letters.labels(*labels)
        self.m_dropped = metrics.delivery_dropped.labels(*labels)
        self.m_latency = metrics.delivery_latency.labels(*labels)
        self.last_success: float | None = None
        self.last_error: tuple[float, str] | None = None

    # -- the main loop -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        inflight: collections.deque[tuple[int, asyncio.Task[None]]] = collections.deque()
        next_seq = self.cursor
        try:
            while not self.stop.is_set():
                if self._drop_target > 0:
                    next_seq = await self._drop_oldest(inflight)
                while len(inflight) < self.concurrency and not self.stop.is_set() and not self._drop_target:
                    records = await self._next_batch(next_seq, wait=not inflight)
                    if not records:
                        break
                    task = asyncio.create_task(self._deliver(records), name=f"deliver-{self.name}-{self.shard}")
                    inflight.append((records[-1].seq, task))
                    next_seq = records[-1].seq
                if not inflight:
                    continue
                await asyncio.wait(
                    [t for _, t in inflight], timeout=STATS_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                )
                self._advance(inflight)
        finally:
            if inflight:
                await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
                self._advance(inflight)
            if self._replay_task is not None and self.stop.is_set():
                await asyncio.gather(self._replay_task, return_exceptions=True)

    def _advance(self, inflight: collections.deque[tuple[int, asyncio.Task[None]]]) -> None:
        """Move the cursor over the completed batches at the head of the window, in order.

        A batch that failed unexpectedly (a bug, not an outcome) stops the window: the rest is cancelled and the
        worker restarts from the cursor, so nothing after the failed batch is confirmed out of order.
        """
        moved = False
        failed: BaseException | None = None
        while inflight and inflight[0][1].done():
            seq, task = inflight[0]
            exc = None if task.cancelled() else task.exception()
            if task.cancelled() or exc is not None:
                failed = exc or asyncio.CancelledError()
                break
            inflight.popleft()
            self.cursor = seq
            moved = True
        if moved:
            self.state.set_cursor(self.name, self.cursor)
        if failed is not None:
            for _, t in inflight:
                t.cancel()
            inflight.clear()
            if not isinstance(failed, _Interrupted | asyncio.CancelledError):
                raise RuntimeError(f"batch delivery failed: {failed!r}") from failed

    async def _next_batch(self, after: int, wait: bool) -> list[DeliveryRecord]:
        """The next batch: full by count or bytes, or what is there once its oldest record waited ``batch.timeout``.

        With ``wait`` False (other batches are in flight) a batch that is neither full nor due is not formed yet.
        """
        b = self.batch
        while not self.stop.is_set() and not self._drop_target:
            records, oldest_ms = await asyncio.to_thread(
                self.reader.read_after, after, b.max_records, b.max_bytes, DeliveryRecord
            )
            if records:
                full = len(records) >= b.max_records or sum(len(r.body) for r in records) >= b.max_bytes * 0.9
                waited = time.time() - oldest_ms / 1000
                if full or waited >= b.timeout:
                    return records
                if not wait:
                    return []
                delay = max(0.01, b.timeout - waited)
            else:
                if not wait:
                    return []
                delay = IDLE_POLL_INTERVAL
            self.new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.new_data.wait(), delay)
        return []

    # -- one batch ------------------------------------------------------------------------------------------------

    async def _deliver(self, records: Sequence[DeliveryRecord]) -> None:
        """Send one batch until every record is confirmed or refused for good; the refused go to dead letters."""
        settled = Settled()
        await self._send(records, settled)
        for refused, reason, status, attempts in settled.refused:
            await self._dead_letter(refused, reason, status, attempts)

    async def _send(
        self, records: Sequence[DeliveryRecord], settled: Settled, give_up_after: float | None = None
    ) -> None:
        """The one delivery loop: encode ``records``, push every payload with retry, act on each outcome.

        Results are added to ``settled`` as they come, so a caller still knows what was confirmed when the send is
        interrupted (shutdown: :class:`_Interrupted`) or, with ``give_up_after`` seconds, abandoned
        (:class:`GaveUp`; only ``dlq replay`` sets it — the engine itself retries for as long as the backlog is within
        its limits).
        """
        try:
            payloads = self.exporter.encode(records)
        except Exception as exc:
            log.exception("%s: cannot encode a batch of %d records", self.name, len(records))
            settled.refused.append((list(records), f"encode failed: {exc}", None, 0))
            return
        finally:
            for r in records:
                r.forget()  # payloads in flight (and awaiting acks) keep the bytes, not the parsed dicts
        if len(payloads) == 1:
            await self._push_with_retry(payloads[0], settled, give_up_after)
            return
        # The requests of one batch go out together: each may wait for its own confirmation (a Splunk indexer
        # acknowledgement takes a poll interval), and the batch counts as delivered only when all are settled.
        results = await asyncio.gather(
            *(self._push_with_retry(p, settled, give_up_after) for p in payloads), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:  # a failure other than a shutdown interruption is the one to report
            raise next((e for e in errors if not isinstance(e, _Interrupted)), errors[0])

    async def _push_with_retry(self, payload: Payload, settled: Settled, give_up_after: float | None) -> None:
        retry = self.exporter.settings.retry
        backoff = Backoff(retry)
        attempts = 0
        stall_at = float(retry.max_elapsed_time)
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                outcome: Outcome = await self.exporter.push(payload)
            except Exception as exc:
                outcome = Retry(f"push raised {type(exc).__name__}: {exc}")
            self.m_latency.observe(time.perf_counter() - started)
            records = list(payload.records)
            n = len(records)
            if isinstance(outcome, Success):
                self.m_sent.inc(n)
                settled.delivered.extend(records)
                self.last_success = time.time()
                f = fields(destination=self.name, shard=self.shard, attempt=attempts, records=n)
                if attempts > 1:
                    log.info("%s: batch of %d delivered after %d attempts", self.name, n, attempts, extra=f)
                elif log.isEnabledFor(logging.DEBUG):
                    log.debug("%s: batch of %d delivered", self.name, n, extra=f)
                self._accepted()
                return
            self.last_error = (time.time(), outcome.reason)
            f = fields(
                destination=self.name,
                shard=self.shard,
                attempt=attempts,
                status=outcome.status,
                records=n,
                error=outcome.reason,
            )
            if isinstance(outcome, Partial):
                await self._partial(outcome, records, attempts, settled, give_up_after)
                return
            if isinstance(outcome, Permanent) and outcome.status == 413 and n > 1:
                await self._split(outcome, records, settled, give_up_after)
                return
            if isinstance(outcome, Permanent):
                self.m_failed.inc(n)
                log.warning(
                    "%s: batch of %d refused permanently, to dead letters: %s", self.name, n, outcome.reason, extra=f
                )
                settled.refused.append((records, outcome.reason, outcome.status, attempts))
                return
            self._unhealthy = True
            delay = backoff.next_delay(outcome.delay)
            if give_up_after is not None and backoff.elapsed() + delay > give_up_after:
                raise GaveUp(f"still failing after {attempts} attempts: {outcome.reason}")
            if stall_at > 0 and backoff.elapsed() >= stall_at:
                stall_at += retry.max_elapsed_time
                log.warning(
                    "%s: destination stalled: a batch of %d has been retrying for %.0fs (%d attempts, last: %s); "
                    "it stays in the backlog and is retried until the destination accepts it",
                    self.name,
                    n,
                    backoff.elapsed(),
                    attempts,
                    outcome.reason,
                    extra=f,
                )
            self.m_retries.inc()
            log.warning(
                "%s: retrying a batch of %d in %.1fs (attempt %d): %s%s",
                self.name,
                n,
                delay,
                attempts,
                outcome.reason,
                " (server asked for this delay)" if outcome.delay is not None else "",
                extra=f,
            )
            if await interruptible_sleep(delay, self.stop):
                raise _Interrupted

    async def _partial(
        self,
        outcome: Partial,
        records: list[DeliveryRecord],
        attempts: int,
        settled: Settled,
        give_up_after: float | None,
    ) -> None:
        """Count what the destination took, dead-letter what it refused, send again everything else.

        "Everything else" is derived from the payload, not trusted from the outcome: a record the exporter listed
        neither as accepted nor as refused is re-sent, so an exporter cannot lose one.
        """
        accepted = list(outcome.accepted)
        taken = {id(r) for r in accepted}
        refused_ids = {id(x.record) for x in outcome.refused}
        self.m_sent.inc(len(accepted))
        settled.delivered.extend(accepted)
        if accepted:
            self._accepted()
        for x in outcome.refused:
            self.m_failed.inc(1)
            settled.refused.append(
                ([x.record], x.reason, x.status if x.status is not None else outcome.status, attempts)
            )
        rest = [r for r in records if id(r) not in taken and id(r) not in refused_ids]
        log.warning(
            "%s: a batch of %d partly accepted: %d accepted, %d refused permanently (%s), %d sent again",
            self.name,
            len(records),
            len(accepted),
            len(outcome.refused),
            outcome.reason,
            len(rest),
        )
        if rest:
            await self._send(rest, settled, give_up_after)

    async def _split(
        self, outcome: Permanent, records: list[DeliveryRecord], settled: Settled, give_up_after: float | None
    ) -> None:
        """The one 413 splitter: the destination refused the request as too large; send each half on its own (in
        order), halving again as needed, down to a single record (whose 413 is final)."""
        if (held := self._split_log.ready()) is not None:
            log.warning(
                "%s: a request of %d records refused as too large (%s); sending it in halves. Lower the "
                "destination's request size limit below the server's.%s",
                self.name,
                len(records),
                outcome.reason,
                f" ({held} more since the last message)" if held else "",
            )
        mid = len(records) // 2
        await self._send(records[:mid], settled, give_up_after)
        await self._send(records[mid:], settled, give_up_after)

    async def _dead_letter(
        self, records: Sequence[DeliveryRecord], reason: str, status: int | None, attempts: int
    ) -> None:
        rows = [(r.seq, r.id, r.time_ms, r.body) for r in records]
        self.state.dead_letter(self.name, rows, reason, status, attempts)
        self.m_dead.inc(len(rows))

    # -- dead letters: replay through the same loop ----------------------------------------------------------------

    def _accepted(self) -> None:
        """The destination confirmed records; after retryable failures that means it is back: auto-replay."""
        if not self._unhealthy:
            return
        self._unhealthy = False
        log.info("%s: destination accepts records again", self.name)
        dl = self.exporter.settings.dead_letter
        if not dl.auto_replay or (self._replay_task is not None and not self._replay_task.done()):
            return
        if time.monotonic() - self._last_replay < dl.replay_interval:
            return
        if not self.state.dead_letter_count(self.name):
            return
        self._last_replay = time.monotonic()
        self._replay_task = asyncio.create_task(self.auto_replay(), name=f"replay-{self.name}-{self.shard}")

    def _backpressured(self) -> bool:
        return bool(self.backlog.over_limit) and self.exporter.settings.backlog.policy == "backpressure"

    async def auto_replay(self) -> tuple[int, int]:
        """Re-send this destination's dead letters of this shard, batch by batch, oldest first; returns (delivered,
        refused again). Entries added while it runs (``drop_oldest`` during the catch-up) are included; it stops at
        shutdown, and while receivers are held back by this destination's backlog (policy ``backpressure``), so the
        backlog drains first."""
        delivered = failed = 0
        after = 0
        try:
            while not self.stop.is_set() and not self._backpressured():
                entries = self.state.dead_letters(self.name, limit=self.batch.max_records, after=after)
                if not entries:
                    break
                after = entries[-1].dlq_id
                d, f = await self.replay_entries(entries)
                delivered += d
                failed += f
        except _Interrupted:
            pass
        except Exception:
            log.exception("%s: automatic dead-letter replay failed", self.name)
        if delivered or failed:
            log.info(
                "%s: automatic dead-letter replay: %d delivered, %d refused again (kept)", self.name, delivered, failed
            )
        return delivered, failed

    async def replay_entries(
        self, entries: Sequence[DeadLetter], give_up_after: float | None = None
    ) -> tuple[int, int]:
        """Send dead letters through the delivery loop; delete exactly the confirmed ones, give the refused ones their
        new reason. Returns (delivered, refused again). Raises :class:`GaveUp` / :class:`_Interrupted` after
        recording what was settled before."""
        records = [DeliveryRecord(dl.record_seq, dl.record_id, dl.body, dl.time_ms) for dl in entries]
        owner = {id(r): dl.dlq_id for r, dl in zip(records, entries, strict=True)}
        settled = Settled()
        try:
            await self._send(records, settled, give_up_after)
        finally:
            self.state.delete_dead_letters([owner[id(r)] for r in settled.delivered])
            for refused, reason, status, _attempts in settled.refused:
                self.state.fail_again([owner[id(r)] for r in refused], reason, status)
        return len(settled.delivered), sum(len(r) for r, *_ in settled.refused)

    # -- backlog ------------------------------------------------------------------------------------------------------

    def refresh_backlog(self) -> BacklogStatus:
        """Recompute backlog size and age, and whether a limit is exceeded."""
        limits = self.exporter.settings.backlog
        last = self.reader.last_seq()
        records = max(0, last - self.cursor)
        avg = self.reader.average_size() if records else 0.0
        oldest = self.reader.oldest_received_after(self.cursor) if records else None
        age = max(0.0, time.time() - oldest / 1000) if oldest else 0.0
        status = BacklogStatus(records, records * avg, age)
        if records > limits.max_records:
            status.over_limit = f"{records} records > max_records {limits.max_records}"
        elif status.bytes > limits.max_bytes:
            status.over_limit = f"~{int(status.bytes)} bytes > max_bytes {limits.max_bytes}"
        elif age > limits.max_age:
            status.over_limit = f"oldest record {int(age)}s old > max_age {int(limits.max_age)}s"
        if status.over_limit and limits.policy == "drop_oldest":
            excess = max(records - limits.max_records, 0)
            if status.bytes > limits.max_bytes and avg:
                excess = max(excess, int((status.bytes - limits.max_bytes) / avg) + 1)
            self._drop_target = max(excess, 1)
        self.backlog = status
        return status

    async def _drop_oldest(self, inflight: collections.deque[tuple[int, asyncio.Task[None]]]) -> int:
        """Under ``drop_oldest``: move the oldest undelivered records to dead letters; returns the new position.

        The oldest undelivered records are usually the ones in flight (a dead destination keeps them retrying), so
        in-flight batches are cancelled first; batches already confirmed at the head of the window still count as
        delivered. A batch cancelled while its request was on the wire may have reached the destination too.
        """
        n = self._drop_target
        self._drop_target = 0
        for _, t in inflight:
            t.cancel()
        await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
        while inflight:
            seq, task = inflight[0]
            if task.cancelled() or task.exception() is not None:
                break
            inflight.popleft()
            self.cursor = seq
        inflight.clear()
        records, _ = await asyncio.to_thread(self.reader.read_after, self.cursor, n, 1 << 62, DeliveryRecord)
        if records:
            reason = f"dropped (backlog limit, policy drop_oldest): {self.backlog.over_limit}"
            await self._dead_letter(records, reason, None, 0)
            self.m_dropped.inc(len(records))
            log.warning(
                "%s: dropped %d oldest undelivered records to dead letters: %s", self.name, len(records), reason
            )
            self.cursor = records[-1].seq
        self.state.set_cursor(self.name, self.cursor)
        return self.cursor


class DeliveryEngine:
    """All destination workers of this process, their backlog accounting, admission control and retention."""

    def __init__(
        self,
        data_dir: str | Path,
        shards: Sequence[int],
        exporters: Sequence[Exporter],
        metrics: SelfMetrics,
        *,
        retention: float = 0.0,
        run_retention: object = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store: StoreReader = open_reader(data_dir)
        self.shards = list(shards)
        self.exporters = list(exporters)
        self.metrics = metrics
        self.retention = retention
        self.run_retention = run_retention
        self.stop_event = asyncio.Event()
        self.new_data = asyncio.Event()
        self.workers: list[DestinationWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._states: list[DeliveryStateStore] = []
        self._readers: list[ShardLog] = []
        self._blocked: dict[str, str] = {}

    def notify(self) -> None:
        """New records were committed (call from the event loop thread)."""
        self.new_data.set()

    async def start(self) -> None:
        for exp in self.exporters:
            await exp.start()
        for shard in self.shards:
            if not self.store.has_shard(shard):
                continue
            state = self.store.delivery_state(shard)
            self._states.append(state)
            for exp in self.exporters:
                reader = self.store.shard_log(shard)
                self._readers.append(reader)
                w = DestinationWorker(exp, shard, reader, state, self.metrics, self.stop_event, self.new_data)
                self.workers.append(w)
        for w in self.workers:
            self._tasks.append(asyncio.create_task(self._run_worker(w), name=f"worker-{w.name}-{w.shard}"))
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="delivery-stats"))
        if self.workers:
            log.info(
                "delivering shard(s) %s to %s",
                ",".join(map(str, sorted({w.shard for w in self.workers}))),
                ", ".join(e.name for e in self.exporters),
            )

    async def _run_worker(self, w: DestinationWorker) -> None:
        while not self.stop_event.is_set():
            try:
                await w.run()
            except Exception:
                log.exception("delivery worker %s/shard-%d crashed; restarting in 1s", w.name, w.shard)
                await interruptible_sleep(1.0, self.stop_event)

    async def stop(self, deadline: float) -> None:
        """Interrupt waits, give in-flight pushes until ``deadline`` seconds, persist cursors, close."""
        self.stop_event.set()
        self.new_data.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=deadline)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        replays = [w._replay_task for w in self.workers if w._replay_task is not None and not w._replay_task.done()]
        for t in replays:  # an automatic replay left over by a worker that was cancelled (its state closes below)
            t.cancel()
        await asyncio.gather(*replays, return_exceptions=True)
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as exc:
            log.warning("backlog accounting at shutdown failed: %s", exc)
        for exp in self.exporters:
            with contextlib.suppress(Exception):
                await exp.close()
        for r in self._readers:
            r.close()
        for s in self._states:
            s.close()

    async def _stats_loop(self) -> None:
        last_retention = -math.inf
        while not self.stop_event.is_set():
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:
                log.warning("backlog accounting failed: %s", exc)
            if (
                self.retention > 0
                and self.run_retention is not None
                and time.monotonic() - last_retention > RETENTION_INTERVAL
            ):
                last_retention = time.monotonic()
                try:
                    await self.apply_retention()
                except Exception as exc:
                    log.warning("retention pass failed: %s", exc)
            await interruptible_sleep(STATS_INTERVAL, self.stop_event)

    def refresh(self) -> None:
        """Update backlog gauges and the admission decision."""
        per_dest: dict[str, BacklogStatus] = {}
        for w in self.workers:
            st = w.refresh_backlog()
            agg = per_dest.setdefault(w.name, BacklogStatus())
            agg.records += st.records
            agg.bytes += st.bytes
            agg.oldest_age = max(agg.oldest_age, st.oldest_age)
            if st.over_limit and w.exporter.settings.backlog.policy == "backpressure":
                agg.over_limit = st.over_limit
        blocked = {}
        for name, agg in per_dest.items():
            self.metrics.backlog_records.labels(name).set(agg.records)
            self.metrics.backlog_bytes.labels(name).set(agg.bytes)
            self.metrics.backlog_oldest_age.labels(name).set(agg.oldest_age)
            if agg.over_limit:
                blocked[name] = agg.over_limit
        for name, reason in blocked.items():
            if name not in self._blocked:
                log.warning("backlog limit of %s reached, receivers answer 429 until it drains: %s", name, reason)
        for name in self._blocked:
            if name not in blocked:
                log.info("backlog of %s is back under its limits; accepting again", name)
        self._blocked = blocked

    def admit(self, signal: str) -> None:
        """Raise :class:`Backpressure` while a destination with policy ``backpressure`` is over a backlog limit."""
        if self._blocked:
            name, reason = next(iter(self._blocked.items()))
            retry_after = max(w.exporter.settings.backlog.retry_after for w in self.workers if w.name == name)
            raise Backpressure(f"destination {name} is over its backlog limit ({reason}); retry later", retry_after)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per destination: backlog (records, bytes, oldest age), last success, last error, dead letters."""
        out: dict[str, dict[str, Any]] = {}
        for w in self.workers:
            d = out.setdefault(
                w.name,
                {
                    "backlog_records": 0,
                    "backlog_bytes": 0,
                    "oldest_age_seconds": 0.0,
                    "last_success": None,
                    "last_error": None,
                    "last_error_time": None,
                    "dead_letters": 0,
                },
            )
            d["backlog_records"] += w.backlog.records
            d["backlog_bytes"] += int(w.backlog.bytes)
            d["oldest_age_seconds"] = max(d["oldest_age_seconds"], round(w.backlog.oldest_age, 1))
            if w.last_success is not None and (d["last_success"] or 0) < w.last_success:
                d["last_success"] = w.last_success
            if w.last_error is not None and (d["last_error_time"] or 0) < w.last_error[0]:
                d["last_error_time"], d["last_error"] = w.last_error
        for state in self._states:
            for name, d in out.items():
                with contextlib.suppress(Exception):
                    d["dead_letters"] += state.dead_letter_count(name)
        return out

    def pending(self) -> dict[str, int]:
        """Records each destination has not confirmed yet (from the last backlog accounting)."""
        out: dict[str, int] = {}
        for w in self.workers:
            out[w.name] = out.get(w.name, 0) + w.backlog.records
        return out

    async def apply_retention(self) -> int:
        """Delete records older than ``retention`` that every destination has (never the newest record)."""
        if self.run_retention is None:
            return 0
        cutoff_ms = int((time.time() - self.retention) * 1000)
        total = 0
        for shard in self.shards:
            cursors = [w.cursor for w in self.workers if w.shard == shard]
            limit = min(cursors) if cursors else None
            total += await self.run_retention(shard, cutoff_ms, limit)  # type: ignore[operator]
        if total:
            log.info("retention removed %d records older than %.0f days", total, self.retention / 86400)
        return total


def all_shards(data_dir: str | Path) -> list[int]:
    """Shards that exist under ``data_dir``."""
    return open_reader(data_dir).shards()
