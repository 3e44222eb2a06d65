"""Dead letters: list, show and replay records a destination refused or never confirmed.

Dead letters live per store shard (its delivery state); an entry is named ``<shard>-<n>``. Replay builds the
destination from the configuration and sends the entries through the delivery engine's own loop
(:meth:`collector.delivery.engine.DestinationWorker.replay_entries`, the one the bridge's automatic replay uses), with
the destination's batching and retry settings; confirmed entries are deleted, refused ones stay with a new reason.
Purge deletes entries by destination and age.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.config import Config
from collector.delivery.api import Exporter
from collector.delivery.engine import DestinationWorker, GaveUp
from collector.delivery.registry import create as create_exporter
from collector.store import open_reader
from collector.store.api import DeliveryStateStore
from collector.store.delivery_state import DeadLetter, DeadLetterGroup
from collector.telemetry.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)


def entry_name(shard: int, dl: DeadLetter) -> str:
    return f"{shard}-{dl.dlq_id}"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def list_entries(data_dir: str | Path, destination: str | None = None) -> list[tuple[int, DeadLetter]]:
    out: list[tuple[int, DeadLetter]] = []
    reader = open_reader(data_dir)
    for shard in reader.delivery_state_shards():
        st = reader.delivery_state(shard)
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
    unreachable: tuple[str, ...] = ()


DEFAULT_REPLAY_WAIT = 60.0


def _worker(exp: Exporter, state: DeliveryStateStore, shard: int, data_dir: str | Path) -> DestinationWorker:
    """A delivery worker of ``exp`` for one shard, used only for its delivery loop (not started)."""
    log_ = open_reader(data_dir).shard_log(shard)
    return DestinationWorker(exp, shard, log_, state, SelfMetrics(), asyncio.Event(), asyncio.Event())


async def _replay_group(
    exp: Exporter,
    state: DeliveryStateStore,
    entries: Sequence[DeadLetter],
    *,
    shard: int = 0,
    data_dir: str | Path = ".",
    wait: float = DEFAULT_REPLAY_WAIT,
) -> tuple[int, int]:
    """Send ``entries`` in batches through the engine's delivery loop; delete exactly the confirmed ones. Returns
    (delivered, still failing). Raises :class:`GaveUp` when the destination kept failing for ``wait`` seconds."""
    worker = _worker(exp, state, shard, data_dir)
    delivered = failed = 0
    size = exp.settings.batch.max_records
    for i in range(0, len(entries), size):
        d, f = await worker.replay_entries(entries[i : i + size], give_up_after=wait)
        delivered += d
        failed += f
    return delivered, failed


async def replay(cfg: Config, destination: str | None = None, wait: float = DEFAULT_REPLAY_WAIT) -> ReplayResult:
    """Re-send dead letters of ``destination`` (or of every configured destination) through the delivery loop.

    A destination that keeps answering with retryable failures for ``wait`` seconds is given up on; its remaining
    entries stay (counted as failing) and it is named in ``unreachable``.
    """
    result = ReplayResult()
    skipped: set[str] = set()
    unreachable: set[str] = set()
    reader = open_reader(cfg.storage.directory)
    for shard in reader.delivery_state_shards():
        state = reader.delivery_state(shard)
        try:
            names = sorted({dl.destination for dl in state.dead_letters(destination)})
            for name in names:
                if name not in cfg.exporters:
                    skipped.add(name)
                    continue
                entries = state.dead_letters(name)
                exp = create_exporter(name, cfg.exporters[name])
                await exp.start()
                try:
                    d, f = await _replay_group(
                        exp, state, entries, shard=shard, data_dir=cfg.storage.directory, wait=wait
                    )
                except GaveUp as exc:
                    log.warning("replay to %s: giving up: %s", name, exc)
                    unreachable.add(name)
                    d, f = 0, state.dead_letter_count(name)
                    result.delivered += len(entries) - f
                finally:
                    await exp.close()
                result.delivered += d
                result.failed += f
        finally:
            state.close()
    result.skipped_destinations = tuple(sorted(skipped))
    result.unreachable = tuple(sorted(unreachable))
    return result


@dataclass
class PurgeResult:
    groups: list[tuple[int, DeadLetterGroup]]

    @property
    def removed(self) -> int:
        return sum(g.count for _, g in self.groups)


def purge(data_dir: str | Path, destination: str | None = None, older_than: float | None = None) -> PurgeResult:
    """Delete dead letters of ``destination`` (all when None) that failed more than ``older_than`` seconds ago (any
    age when None); returns what was removed, by shard and group."""
    cutoff = None if older_than is None else int((time.time() - older_than) * 1000)
    out: list[tuple[int, DeadLetterGroup]] = []
    reader = open_reader(data_dir)
    for shard in reader.delivery_state_shards():
        st = reader.delivery_state(shard)
        try:
            out.extend((shard, g) for g in st.purge_dead_letters(destination, cutoff))
        finally:
            st.close()
    return PurgeResult(out)


def list_groups(data_dir: str | Path, destination: str | None = None) -> list[tuple[int, DeadLetterGroup]]:
    """Dead letters grouped by shard, destination, batch and reason."""
    out: list[tuple[int, DeadLetterGroup]] = []
    reader = open_reader(data_dir)
    for shard in reader.delivery_state_shards():
        st = reader.delivery_state(shard)
        try:
            out.extend((shard, g) for g in st.dead_letter_groups(destination))
        finally:
            st.close()
    return out
