"""Analytics API client against the strict fake: paging, retries, typed errors, tolerant parsing, config."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import orjson
import pytest

from collector.config import ConfigError, Duration, Secret, build
from collector.enrich.analytics_client import (
    USER_AGENT,
    AnalyticsClient,
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    ResponseFormatError,
    RetriesExhaustedError,
    RetryEvent,
    RetryPolicy,
    ShutdownRequested,
    SpendCapError,
    parse_record,
    parse_retry_after,
    parse_usage_date,
    parse_usage_page,
)
from collector.enrich.analytics_config import AnalyticsApiConfig
from tests.fakes.analytics_api import (
    FAKE_ADMIN_KEY,
    FAKE_NON_ADMIN_KEY,
    FAKE_NOPERM_KEY,
    USAGE_PATH,
    AnalyticsApiFake,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "analytics-api"
FIXTURE_DAY = date(2025, 9, 8)
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


def make_config_for_url(url: str) -> AnalyticsApiConfig:
    return AnalyticsApiConfig(  # type: ignore[call-arg]
        enabled=True,
        base_url=url,
        admin_api_key=Secret(FAKE_ADMIN_KEY),
        request_timeout=Duration(5.0),
        max_retry_elapsed=Duration(30.0),
        max_requests_per_second=0.0,
    )


def load_fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


@pytest.fixture
async def fake():
    async with AnalyticsApiFake(users=45, days=10, api_keys=3) as server:
        yield server


# -- tolerant parsing (recorded fixtures) --------------------------------------------------------------------


def test_fixture_page1_parses_both_actor_types_and_costs_in_cents():
    page = parse_usage_page(load_fixture("analytics_page1.json"), FIXTURE_DAY, "req_1")
    assert page.has_more is True
    assert page.next_page == "page_MjAyNS0wOS0wOFQwMDowMDowMFo6Ym9iQGV4YW1wbGUuY29t"
    assert [r.actor_id for r in page.records] == ["alice@example.com", "ci-pipeline-key", "bob@example.com"]
    alice, ci_key, bob = page.records
    assert alice.day == FIXTURE_DAY and alice.email == "alice@example.com" and alice.api_key_name is None
    assert ci_key.actor_type == "api_actor" and ci_key.api_key_name == "ci-pipeline-key" and ci_key.email is None
    assert [m.model for m in alice.models] == ["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]
    assert alice.cost_cents == Decimal(155)
    assert alice.cost_usd == Decimal("1.55")
    assert ci_key.cost_usd == Decimal("4.25")
    assert alice.edit_accepted == 52 + 9 + 6 and alice.edit_rejected == 4 + 1
    assert alice.acceptance_rate == pytest.approx(67 / 72)
    assert (alice.num_sessions, alice.lines_added, alice.lines_removed, alice.commits, alice.pull_requests) == (
        7,
        1284,
        316,
        5,
        1,
    )
    assert bob.customer_type == "subscription" and bob.subscription_type == "team"
    assert alice.subscription_type is None
    assert alice.key == ("2025-09-08", "user_actor", "alice@example.com", "vscode", "api")


def test_fixture_page2_missing_tool_and_subscription_default():
    page = parse_usage_page(load_fixture("analytics_page2.json"), FIXTURE_DAY)
    assert page.has_more is False and page.next_page is None
    carol, dave = page.records
    assert "multi_edit_tool" not in dave.raw["tool_actions"]
    assert dave.tool_actions["multi_edit_tool"].accepted == 0
    assert dave.tool_actions["multi_edit_tool"].rejected == 0
    assert dave.subscription_type is None
    assert dave.acceptance_rate == pytest.approx(2 / 3)
    assert carol.edit_accepted == 40 + 5 + 3 + 2


def test_rate_limit_fixture_body_shape():
    body = load_fixture("analytics_error_rate_limit.json")
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"


def test_both_date_formats_and_unknown_fields_are_kept():
    record = copy.deepcopy(load_fixture("analytics_page1.json")["data"][0])
    record["date"] = "2025-09-08"
    record["new_top_level"] = {"x": 1}
    record["tool_actions"]["future_tool"] = {"accepted": 3, "rejected": 1}
    record["core_metrics"]["new_metric"] = 5
    parsed = parse_record(record, date(2000, 1, 1))
    assert parsed.day == FIXTURE_DAY
    assert parsed.extra == {"new_top_level": {"x": 1}}
    assert parsed.tool_actions["future_tool"].accepted == 3
    assert parsed.raw["core_metrics"]["new_metric"] == 5
    assert parse_usage_date("2025-09-08T00:00:00Z") == FIXTURE_DAY
    assert parse_usage_date("2025-09-08T00:00:00.000+00:00") == FIXTURE_DAY
    assert parse_usage_date("2025-09-07T20:00:00-04:00") == FIXTURE_DAY
    assert parse_usage_date("09/08/2025") is None


def test_sparse_and_odd_records_are_tolerated():
    sparse = {"actor": {"type": "api_actor", "api_key_name": "k"}}
    parsed = parse_record(sparse, FIXTURE_DAY)
    assert parsed.day == FIXTURE_DAY
    assert parsed.terminal_type == "unknown" and parsed.customer_type == "unknown"
    assert parsed.num_sessions == 0 and parsed.models == () and parsed.acceptance_rate is None
    assert set(parsed.tool_actions) == {"edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool"}
    odd = {
        "date": "2025-09-08T00:00:00Z",
        "actor": {"type": "user_actor", "email_address": "e@x"},
        "core_metrics": {"num_sessions": "4", "lines_of_code": None, "commits_by_claude_code": 2.0},
        "tool_actions": {"edit_tool": {"accepted": 1}},
        "model_breakdown": [{"model": "m", "estimated_cost": {"currency": "USD", "amount": 12.5}}],
    }
    parsed = parse_record(odd, FIXTURE_DAY)
    assert (parsed.num_sessions, parsed.lines_added, parsed.commits) == (4, 0, 2)
    assert parsed.tool_actions["edit_tool"].rejected == 0
    assert parsed.cost_usd == Decimal("0.125")


def test_records_without_actor_are_skipped_and_counted():
    payload = load_fixture("analytics_page2.json")
    payload["data"].append({"date": "2025-09-08", "actor": {"type": "user_actor"}})
    payload["data"].append("not an object")
    page = parse_usage_page(payload, FIXTURE_DAY)
    assert len(page.records) == 2 and page.skipped == 2


def test_non_page_payloads_are_format_errors():
    with pytest.raises(ResponseFormatError):
        parse_usage_page({"items": []}, FIXTURE_DAY)
    with pytest.raises(ResponseFormatError):
        parse_usage_page({"data": [], "has_more": True, "next_page": None}, FIXTURE_DAY)


def test_retry_after_parsing_both_forms():
    now = datetime(2025, 9, 8, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=42), usegmt=True), now) == 42.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=42), usegmt=True), now) == 0.0
    assert parse_retry_after("-3") is None  # not delta-seconds (RFC 9110): the client's own backoff applies
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


# -- paging and headers --------------------------------------------------------------------------------------


async def test_pages_through_a_day_with_required_headers(fake):
    day = fake.today - timedelta(days=4)
    async with AnalyticsClient(make_config(fake, page_limit=10)) as client:
        result = await client.fetch_day(day)
    assert result.pages == 5
    assert len(result.records) == 48
    assert len({r.key for r in result.records}) == 48
    assert {r.actor_type for r in result.records} == {"user_actor", "api_actor"}
    assert [r["actor"] for r in fake.expected_records(day)] == [dict(r.raw)["actor"] for r in result.records]
    requests = fake.requests
    assert len(requests) == 5 and all(r.status == 200 for r in requests)
    assert all(r.query["starting_at"] == day.isoformat() and r.query["limit"] == "10" for r in requests)
    assert requests[0].page is None and all(r.page for r in requests[1:])
    assert all(r.key == "admin" and r.anthropic_version == "2023-06-01" for r in requests)
    assert all(r.user_agent == USER_AGENT for r in requests) and USER_AGENT.startswith("ccbridge/")


async def test_rfc3339_and_plain_date_servers_parse_the_same():
    async with (
        AnalyticsApiFake(users=3, days=5, date_format="date") as fake,
        AnalyticsClient(make_config(fake)) as client,
    ):
        result = await client.fetch_day(fake.today - timedelta(days=2))
    assert {r.day for r in result.records} == {fake.today - timedelta(days=2)}
    assert result.records[0].raw["date"] == (fake.today - timedelta(days=2)).isoformat()


async def test_day_outside_history_is_an_empty_page(fake):
    async with AnalyticsClient(make_config(fake)) as client:
        result = await client.fetch_day(fake.today - timedelta(days=400))
    assert result.records == [] and result.pages == 1


# -- retries -------------------------------------------------------------------------------------------------


async def test_transient_failures_are_retried_until_success(fake):
    day = fake.today - timedelta(days=3)
    fake.inject(529, times=2)
    fake.inject(503, times=1, body=b"<html>bad gateway</html>")
    fake.inject(disconnect=True, times=2)  # aiohttp itself retries once on a reused keep-alive connection
    fake.inject(500, times=1, pages_only=True)
    events: list[RetryEvent] = []
    async with AnalyticsClient(make_config(fake, page_limit=20), retry=FAST, on_retry=events.append) as client:
        result = await client.fetch_day(day)
    assert len(result.records) == 48
    assert [e.status for e in events] == [529, 529, 503, None, 500]
    assert events[0].reason == "HTTP 529 overloaded_error" and events[0].request_id
    assert "connection error" in events[3].reason
    assert [r.status for r in fake.requests] == [529, 529, 503, 0, 0, 200, 500, 200, 200]


async def test_retry_after_seconds_is_honoured(fake):
    fake.inject(429, times=1, retry_after="1")
    events: list[RetryEvent] = []
    async with AnalyticsClient(make_config(fake), retry=FAST, on_retry=events.append) as client:
        started = time.monotonic()
        await client.fetch_day(fake.today - timedelta(days=3))
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    assert events[0].status == 429 and 1.0 <= events[0].delay <= 1.2
    first, second = fake.requests
    assert second.at - first.at >= 1.0


async def test_retry_after_http_date_is_honoured(fake):
    when = datetime.now(UTC) + timedelta(seconds=2)
    fake.inject(503, times=1, retry_after=format_datetime(when, usegmt=True))
    events: list[RetryEvent] = []
    async with AnalyticsClient(make_config(fake), retry=FAST, on_retry=events.append) as client:
        await client.fetch_day(fake.today - timedelta(days=3))
    assert 0.5 <= events[0].delay <= 2.3


async def test_retry_after_beyond_budget_raises_rate_limited_without_waiting(fake):
    fake.inject(429, times=None, retry_after="600")
    async with AnalyticsClient(make_config(fake, max_retry_elapsed=Duration(5.0)), retry=FAST) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as info:
            await client.fetch_day(fake.today - timedelta(days=3))
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 600.0 and info.value.status == 429
    assert info.value.request_id and info.value.request_id in str(info.value)


async def test_persistent_5xx_gives_up_at_the_deadline(fake):
    fake.inject(500, times=None)
    config = make_config(fake, request_timeout=Duration(0.3), max_retry_elapsed=Duration(0.4))
    async with AnalyticsClient(config, retry=RetryPolicy(base_delay=0.05, max_delay=0.1)) as client:
        started = time.monotonic()
        with pytest.raises(RetriesExhaustedError) as info:
            await client.fetch_day(fake.today - timedelta(days=3))
    assert time.monotonic() - started < 1.0
    assert "HTTP 500 api_error" in str(info.value) and len(fake.requests) >= 3


async def test_request_timeout_is_retried(fake):
    fake.inject(times=1, delay=1.0)
    config = make_config(fake, request_timeout=Duration(0.2))
    async with AnalyticsClient(config, retry=FAST) as client:
        result = await client.fetch_day(fake.today - timedelta(days=3))
    assert len(result.records) == 48


async def test_spend_cap_429_without_retry_after_is_reported_not_retried_forever(fake):
    fake.spend_capped = True
    async with AnalyticsClient(make_config(fake), retry=FAST) as client:
        with pytest.raises(SpendCapError) as info:
            await client.fetch_day(fake.today - timedelta(days=3))
    assert len(fake.requests) == FAST.spend_cap_after
    assert "spend cap" in str(info.value) and info.value.status == 429


async def test_rate_limit_fixture_served_with_retry_after(fake):
    body = (FIXTURES / "analytics_error_rate_limit.json").read_bytes()
    fake.inject(429, times=1, retry_after="1", body=body, content_type="application/json")
    events: list[RetryEvent] = []
    async with AnalyticsClient(make_config(fake), retry=FAST, on_retry=events.append) as client:
        await client.fetch_day(fake.today - timedelta(days=3))
    assert events[0].reason == "HTTP 429 rate_limit_error" and events[0].delay >= 1.0


async def test_pacing_limits_the_request_rate(fake):
    async with AnalyticsClient(make_config(fake, page_limit=10, max_requests_per_second=20.0)) as client:
        await client.fetch_day(fake.today - timedelta(days=3))
    times = [r.at for r in fake.requests]
    assert len(times) == 5 and times[-1] - times[0] >= 4 * 0.05 * 0.9


async def test_pacing_applies_within_a_walk_and_days_run_concurrently(fake):
    days = [fake.today - timedelta(days=n) for n in range(3, 7)]  # settled days: 48 records = 5 pages of 10
    async with AnalyticsClient(make_config(fake, page_limit=10, max_requests_per_second=10.0)) as client:
        started = time.monotonic()
        fetched = await asyncio.gather(*(client.fetch_day(d) for d in days))
        elapsed = time.monotonic() - started
    assert [f.pages for f in fetched] == [5, 5, 5, 5]
    by_day: dict[date, list[float]] = {}
    for r in fake.requests:
        by_day.setdefault(r.day, []).append(r.at)
    for times in by_day.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.1 * 0.9  # at most 10 requests/s within one walk
    firsts = [times[0] for times in by_day.values()]
    assert max(firsts) - min(firsts) < 0.09  # walks of different days do not wait for each other
    assert elapsed < 4 * 0.1 * 4  # 20 requests paced client-wide would need >= 1.9 s


async def test_retry_after_pauses_every_walk(fake):
    day_a, day_b = fake.today - timedelta(days=3), fake.today - timedelta(days=4)
    fake.inject(429, times=1, retry_after="1", day=day_a)
    async with AnalyticsClient(make_config(fake), retry=FAST) as client:
        walk_a = asyncio.create_task(client.fetch_day(day_a))
        deadline = time.monotonic() + 5
        while not any(r.status == 429 for r in fake.requests) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        limited_at = next(r.at for r in fake.requests if r.status == 429)
        await client.fetch_day(day_b)
        await walk_a
    first_b = next(r.at for r in fake.requests if r.day == day_b)
    assert first_b - limited_at >= 0.95  # day B waited for day A's retry-after


async def test_shutdown_interrupts_a_retry_wait(fake):
    fake.inject(429, times=None, retry_after="30")
    client = AnalyticsClient(make_config(fake, max_retry_elapsed=Duration(120.0)), retry=FAST)
    try:
        task = asyncio.create_task(client.fetch_day(fake.today - timedelta(days=3)))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        client.shutdown.set()
        with pytest.raises(ShutdownRequested):
            await task
        assert time.monotonic() - started < 0.5
    finally:
        await client.close()


# -- typed errors that never show the key ----------------------------------------------------------------------


def assert_key_hidden(key: str, exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    for text in (str(exc), repr(exc), repr(exc.args), caplog.text):
        assert key not in text
        assert key[-12:] not in text


@pytest.mark.parametrize(
    ("key", "error", "problem"),
    [
        ("sk-ant-admin01-REVOKED-0123456789abcdef", AuthenticationError, "invalid, revoked or expired"),
        (FAKE_NON_ADMIN_KEY, AuthenticationError, "not an Admin API key"),
        ("", AuthenticationError, "no Admin API key was sent"),
        (FAKE_NOPERM_KEY, PermissionDeniedError, "lacks permission"),
    ],
)
async def test_auth_errors_name_the_problem_and_hide_the_key(fake, caplog, key, error, problem):
    caplog.set_level(logging.DEBUG)
    client = AnalyticsClient(make_config(fake, admin_api_key=Secret(key)), retry=FAST)
    async with client:
        with pytest.raises(error) as info:
            await client.fetch_day(fake.today - timedelta(days=3))
    assert problem in str(info.value)
    assert len(fake.requests) == 1
    assert info.value.status in (401, 403) and info.value.request_id
    if key:
        assert_key_hidden(key, info.value, caplog)
        assert key not in repr(client)


async def test_api_message_echoing_a_key_is_scrubbed(fake, caplog):
    fake.inject(400, times=1, message=f"bad key {FAKE_ADMIN_KEY} and sk-ant-api03-someoneelse")
    async with AnalyticsClient(make_config(fake), retry=FAST) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.fetch_day(fake.today - timedelta(days=3))
    assert_key_hidden(FAKE_ADMIN_KEY, info.value, caplog)
    assert "sk-ant-api03-someoneelse" not in str(info.value)


async def test_bad_parameters_are_400_errors_that_name_the_parameter(fake):
    async with AnalyticsClient(make_config(fake, page_limit=5000), retry=FAST) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.fetch_day(fake.today)
    assert "limit" in str(info.value) and info.value.status == 400
    async with AnalyticsClient(make_config(fake, anthropic_version="1999-01-01"), retry=FAST) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.fetch_day(fake.today)
    assert "anthropic-version" in str(info.value)
    assert len(fake.requests) == 2


async def test_wrong_base_path_is_reported_as_not_found(fake):
    config = make_config(fake, base_url=fake.url + "/gateway")
    async with AnalyticsClient(config, retry=FAST) as client:
        with pytest.raises(InvalidRequestError, match="not found"):
            await client.fetch_day(fake.today)


# -- the fake enforces the wire contract ----------------------------------------------------------------------


async def raw_get(fake: AnalyticsApiFake, params: dict[str, str], headers: dict[str, str] | None = None):
    sent = {"x-api-key": FAKE_ADMIN_KEY, "anthropic-version": "2023-06-01"} if headers is None else headers
    async with (
        aiohttp.ClientSession() as session,
        session.get(fake.url + USAGE_PATH, params=params, headers=sent) as resp,
    ):
        return resp.status, resp.headers.get("request-id"), await resp.json()


@pytest.mark.parametrize(
    ("params", "headers", "status", "error_type", "fragment"),
    [
        ({"starting_at": "2025-09-08"}, {"anthropic-version": "2023-06-01"}, 401, "authentication_error", "x-api-key"),
        (
            {"starting_at": "2025-09-08"},
            {"x-api-key": FAKE_ADMIN_KEY},
            400,
            "invalid_request_error",
            "anthropic-version",
        ),
        ({"starting_at": "2025-09-08T00:00:00Z"}, None, 400, "invalid_request_error", "starting_at"),
        ({"starting_at": "2025-02-30"}, None, 400, "invalid_request_error", "starting_at"),
        ({}, None, 400, "invalid_request_error", "starting_at"),
        ({"starting_at": "2025-09-08", "limit": "0"}, None, 400, "invalid_request_error", "limit"),
        ({"starting_at": "2025-09-08", "limit": "1001"}, None, 400, "invalid_request_error", "limit"),
        ({"starting_at": "2025-09-08", "ending_at": "2025-09-09"}, None, 400, "invalid_request_error", "ending_at"),
        ({"starting_at": "2025-09-08", "page": "page_garbage"}, None, 400, "invalid_request_error", "cursor"),
    ],
)
async def test_fake_rejects_what_the_spec_rejects(fake, params, headers, status, error_type, fragment):
    got, request_id, body = await raw_get(fake, params, headers)
    assert got == status
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert fragment in body["error"]["message"]
    assert body["request_id"] == request_id


async def test_fake_cursor_is_bound_to_starting_at(fake):
    day = fake.today - timedelta(days=3)
    status, _, body = await raw_get(fake, {"starting_at": day.isoformat(), "limit": "5"})
    assert status == 200 and body["has_more"] and len(body["data"]) == 5
    other = (day - timedelta(days=1)).isoformat()
    status, _, error = await raw_get(fake, {"starting_at": other, "page": body["next_page"]})
    assert status == 400 and "cursor" in error["error"]["message"]
    status, _, page2 = await raw_get(fake, {"starting_at": day.isoformat(), "limit": "5", "page": body["next_page"]})
    assert status == 200 and page2["data"][0] == fake.expected_records(day)[5]


async def test_fake_default_limit_is_20(fake):
    status, _, body = await raw_get(fake, {"starting_at": (fake.today - timedelta(days=3)).isoformat()})
    assert status == 200 and len(body["data"]) == 20 and body["has_more"]


async def test_fake_partial_days_grow_per_walk_and_stay_consistent_within_one(fake):
    first = await raw_get(fake, {"starting_at": fake.today.isoformat(), "limit": "10"})
    second_walk = await raw_get(fake, {"starting_at": fake.today.isoformat(), "limit": "1000"})
    assert len(second_walk[2]["data"]) > len(fake.expected_records(fake.today, 0))
    _, _, continued = await raw_get(fake, {"starting_at": fake.today.isoformat(), "page": first[2]["next_page"]})
    assert continued["data"][0] == fake.expected_records(fake.today, 0)[10]


# -- configuration -------------------------------------------------------------------------------------------


def test_default_config_is_valid_and_disabled():
    config = AnalyticsApiConfig()
    config.validate("enrichment.analytics_api")
    assert config.enabled is False and config.page_limit == 1000 and config.lookback_days == 3


def test_config_builds_from_yaml_values():
    config = build(
        AnalyticsApiConfig,
        {"enabled": True, "admin_api_key": "sk-ant-admin01-x", "sync_interval": "30m", "request_timeout": "10s"},
        "enrichment.analytics_api",
    )
    config.validate("enrichment.analytics_api")
    assert config.sync_interval == 1800.0 and config.request_timeout == 10.0
    assert "sk-ant-admin01-x" not in repr(config)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"enabled": True}, "admin_api_key"),
        ({"admin_api_key": Secret("sk-ant-admin01-abc def")}, "admin_api_key"),
        ({"base_url": "ftp://api.anthropic.com"}, "base_url"),
        ({"base_url": "http://api.anthropic.com"}, "base_url"),
        ({"base_url": "https://user:pw@api.anthropic.com"}, "base_url"),
        ({"base_url": "https://api.anthropic.com/?x=1"}, "base_url"),
        ({"base_url": "https://api.anthropic.com:99999"}, "base_url"),
        ({"page_limit": 0}, "page_limit"),
        ({"page_limit": 1001}, "page_limit"),
        ({"lookback_days": 0}, "lookback_days"),
        ({"sync_interval": Duration(60.0)}, "sync_interval"),
        ({"anthropic_version": "latest"}, "anthropic_version"),
        ({"request_timeout": Duration(0.0)}, "request_timeout"),
        ({"max_retry_elapsed": Duration(1.0)}, "max_retry_elapsed"),
        ({"max_requests_per_second": -1.0}, "max_requests_per_second"),
    ],
)
def test_config_errors_name_the_dotted_key(values, key):
    with pytest.raises(ConfigError) as info:
        AnalyticsApiConfig(**values).validate("enrichment.analytics_api")  # type: ignore[arg-type]
    assert str(info.value).startswith(f"enrichment.analytics_api.{key}:")
    assert "abc def" not in str(info.value)


def test_loopback_http_is_allowed_for_fakes():
    AnalyticsApiConfig(base_url="http://127.0.0.1:8080").validate("a")
    AnalyticsApiConfig(base_url="http://localhost:8080/").validate("a")
    AnalyticsApiConfig(base_url="http://[::1]:8080").validate("a")


async def test_connection_refused_fails_at_once_without_retrying():
    from collector.enrich.analytics_client import UnreachableError
    from tests.conftest import free_port

    cfg = make_config_for_url(f"http://127.0.0.1:{free_port()}")
    events: list[RetryEvent] = []
    started = time.monotonic()
    async with AnalyticsClient(cfg, on_retry=events.append) as client:
        with pytest.raises(UnreachableError, match="connection refused"):
            await client.fetch_day(date(2026, 3, 1))
    assert events == [] and time.monotonic() - started < 5


async def test_an_unresolvable_host_fails_at_once():
    from collector.enrich.analytics_client import UnreachableError

    cfg = make_config_for_url("http://no-such-host.invalid:8443")
    started = time.monotonic()
    async with AnalyticsClient(cfg) as client:
        with pytest.raises(UnreachableError, match="DNS"):
            await client.fetch_day(date(2026, 3, 1))
    assert time.monotonic() - started < 10
