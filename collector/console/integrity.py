"""Chain verification for the Integrity page: ``audit verify`` (the same walk) run in the background on a schedule.

Verifying reads every record, so it is not done per page view: it runs at start and every
``console.verify_interval``, in a worker thread; the page shows the last result and when it was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from collector.store import ChainBreak, StorageError, has_store, open_reader

log = logging.getLogger(__name__)


@dataclass
class IntegrityState:
    verified_at: float | None = None  # Unix seconds when the last verification finished
    duration_s: float = 0.0
    ok: bool | None = None
    records: int = 0
    shards: int = 0
    heads: dict[int, tuple[int, str]] = field(default_factory=dict)
    broken: ChainBreak | None = None
    error: str = ""
    running: bool = False
    next_at: float | None = None


class IntegrityMonitor:
    def __init__(self, data_dir: str | Path, interval: float) -> None:
        self.data_dir = Path(data_dir)
        self.interval = interval
        self.state = IntegrityState()
        self._task: asyncio.Task[None] | None = None

    def verify_now(self) -> IntegrityState:
        """Run one verification (blocking) and keep its result."""
        st = self.state
        st.running = True
        started = time.monotonic()
        try:
            if not has_store(self.data_dir):
                st.ok, st.error, st.records, st.shards, st.broken = None, "the store has no data yet", 0, 0, None
            else:
                report = open_reader(self.data_dir).verify_chain()
                st.ok = report.broken is None
                st.records, st.shards, st.heads, st.broken, st.error = (
                    report.records,
                    report.shards,
                    dict(report.head),
                    report.broken,
                    "",
                )
                if report.broken is not None:
                    log.error(
                        "console: chain verification found a break in shard %d at seq %d",
                        report.broken.shard,
                        report.broken.seq,
                    )
        except StorageError as exc:
            st.ok, st.error = None, f"cannot verify: {exc.reason}"
        except Exception as exc:
            st.ok, st.error = None, f"cannot verify: {type(exc).__name__}"
            log.error("console: chain verification failed: %s", exc)
        finally:
            st.running = False
            st.duration_s = time.monotonic() - started
            st.verified_at = time.time()
            st.next_at = st.verified_at + self.interval
        return st

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="console-verify")

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.verify_now)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
