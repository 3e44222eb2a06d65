"""Dead letters: list, show and replay records a destination refused or never confirmed.

Dead letters live per store shard (its delivery state); an entry is named ``<shard>-<n>``. Replay builds
the destination from the configuration and sends the entries directly (the bridge may be running or not), with the
destination's batching and retry settings; confirmed entries are deleted, refused ones stay with a new reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import exporters
from collector.config import Config
from collector.delivery.outcome import Partial, Permanent, Retry, Success
from collector.delivery.retry import Backoff
from collector.store.delivery_state import DeadLetter, DeliveryState, state_shards
from exporters.base import DeliveryRecord, Exporter

log = logging.getLogger(__name__)


def entry_name(shard: int, dl: DeadLetter) -> str:
    return f"{shard}-{dl.dlq_id}"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def list_entries(data_dir: str | Path, destination: str | None = None) -> list[tuple[int, DeadLetter]]:
    out: list[tuple[int, DeadLetter]] = []
    for shard in state_shards(data_dir):
        st = DeliveryState.for_shard(data_dir, shard)
        try:
            out.extend((shard, dl) for dl in st.dead_letters(destination))
        finally:
            st.close()
    return out


def find_entry(data_dir: str | Path, name: str) -> tuple[int, DeadLetter] | None:
    shard_s, _, num = name.partition("-")
    if not (shard_s.isdigit() and num.isdigit()):
        raise ValueError(f"invalid dead-letter id {name!r}: expected <shard>-<number>, e.g. 0-17")
    for shard, dl in list_entries(data_dir):
        if shard == int(shard_s) and dl.dlq_id == int(num):
            return shard, dl
    return None


@dataclass
class ReplayResult:
    delivered: int = 0
    failed: int = 0
    skipped_destinations: tuple[str, ...] = ()


async def _send(exp: Exporter, records: Sequence[DeliveryRecord]) -> tuple[list[DeliveryRecord], int]:
    """Push ``records`` with the destination's retry policy; the records it confirmed, and how many still fail."""
    confirmed: list[DeliveryRecord] = []
    failed = 0
    for payload in exp.encode(records):
        backoff = Backoff(exp.settings.retry)
        while True:
            outcome = await exp.push(payload)
            if isinstance(outcome, Success):
                confirmed.extend(payload.records)
                break
            if isinstance(outcome, Partial):
                ok = max(0, min(outcome.accepted, len(payload.records)))
                confirmed.extend(payload.records[:ok])
                if ok < len(payload.records):
                    failed += 1
                    log.warning(
                        "replay to %s: record %s refused again: %s", exp.name, payload.records[ok].id, outcome.reason
                    )
                rest = list(payload.records[ok + 1 :])
                if rest:
                    more, more_failed = await _send(exp, rest)
                    confirmed.extend(more)
                    failed += more_failed
                break
            if isinstance(outcome, Permanent):
                failed += len(payload.records)
                log.warning(
                    "replay to %s: %d records refused again: %s", exp.name, len(payload.records), outcome.reason
                )
                break
            assert isinstance(outcome, Retry)
            delay = backoff.next_delay(outcome.delay)
            if backoff.expired(delay):
                failed += len(payload.records)
                log.warning("replay to %s: giving up on %d records: %s", exp.name, len(payload.records), outcome.reason)
                break
            await asyncio.sleep(delay)
    return confirmed, failed


async def _replay_group(exp: Exporter, state: DeliveryState, entries: Sequence[DeadLetter]) -> tuple[int, int]:
    """Send ``entries`` in batches; delete exactly the confirmed ones. Returns (delivered, still failing)."""
    delivered = failed = 0
    size = exp.settings.batch.max_records
    for i in range(0, len(entries), size):
        chunk = entries[i : i + size]
        by_seq = {dl.record_seq: dl for dl in chunk}
        records = [DeliveryRecord(dl.record_seq, dl.record_id, dl.body, dl.time_ms) for dl in chunk]
        confirmed, chunk_failed = await _send(exp, records)
        state.delete_dead_letters([by_seq[r.seq].dlq_id for r in confirmed])
        delivered += len(confirmed)
        failed += chunk_failed
    return delivered, failed


async def replay(cfg: Config, destination: str | None = None) -> ReplayResult:
    """Re-send dead letters of ``destination`` (or of every configured destination)."""
    result = ReplayResult()
    skipped: set[str] = set()
    for shard in state_shards(cfg.storage.directory):
        state = DeliveryState.for_shard(cfg.storage.directory, shard)
        try:
            names = sorted({dl.destination for dl in state.dead_letters(destination)})
            for name in names:
                if name not in cfg.exporters:
                    skipped.add(name)
                    continue
                exp = exporters.create(name, cfg.exporters[name])
                await exp.start()
                try:
                    d, f = await _replay_group(exp, state, state.dead_letters(name))
                finally:
                    await exp.close()
                result.delivered += d
                result.failed += f
        finally:
            state.close()
    result.skipped_destinations = tuple(sorted(skipped))
    return result
