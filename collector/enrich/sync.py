"""Sync Claude Code usage reports into the history store: backfill ranges, the service's periodic refresh, CLI.

A day is fetched completely (all pages) and then written in one transaction together with its ``sync_state``
mark, so an interrupted backfill resumes where it stopped: :func:`sync_range` skips days already complete,
except days that may still change. A day may still change when it is today or yesterday (always re-fetched,
they are partial on the API side) or when its last fetch started before the day was final
(see :func:`collector.store.usage.is_final`). ``force=True`` re-fetches every day of the range.

Days are fetched oldest first by up to ``concurrency`` workers. The first failure stops the hand-out of further
days (the API is unhealthy, or the key is wrong, so the rest would fail alike); days in flight finish, days not
started are reported in :attr:`SyncResult.not_attempted` and fetched by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from collector.configtypes import ConfigError, Secret
from collector.enrich.analytics_client import AnalyticsClient, ShutdownRequested
from collector.enrich.analytics_config import DEFAULT_BASE_URL, AnalyticsApiConfig
from collector.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from collector.store.usage import USAGE_ERRORS, UsageStore

PARTIAL_DAYS = 2
MAX_CATCHUP_DAYS = 31
CLI_DEFAULT_DAYS = 90
ENV_BASE_URL = "CCBRIDGE_ANALYTICS_BASE_URL"
ENV_ADMIN_KEY = "ANTHROPIC_ADMIN_API_KEY"
CONFIG_PATH = "enrichment.analytics_api"

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DayOutcome:
    """Reported to ``progress`` once per day of the range."""

    day: date
    status: Literal["fetched", "skipped", "failed"]
    rows: int = 0
    pages: int = 0
    error: str | None = None


@dataclass
class SyncResult:
    """What a sync did. ``error`` is the first failure (its ``str()`` is safe to log); ``ok`` means none."""

    since: date
    until: date
    fetched: list[date] = field(default_factory=list)
    skipped: list[date] = field(default_factory=list)
    failed: dict[date, str] = field(default_factory=dict)
    not_attempted: list[date] = field(default_factory=list)
    rows: int = 0
    pages: int = 0
    skipped_records: int = 0
    elapsed: float = 0.0
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        text = (
            f"analytics sync {self.since}..{self.until}: {len(self.fetched)} days fetched, "
            f"{len(self.skipped)} skipped, {self.rows} rows, {self.pages} pages, {self.elapsed:.1f}s"
        )
        if self.skipped_records:
            text += f", {self.skipped_records} unusable records skipped"
        if self.error is not None:
            text += (
                f"; FAILED on {', '.join(map(str, sorted(self.failed)))}: {self.error}; "
                f"{len(self.not_attempted)} days not attempted (run again to resume)"
            )
        return text


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def plan_days(
    store: UsageStore, since: date, until: date, *, today: date, force: bool = False
) -> tuple[list[date], list[date]]:
    """Split ``since..until`` into (days to fetch, days to skip) by the rule in the module docstring."""
    states = store.day_states(since, until)
    fetch: list[date] = []
    skip: list[date] = []
    for day in _days(since, until):
        state = states.get(day)
        settled = state is not None and state.final and day <= today - timedelta(days=PARTIAL_DAYS)
        (skip if settled and not force else fetch).append(day)
    return fetch, skip


async def _execute(
    client: AnalyticsClient,
    store: UsageStore,
    result: SyncResult,
    days: list[date],
    *,
    concurrency: int,
    progress: Callable[[DayOutcome], None] | None,
    clock: Clock,
) -> SyncResult:
    started = time.monotonic()
    queue = deque(days)

    def report(outcome: DayOutcome) -> None:
        if progress is not None:
            progress(outcome)

    async def worker() -> None:
        while queue and result.error is None:
            day = queue.popleft()
            walk_started = clock()
            try:
                fetch = await client.fetch_day(day)
                rows = await asyncio.to_thread(
                    store.write_day, day, fetch.records, pages=fetch.pages, fetched_at=walk_started
                )
            except Exception as exc:
                result.failed[day] = str(exc)
                if result.error is None:
                    result.error = exc
                report(DayOutcome(day, "failed", error=str(exc)))
                return
            result.fetched.append(day)
            result.rows += rows
            result.pages += fetch.pages
            result.skipped_records += fetch.skipped_records
            report(DayOutcome(day, "fetched", rows, fetch.pages))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(days)))):
                group.create_task(worker())
    finally:
        result.not_attempted = sorted(queue)
        result.fetched.sort()
        result.elapsed = time.monotonic() - started
    return result


async def sync_range(
    client: AnalyticsClient,
    store: UsageStore,
    since: date,
    until: date,
    *,
    concurrency: int = 4,
    progress: Callable[[DayOutcome], None] | None = None,
    force: bool = False,
    clock: Clock | None = None,
) -> SyncResult:
    """Fetch and store every day of ``since..until`` (inclusive) that needs it; never raises for API errors.

    ``until`` is clipped to today (UTC); future days have no data. ``clock`` (UTC ``datetime``) is for tests.
    """
    if since > until:
        raise ValueError(f"since ({since}) is after until ({until})")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    now = (clock or _utcnow)()
    today = now.date()
    until = min(until, today)
    result = SyncResult(since, until)
    if since > until:
        return result
    days, skipped = await asyncio.to_thread(plan_days, store, since, until, today=today, force=force)
    result.skipped = skipped
    for day in skipped:
        if progress is not None:
            progress(DayOutcome(day, "skipped"))
    return await _execute(
        client, store, result, days, concurrency=concurrency, progress=progress, clock=clock or _utcnow
    )


# ---------------------------------------------------------------------------------------------------------
# The service's periodic refresh


class UsageSyncScheduler:
    """Runs a sync cycle at start and then every ``config.sync_interval`` until shutdown.

    A cycle re-fetches the last ``lookback_days`` days (at least today and yesterday) unconditionally, and
    catches up days missed while the service was down: within the last :data:`MAX_CATCHUP_DAYS` days and not
    before the first day in the store, every day that is missing or not final. Older gaps (and the initial
    backfill) are the job of ``ccbridge analytics sync``. Failures are logged and retried next cycle; the loop
    never dies of them. ``stop()`` sets the client's shutdown event, which interrupts every wait.

    ``on_cycle`` is called with each cycle's result (e.g. to refresh enrichment and gauges from the new data);
    its exceptions are logged.
    """

    def __init__(
        self,
        client: AnalyticsClient,
        store: UsageStore,
        config: AnalyticsApiConfig,
        *,
        concurrency: int = 4,
        clock: Clock | None = None,
        on_cycle: Callable[[SyncResult], None] | None = None,
    ) -> None:
        self._client = client
        self._on_cycle = on_cycle
        self._store = store
        self._config = config
        self._concurrency = concurrency
        self._clock = clock or _utcnow
        self._task: asyncio.Task[None] | None = None
        self.cycles = 0
        self.consecutive_failures = 0
        self.last_result: SyncResult | None = None
        self.last_success: datetime | None = None

    @property
    def shutdown(self) -> asyncio.Event:
        return self._client.shutdown

    def _plan(self, today: date) -> tuple[date, list[date], list[date]]:
        lookback = max(self._config.lookback_days, PARTIAL_DAYS)
        refresh_since = today - timedelta(days=lookback - 1)
        first = self._store.first_day()
        catch_since = refresh_since
        catch_fetch: list[date] = []
        catch_skip: list[date] = []
        if first is not None:
            catch_since = max(first, today - timedelta(days=MAX_CATCHUP_DAYS))
            if catch_since < refresh_since:
                catch_fetch, catch_skip = plan_days(
                    self._store, catch_since, refresh_since - timedelta(days=1), today=today
                )
            else:
                catch_since = refresh_since
        return catch_since, catch_fetch + _days(refresh_since, today), catch_skip

    async def run_once(self) -> SyncResult:
        """One cycle; returns its result (also kept in ``last_result``)."""
        now = self._clock()
        today = now.date()
        since, days, skipped = await asyncio.to_thread(self._plan, today)
        result = SyncResult(since, today, skipped=skipped)
        await _execute(
            self._client,
            self._store,
            result,
            days,
            concurrency=self._concurrency,
            progress=None,
            clock=self._clock,
        )
        self.cycles += 1
        self.last_result = result
        if isinstance(result.error, ShutdownRequested):
            log.info("analytics sync interrupted by shutdown; %d days fetched", len(result.fetched))
        elif result.ok:
            self.consecutive_failures = 0
            self.last_success = now
            log.info("%s", result.summary())
        else:
            self.consecutive_failures += 1
            log.error("%s (consecutive failed cycles: %d)", result.summary(), self.consecutive_failures)
        if self._on_cycle is not None:
            try:
                self._on_cycle(result)
            except Exception:
                log.exception("analytics sync: on_cycle callback failed")
        return result

    async def run(self) -> None:
        """Loop until the shutdown event is set."""
        interval = float(self._config.sync_interval)
        while not self.shutdown.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("analytics sync cycle failed unexpectedly")
            try:
                await asyncio.wait_for(self.shutdown.wait(), timeout=interval)
            except TimeoutError:
                continue

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="analytics-sync")
        return self._task

    async def stop(self, timeout: float = 5.0) -> None:
        """Set shutdown and wait up to ``timeout`` seconds for the loop; cancel it after that."""
        self.shutdown.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# ---------------------------------------------------------------------------------------------------------
# CLI: ccbridge analytics sync


def config_from_env(environ: Mapping[str, str]) -> AnalyticsApiConfig:
    """Settings for ``ccbridge analytics sync`` without a config file: base URL from
    ``CCBRIDGE_ANALYTICS_BASE_URL`` (default the public API) and the key from ``ANTHROPIC_ADMIN_API_KEY``."""
    return AnalyticsApiConfig(
        enabled=True,
        base_url=environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
        admin_api_key=Secret(environ.get(ENV_ADMIN_KEY, "")),
    )


def _load_cli_config(config_path: str | None) -> tuple[AnalyticsApiConfig, Path]:
    from collector import config as config_module

    cfg = config_module.load(config_path)
    section = cfg.enrichment.analytics_api
    if section.admin_api_key:
        return section, cfg.data_dir
    if config_path is not None:
        raise ConfigError(f"{CONFIG_PATH}.admin_api_key: required to sync")
    api = config_from_env(os.environ)
    if not api.admin_api_key:
        raise ConfigError(f"{ENV_ADMIN_KEY} is not set (and no --config with {CONFIG_PATH}.admin_api_key)")
    api.validate(f"{CONFIG_PATH} (from {ENV_BASE_URL}/{ENV_ADMIN_KEY})")
    return api, cfg.data_dir


def _parse_day(value: str | None, option: str, default: date) -> date:
    """The first (``--since``) or last (``--until``, exclusive like every ``--until``) UTC day of an option in the
    time grammar of :mod:`collector.timeparse`."""
    from collector import timeparse

    if value is None:
        return default
    try:
        moment = timeparse.parse_time(value, now=_utcnow())
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None
    return timeparse.last_day(moment) if option == "--until" else timeparse.first_day(moment)


async def _cli_sync(api: AnalyticsApiConfig, store: UsageStore, since: date, until: date) -> SyncResult:
    def progress(outcome: DayOutcome) -> None:
        if outcome.status == "fetched":
            print(f"  {outcome.day}: {outcome.rows} rows, {outcome.pages} pages", file=sys.stderr)

    async with AnalyticsClient(api) as client:
        return await sync_range(client, store, since, until, progress=progress if sys.stderr.isatty() else None)


def run_sync_cli(config_path: str | None, data_dir: str | None, since: str | None, until: str | None) -> int:
    """``ccbridge analytics sync``: fetch ``since..until`` (default: the last 90 days) into
    ``<data_dir>/analytics.db``. Prints a summary; returns 0 on success, 1 if the sync failed (completed days
    are kept, re-running resumes), 2 for configuration or argument errors, 130 when interrupted."""
    try:
        api, default_dir = _load_cli_config(config_path)
        today = _utcnow().date()
        until_day = _parse_day(until, "--until", today)
        since_day = _parse_day(since, "--since", until_day - timedelta(days=CLI_DEFAULT_DAYS - 1))
        if since_day > until_day:
            raise ConfigError(
                f"--since {since or since_day} is not before --until {until or today} (--until is exclusive)"
            )
    except ConfigError as exc:
        print(f"ccbridge analytics sync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = UsageStore.open(data_dir or default_dir)
    except USAGE_ERRORS as exc:
        print(f"ccbridge analytics sync: cannot open the analytics store: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(_cli_sync(api, store, since_day, until_day))
    except KeyboardInterrupt:
        print("ccbridge analytics sync: interrupted; completed days are kept, run again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        store.close()
    print(result.summary())
    return EXIT_OK if result.ok else EXIT_FAILURE
