"""Usage enrichment and identity backfill of audit records, on the ingest hot path.

:meth:`Enricher.enrich` runs for every normalized record before it is stored, so it does plain dictionary
lookups only; everything that touches the disk runs in a background task:

* **usage**: a record whose ``user.email`` is a user known to the Analytics API gets ``usage``, that user's latest
  known day from ``<data_dir>/analytics.db`` (:meth:`UsageStore.latest_user_summaries`): ``date``, ``sessions``,
  ``commits``, ``pull_requests``, ``lines_added``, ``lines_removed``, ``edit_acceptance_rate`` (omitted when the
  user made no edit-tool decision that day) and ``cost_usd``. The latest day may be today, which the API reports
  partially until the day is over. E-mails are matched exactly, then case-insensitively.
* **identity backfill**: a record *with* ``user.email`` teaches the enricher which e-mail its ``user.account_uuid``
  and ``user.id`` (installation id) belong to; a later record *without* ``user.email`` but with a known
  ``user.account_uuid`` (preferred: it names one account) or ``user.id`` gets ``user.email`` and
  ``user.identity_source: "backfill"``. The latest e-mail seen for an id wins. The Analytics API identifies users
  by e-mail only (no installation or account id), so it cannot link ids itself; mappings come from records.

Learned mappings are kept in memory and written to the ``identity_map`` table of ``analytics.db`` every
:data:`FLUSH_INTERVAL_S` seconds (and at stop), so a restart and the other workers know them too. Summaries and
mappings are re-read every ``refresh_interval`` and whenever :meth:`request_refresh` is called (after each sync);
the summaries only when a day was written since the last read.
A worker keeps the mappings it learned itself over those read from the file (another worker's newer mapping of
the same id reaches it after its own restart). Re-reading builds new dictionaries and swaps them in on the event
loop, so :meth:`enrich` never sees a half-built table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.store.usage import UsageStore, UserDailySummary

if TYPE_CHECKING:
    from collector.config import Config

FLUSH_INTERVAL_S = 5.0

log = logging.getLogger(__name__)


def usage_doc(summary: UserDailySummary) -> dict[str, Any]:
    """The ``usage`` object of a record for ``summary`` (schema: audit_record.v1.json ``usage``)."""
    doc: dict[str, Any] = {
        "date": summary.day.isoformat(),
        "sessions": summary.sessions,
        "commits": summary.commits,
        "pull_requests": summary.pull_requests,
        "lines_added": summary.lines_added,
        "lines_removed": summary.lines_removed,
    }
    rate = summary.acceptance_rate
    if rate is not None:
        doc["edit_acceptance_rate"] = round(rate, 4)
    doc["cost_usd"] = float(summary.cost_usd)
    return doc


def usage_table(summaries: Iterable[UserDailySummary]) -> dict[str, dict[str, Any]]:
    """E-mail -> ``usage`` object, keyed by the exact address and by its lower-case form."""
    table: dict[str, dict[str, Any]] = {}
    lowered: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        doc = usage_doc(summary)
        table[summary.email] = doc
        lowered.setdefault(summary.email.lower(), doc)
    for key, doc in lowered.items():
        table.setdefault(key, doc)
    return table


class Enricher:
    """Adds ``usage`` and backfills ``user.email``; see the module docstring.

    ``enrich`` must be called from one thread (the worker's event loop). ``start``/``stop`` run the background
    task; without ``start`` the enricher still works from whatever :meth:`load` put in memory (tests, benchmarks).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        refresh_interval: float = 60.0,
        identity_backfill: bool = True,
        flush_interval: float = FLUSH_INTERVAL_S,
        open_history: Callable[[], UsageStore] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # where the usage history lives: ``<data_dir>/analytics.db`` unless given (PostgreSQL: every replica reads
        # the cluster's history from the database)
        self._open_history = open_history or (lambda: UsageStore.open(self.data_dir))
        self.refresh_interval = refresh_interval
        self.flush_interval = flush_interval
        self.identity_backfill = identity_backfill
        self._usage: dict[str, dict[str, Any]] = {}
        self._by_account: dict[str, str] = {}
        self._by_user_id: dict[str, str] = {}
        self._pending: dict[tuple[str, str], str] = {}
        self._store: UsageStore | None = None
        self._marker: tuple[object, ...] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.backfilled = 0
        self.enriched = 0
        self.loads = 0

    # -- the hot path --------------------------------------------------------------------------------

    def enrich(self, rec: dict[str, Any]) -> None:
        """Add ``usage`` to ``rec`` and backfill ``user.email`` where known; learn ids from records with one."""
        user = rec.get("user")
        if user is None:
            return
        email = user.get("email")
        if email is None:
            if not self.identity_backfill:
                return
            account = user.get("account_uuid")
            email = self._by_account.get(account) if account is not None else None
            if email is None:
                uid = user.get("id")
                if uid is None:
                    return
                email = self._by_user_id.get(uid)
                if email is None:
                    return
            user["email"] = email
            user["identity_source"] = "backfill"
            self.backfilled += 1
        elif self.identity_backfill:
            uid = user.get("id")
            if uid is not None and self._by_user_id.get(uid) != email:
                self._by_user_id[uid] = email
                self._pending[("user_id", uid)] = email
            account = user.get("account_uuid")
            if account is not None and self._by_account.get(account) != email:
                self._by_account[account] = email
                self._pending[("account_uuid", account)] = email
        usage = self._usage.get(email)
        if usage is None:
            usage = self._usage.get(email.lower())
            if usage is None:
                return
        rec["usage"] = usage
        self.enriched += 1

    # -- loading and saving --------------------------------------------------------------------------

    def _open(self) -> UsageStore:
        if self._store is None:
            self._store = self._open_history()
        return self._store

    def _read(self) -> tuple[list[UserDailySummary] | None, dict[tuple[str, str], str]]:
        """Summaries (``None`` when no day was written since the last read) and stored mappings."""
        store = self._open()
        marker = store.data_marker()
        summaries = None
        if marker != self._marker:
            summaries = store.latest_user_summaries()
            self._marker = marker
        return summaries, store.identities()

    def install(self, summaries: Iterable[UserDailySummary] | None, identities: dict[tuple[str, str], str]) -> None:
        """Swap in new summaries (``None``: keep the current ones) and merge stored mappings under the ones
        learned in this process."""
        if summaries is not None:
            self._usage = usage_table(summaries)
        by_account: dict[str, str] = {}
        by_user_id: dict[str, str] = {}
        for (kind, value), email in identities.items():
            (by_account if kind == "account_uuid" else by_user_id)[value] = email
        by_account.update(self._by_account)
        by_user_id.update(self._by_user_id)
        self._by_account = by_account
        self._by_user_id = by_user_id
        self.loads += 1

    def load(self) -> None:
        """Read summaries and mappings synchronously (for use before the event loop serves records)."""
        self.install(*self._read())

    async def reload(self) -> None:
        """Read summaries and mappings in a thread, then swap them in on the loop."""
        summaries, identities = await asyncio.to_thread(self._read)
        self.install(summaries, identities)

    async def flush(self) -> int:
        """Write the mappings learned since the last flush; returns how many. On failure they are kept."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        rows = [(kind, value, email) for (kind, value), email in batch.items()]
        try:
            await asyncio.to_thread(self._open().save_identities, rows, seen_at=datetime.now(UTC))
        except BaseException:
            for key, email in batch.items():
                self._pending.setdefault(key, email)
            raise
        return len(rows)

    # -- lifecycle -----------------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Re-read summaries soon (call from the event loop, e.g. after a sync)."""
        self._wake.set()

    async def start(self) -> None:
        """Open ``analytics.db``, load it, and start the background refresh/flush task.

        A file that cannot be read does not stop the service: records pass unenriched and the task retries.
        """
        self._stopping = False
        try:
            await self.reload()
        except Exception:
            log.exception("usage enrichment: cannot read %s; records pass unenriched until it can", self.data_dir)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-enricher")

    async def _run(self) -> None:
        next_refresh = time.monotonic() + self.refresh_interval
        while not self._stopping:
            timeout = max(0.0, min(self.flush_interval, next_refresh - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            if self._stopping:
                return
            refresh = self._wake.is_set() or time.monotonic() >= next_refresh
            self._wake.clear()
            try:
                await self.flush()
                if refresh:
                    next_refresh = time.monotonic() + self.refresh_interval
                    await self.reload()
            except Exception:
                log.exception("usage enrichment: refreshing from %s failed; will retry", self.data_dir)

    async def stop(self) -> None:
        """Stop the task, write the remaining mappings, close the file."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            log.exception("usage enrichment: could not save learned identities")
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)


def create_enricher(cfg: Config) -> Enricher | None:
    """The service's enricher when ``enrichment.usage`` is active (see docs/configuration.md), else ``None``."""
    usage = cfg.enrichment.usage
    if not usage.active(cfg.enrichment.analytics_api.enabled):
        return None
    return Enricher(
        cfg.storage.directory,
        refresh_interval=float(usage.refresh_interval),
        identity_backfill=usage.identity_backfill,
    )
