"""Sync end to end against the fake: backfill, partial-day replacement, resume, history, scheduler, CLI."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

import pytest

from collector.config import Duration, Secret
from collector.enrich.analytics_client import (
    AnalyticsClient,
    RetriesExhaustedError,
    RetryPolicy,
    ShutdownRequested,
    SpendCapError,
)
from collector.enrich.analytics_config import AnalyticsApiConfig
from collector.enrich.sync import DayOutcome, UsageSyncScheduler, run_sync_cli, sync_range
from collector.store.usage import DB_FILENAME, UsageStore
from tests.fakes.analytics_api import FAKE_ADMIN_KEY, AnalyticsApiFake, running_in_thread

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)


def make_config(fake: AnalyticsApiFake, **overrides: object) -> AnalyticsApiConfig:
    values: dict[str, object] = {
        "enabled": True,
        "base_url": fake.url,
        "admin_api_key": Secret(FAKE_ADMIN_KEY),
        "request_timeout": Duration(5.0),
        "max_retry_elapsed": Duration(10.0),
        "max_requests_per_second": 0.0,
    }
    values.update(overrides)
    return AnalyticsApiConfig(**values)  # type: ignore[arg-type]


def noon(day: date) -> Callable[[], datetime]:
    return lambda: datetime.combine(day, dtime(12), tzinfo=UTC)


def days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def requested_days(fake: AnalyticsApiFake, start: int = 0) -> list[date]:
    return sorted({r.day for r in fake.requests[start:] if r.day is not None})


@pytest.fixture
def store(tmp_path):
    with UsageStore.open(tmp_path) as opened:
        yield opened


# -- sync_range ----------------------------------------------------------------------------------------------


async def test_backfill_then_only_partial_days_are_refetched(store):
    async with AnalyticsApiFake(users=20, days=10) as fake, AnalyticsClient(make_config(fake)) as client:
        today, clock = fake.today, noon(fake.today)
        first = await sync_range(client, store, today - timedelta(days=9), today, clock=clock)
        assert first.ok and first.fetched == days(today - timedelta(days=9), today)
        assert first.pages == 10 and first.rows == 8 * 20 + 20 + 10 == store.count_rows()

        mark = len(fake.requests)
        second = await sync_range(client, store, today - timedelta(days=9), today, clock=clock)
        assert second.ok and second.fetched == [today - timedelta(days=1), today]
        assert second.skipped == days(today - timedelta(days=9), today - timedelta(days=2))
        assert requested_days(fake, mark) == [today - timedelta(days=1), today]
        assert "2 days fetched, 8 skipped" in second.summary()


async def test_partial_days_are_replaced_by_the_latest_snapshot(store):
    async with AnalyticsApiFake(users=12, days=5) as fake, AnalyticsClient(make_config(fake)) as client:
        today, clock = fake.today, noon(fake.today)
        for walk in range(3):
            await sync_range(client, store, today - timedelta(days=1), today, clock=clock)
            for day in (today - timedelta(days=1), today):
                expected = fake.expected_records(day, walk)
                stored = store.rows(day, day)
                assert len(stored) == len(expected)
                assert sorted(r.raw["core_metrics"]["num_sessions"] for r in stored) == sorted(
                    e["core_metrics"]["num_sessions"] for e in expected
                )
        assert fake.generation(today) == 3
        assert len(store.rows(today, today)) == 12 * 3 // 4
        assert store.count_rows(today - timedelta(days=1), today - timedelta(days=1)) == 12


async def test_force_refetches_complete_days(store):
    async with AnalyticsApiFake(users=3, days=10) as fake, AnalyticsClient(make_config(fake)) as client:
        since, until, clock = fake.today - timedelta(days=8), fake.today - timedelta(days=4), noon(fake.today)
        await sync_range(client, store, since, until, clock=clock)
        mark = len(fake.requests)
        again = await sync_range(client, store, since, until, clock=clock, force=True)
        assert again.fetched == days(since, until) and requested_days(fake, mark) == days(since, until)
        assert store.count_rows() == 15


async def test_interrupted_backfill_resumes_with_the_missing_days_only(store):
    async with AnalyticsApiFake(users=4, days=30) as fake:
        today, clock = fake.today, noon(fake.today)
        since, until, broken = today - timedelta(days=20), today - timedelta(days=5), today - timedelta(days=12)
        fake.inject(500, times=None, day=broken)
        config = make_config(fake, request_timeout=Duration(0.2), max_retry_elapsed=Duration(0.2))
        async with AnalyticsClient(config, retry=FAST) as client:
            first = await sync_range(client, store, since, until, concurrency=1, clock=clock)
        assert not first.ok and isinstance(first.error, RetriesExhaustedError)
        assert first.fetched == days(since, broken - timedelta(days=1))
        assert list(first.failed) == [broken]
        assert first.not_attempted == days(broken + timedelta(days=1), until)
        assert store.day_state(broken) is None and store.count_rows(broken, until) == 0
        assert "FAILED on" in first.summary() and "run again to resume" in first.summary()

        fake.clear_faults()
        mark = len(fake.requests)
        async with AnalyticsClient(make_config(fake)) as client:
            second = await sync_range(client, store, since, until, concurrency=1, clock=clock)
        assert second.ok and second.fetched == days(broken, until)
        assert second.skipped == first.fetched
        assert requested_days(fake, mark) == days(broken, until)
        assert store.count_rows() == 4 * 16


async def test_concurrent_backfill_resume_fetches_each_day_once(store):
    async with AnalyticsApiFake(users=4, days=40) as fake:
        today, clock = fake.today, noon(fake.today)
        since, until, broken = today - timedelta(days=35), today - timedelta(days=5), today - timedelta(days=20)
        fake.inject(503, times=None, day=broken)
        config = make_config(fake, request_timeout=Duration(0.2), max_retry_elapsed=Duration(0.2))
        async with AnalyticsClient(config, retry=FAST) as client:
            first = await sync_range(client, store, since, until, concurrency=4, clock=clock)
        assert not first.ok and broken in first.failed
        fake.clear_faults()
        async with AnalyticsClient(make_config(fake)) as client:
            second = await sync_range(client, store, since, until, concurrency=4, clock=clock)
        assert second.ok
        assert not set(first.fetched) & set(second.fetched)
        assert sorted(first.fetched + second.fetched) == days(since, until)
        assert store.count_rows() == 4 * 31


async def test_day_failing_on_a_later_page_is_not_written(store):
    async with AnalyticsApiFake(users=30, days=10) as fake:
        day = fake.today - timedelta(days=4)
        fake.inject(500, times=None, day=day, pages_only=True)
        config = make_config(fake, page_limit=10, request_timeout=Duration(0.2), max_retry_elapsed=Duration(0.2))
        async with AnalyticsClient(config, retry=FAST) as client:
            result = await sync_range(client, store, day, day, clock=noon(fake.today))
        assert not result.ok and result.failed.keys() == {day}
        assert fake.requests[0].status == 200 and fake.requests[0].page is None
        assert store.count_rows() == 0 and store.day_state(day) is None


async def test_history_older_than_the_api_window_stays(store):
    async with AnalyticsApiFake(users=5, days=200) as fake, AnalyticsClient(make_config(fake)) as client:
        start = fake.today
        since, until = start - timedelta(days=150), start - timedelta(days=140)
        await sync_range(client, store, since, until, clock=noon(start))
        assert store.count_rows() == 55

        fake.today, fake.days = start + timedelta(days=60), 90
        later = noon(fake.today)
        skipped = await sync_range(client, store, since, until, clock=later)
        assert skipped.fetched == [] and len(skipped.skipped) == 11
        forced = await sync_range(client, store, since, until, clock=later, force=True)
        assert forced.ok and forced.rows == 0 and len(forced.fetched) == 11
        assert store.count_rows() == 55 and len(store.rows(since, until)) == 55
        assert {s.day for s in store.latest_user_summaries()} == {until}
        assert store.known_days()[0] == since


async def test_spend_cap_is_reported_in_the_result(store, caplog):
    async with AnalyticsApiFake(users=3, days=10) as fake:
        fake.spend_capped = True
        async with AnalyticsClient(make_config(fake), retry=FAST) as client:
            result = await sync_range(
                client, store, fake.today - timedelta(days=6), fake.today, concurrency=1, clock=noon(fake.today)
            )
    assert isinstance(result.error, SpendCapError)
    assert "spend cap" in result.summary() and len(result.not_attempted) == 6
    assert FAKE_ADMIN_KEY not in result.summary() and FAKE_ADMIN_KEY not in caplog.text


async def test_progress_reports_every_day_and_until_is_clipped(store):
    seen: list[DayOutcome] = []
    async with AnalyticsApiFake(users=2, days=5) as fake, AnalyticsClient(make_config(fake)) as client:
        today = fake.today
        await sync_range(client, store, today - timedelta(days=4), today - timedelta(days=3), clock=noon(today))
        result = await sync_range(
            client,
            store,
            today - timedelta(days=4),
            today + timedelta(days=30),
            progress=seen.append,
            clock=noon(today),
        )
        assert result.until == today and requested_days(fake)[-1] == today
        with pytest.raises(ValueError, match="after"):
            await sync_range(client, store, today, today - timedelta(days=1))
    assert [(o.day, o.status) for o in sorted(seen, key=lambda o: o.day)] == [
        (today - timedelta(days=4), "skipped"),
        (today - timedelta(days=3), "skipped"),
        (today - timedelta(days=2), "fetched"),
        (today - timedelta(days=1), "fetched"),
        (today, "fetched"),
    ]
    assert all(o.rows == 2 and o.pages == 1 for o in seen if o.day < today and o.status == "fetched")


# -- scheduler -----------------------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_scheduler_refreshes_the_lookback_window_every_interval(store):
    async with AnalyticsApiFake(users=6, days=10) as fake:
        config = make_config(fake, sync_interval=Duration(0.05), lookback_days=3)
        async with AnalyticsClient(config) as client:
            scheduler = UsageSyncScheduler(client, store, config, clock=noon(fake.today))
            scheduler.start()
            await wait_for(lambda: scheduler.cycles >= 3)
            started = time.monotonic()
            await scheduler.stop()
            assert time.monotonic() - started < 1.0
        window = [fake.today - timedelta(days=2), fake.today - timedelta(days=1), fake.today]
        assert requested_days(fake) == window
        per_cycle = [r.day for r in fake.requests[:9]]
        assert sorted(per_cycle) == sorted(window * 3)
        assert scheduler.last_result is not None and scheduler.last_result.ok
        assert scheduler.consecutive_failures == 0 and scheduler.last_success is not None
        latest = fake.expected_records(fake.today, fake.generation(fake.today) - 1)
        assert len(store.rows(fake.today, fake.today)) == len(latest)


async def test_scheduler_always_includes_yesterday_and_today(store):
    async with AnalyticsApiFake(users=2, days=10) as fake:
        config = make_config(fake, lookback_days=1)
        async with AnalyticsClient(config) as client:
            await UsageSyncScheduler(client, store, config, clock=noon(fake.today)).run_once()
        assert requested_days(fake) == [fake.today - timedelta(days=1), fake.today]


async def test_scheduler_logs_failures_and_keeps_running(store, caplog):
    caplog.set_level(logging.INFO)
    async with AnalyticsApiFake(users=2, days=10) as fake:
        fake.spend_capped = True
        config = make_config(fake, sync_interval=Duration(0.05))
        async with AnalyticsClient(config, retry=FAST) as client:
            scheduler = UsageSyncScheduler(client, store, config, clock=noon(fake.today))
            task = scheduler.start()
            await wait_for(lambda: scheduler.consecutive_failures >= 2)
            assert not task.done()
            fake.spend_capped = False
            await wait_for(lambda: scheduler.last_result is not None and scheduler.last_result.ok)
            await scheduler.stop()
        assert scheduler.consecutive_failures == 0
        assert "spend cap" in caplog.text and FAKE_ADMIN_KEY not in caplog.text


async def test_scheduler_reports_each_cycle_and_survives_a_failing_callback(store, caplog):
    async with AnalyticsApiFake(users=2, days=10) as fake:
        config = make_config(fake)
        seen = []

        def on_cycle(result):
            seen.append(result)
            raise RuntimeError("callback broke")

        async with AnalyticsClient(config, retry=FAST) as client:
            scheduler = UsageSyncScheduler(client, store, config, clock=noon(fake.today), on_cycle=on_cycle)
            first = await scheduler.run_once()
            second = await scheduler.run_once()
        assert seen == [first, second] and first.ok and second.ok
        assert "on_cycle callback failed" in caplog.text


async def test_scheduler_stop_interrupts_a_long_retry_after(store):
    async with AnalyticsApiFake(users=2, days=10) as fake:
        fake.inject(429, times=None, retry_after="30")
        config = make_config(fake, max_retry_elapsed=Duration(120.0))
        async with AnalyticsClient(config, retry=FAST) as client:
            scheduler = UsageSyncScheduler(client, store, config, clock=noon(fake.today))
            task = scheduler.start()
            await wait_for(lambda: len(fake.requests) >= 1)
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await scheduler.stop(timeout=5.0)
            assert time.monotonic() - started < 1.0 and task.done()
            assert not task.cancelled()
        assert isinstance(scheduler.last_result.error, ShutdownRequested)
        assert scheduler.consecutive_failures == 0


async def test_scheduler_catches_up_days_missed_while_down(store):
    async with AnalyticsApiFake(users=2, days=40) as fake, AnalyticsClient(make_config(fake)) as client:
        today = fake.today
        await sync_range(client, store, today - timedelta(days=20), today - timedelta(days=10), clock=noon(today))
        mark = len(fake.requests)
        config = make_config(fake, lookback_days=3)
        result = await UsageSyncScheduler(client, store, config, clock=noon(today)).run_once()
        assert result.ok
        assert requested_days(fake, mark) == days(today - timedelta(days=9), today)
        assert len(result.skipped) == 11 and result.since == today - timedelta(days=20)


async def test_scheduler_on_an_empty_store_only_fetches_the_lookback(store):
    async with AnalyticsApiFake(users=2, days=40) as fake:
        config = make_config(fake, lookback_days=4)
        async with AnalyticsClient(config) as client:
            await UsageSyncScheduler(client, store, config, clock=noon(fake.today)).run_once()
        assert requested_days(fake) == days(fake.today - timedelta(days=3), fake.today)


# -- CLI -----------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_ADMIN_API_KEY", raising=False)
    monkeypatch.delenv("CCBRIDGE_ANALYTICS_BASE_URL", raising=False)
    return monkeypatch


def test_cli_syncs_with_the_environment_fallback(tmp_path, capsys, cli_env):
    with running_in_thread(users=5, days=10) as fake:
        cli_env.setenv("CCBRIDGE_ANALYTICS_BASE_URL", fake.url)
        cli_env.setenv("ANTHROPIC_ADMIN_API_KEY", FAKE_ADMIN_KEY)
        today = fake.today
        code = run_sync_cli(None, str(tmp_path), str(today - timedelta(days=3)), str(today - timedelta(days=1)))
        out = capsys.readouterr().out
        assert code == 0, out
        assert "2 days fetched" in out and "10 rows" in out and "2 pages" in out
        assert (tmp_path / DB_FILENAME).exists()
        code = run_sync_cli(None, str(tmp_path), str(today - timedelta(days=3)), str(today - timedelta(days=1)))
        assert code == 0 and "0 days fetched, 2 skipped" in capsys.readouterr().out
        assert len(fake.requests) == 2


def test_cli_reports_auth_failure_without_the_key(tmp_path, capsys, cli_env):
    bad_key = "sk-ant-admin01-CLI-SECRET-VALUE-987"
    with running_in_thread(users=2, days=5) as fake:
        cli_env.setenv("CCBRIDGE_ANALYTICS_BASE_URL", fake.url)
        cli_env.setenv("ANTHROPIC_ADMIN_API_KEY", bad_key)
        day = fake.today - timedelta(days=2)
        code = run_sync_cli(None, str(tmp_path), str(day), str(day + timedelta(days=1)))  # --until is exclusive
    captured = capsys.readouterr()
    assert code == 1
    assert "invalid, revoked or expired" in captured.out
    assert bad_key not in captured.out + captured.err


@pytest.mark.parametrize(
    ("since", "until", "env_key", "message"),
    [
        ("2025-09-01", "2025-09-02", None, "ANTHROPIC_ADMIN_API_KEY is not set"),
        ("tomorrow", None, FAKE_ADMIN_KEY, "--since"),
        ("2025-09-01", "2025-13-01", FAKE_ADMIN_KEY, "--until"),
        ("2025-09-05", "2025-09-01", FAKE_ADMIN_KEY, "--since 2025-09-05 is not before --until 2025-09-01"),
    ],
)
def test_cli_argument_and_config_errors_exit_2(tmp_path, capsys, cli_env, since, until, env_key, message):
    if env_key:
        cli_env.setenv("ANTHROPIC_ADMIN_API_KEY", env_key)
    assert run_sync_cli(None, str(tmp_path), since, until) == 2
    err = capsys.readouterr().err
    assert message in err and FAKE_ADMIN_KEY not in err


def test_cli_missing_config_file_exits_2(tmp_path, capsys, cli_env):
    assert run_sync_cli(str(tmp_path / "nope.yaml"), str(tmp_path), None, None) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_cli_refuses_plain_http_to_a_remote_host(tmp_path, capsys, cli_env):
    cli_env.setenv("CCBRIDGE_ANALYTICS_BASE_URL", "http://api.example.com")
    cli_env.setenv("ANTHROPIC_ADMIN_API_KEY", FAKE_ADMIN_KEY)
    assert run_sync_cli(None, str(tmp_path), None, None) == 2
    assert "https is required" in capsys.readouterr().err
