"""Unit tests of retry timing (:mod:`collector.delivery.retry`) and the HTTP status mapping (:mod:`~.outcome`)."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import pytest

from collector.configtypes import ConfigError, Duration
from collector.delivery.outcome import Permanent, Retry, Success, outcome_for_status
from collector.delivery.retry import (
    MAX_SERVER_DELAY,
    Backoff,
    RetrySettings,
    interruptible_sleep,
    parse_retry_after,
)

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT (the RFC 9110 example date)


def settings(**kw: float) -> RetrySettings:
    base = {"initial_interval": 1.0, "max_interval": 30.0, "multiplier": 2.0, "jitter": 0.0, "max_elapsed_time": 300.0}
    base.update(kw)
    return RetrySettings(
        initial_interval=Duration(base["initial_interval"]),
        max_interval=Duration(base["max_interval"]),
        multiplier=base["multiplier"],
        jitter=base["jitter"],
        max_elapsed_time=Duration(base["max_elapsed_time"]),
    )


# ---------------------------------------------------------------------------------------------------------------
# Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("0", 0.0), (" 120 ", 120.0), ("1.5", 1.5), ("3600", 3600.0), ("86400", MAX_SERVER_DELAY)],
)
def test_retry_after_delta_seconds(value, seconds):
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:50:07 GMT",  # IMF-fixdate (the preferred form)
        "Sunday, 06-Nov-94 08:50:07 GMT",  # obsolete RFC 850 form, which recipients must accept
        "Sun Nov  6 08:50:07 1994",  # obsolete asctime form, likewise
    ],
)
def test_retry_after_http_date_in_every_form_is_seconds_from_now(value):
    assert parse_retry_after(value, now=NOW) == 30.0


def test_retry_after_http_date_uses_the_clock_when_now_is_not_given():
    value = email.utils.formatdate(time.time() + 20, usegmt=True)
    got = parse_retry_after(value)
    assert got is not None
    assert 18.0 <= got <= 20.0


def test_retry_after_date_in_the_past_means_now_and_far_future_is_capped():
    assert parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now=NOW) == MAX_SERVER_DELAY


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "nan", "2 seconds", "Wed, 99 Foo 2026 00:00:00 GMT", "Sun, 06 Nov"],
)
def test_retry_after_absent_or_invalid_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_with_a_unicode_digit_that_float_refuses_is_invalid_not_an_exception():
    assert parse_retry_after("²", now=NOW) is None


def test_retry_after_infinity_is_invalid():
    assert parse_retry_after("inf", now=NOW) is None


# ---------------------------------------------------------------------------------------------------------------
# Backoff


def test_backoff_grows_exponentially_up_to_max_interval():
    b = Backoff(settings(initial_interval=1.0, max_interval=30.0, multiplier=2.0, jitter=0.0))
    assert [b.next_delay() for _ in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_multiplier_one_is_constant():
    b = Backoff(settings(initial_interval=0.5, max_interval=0.5, multiplier=1.0))
    assert {b.next_delay() for _ in range(5)} == {0.5}


def test_backoff_jitter_stays_within_bounds_and_varies():
    jitter = 0.2
    b = Backoff(settings(initial_interval=1.0, max_interval=8.0, multiplier=2.0, jitter=jitter), random.Random(7))
    seen: dict[float, list[float]] = {}
    for _ in range(400):
        base = min(8.0, 1.0 * 2.0**b.attempt)
        seen.setdefault(base, []).append(b.next_delay())
        if b.attempt >= 6:
            b.attempt = 0
    for base, delays in seen.items():
        assert all(base * (1 - jitter) <= d <= base * (1 + jitter) for d in delays), (base, min(delays), max(delays))
        assert max(delays) - min(delays) > base * jitter  # really randomised, across most of the range
    capped = seen[8.0]
    assert max(capped) <= 8.0 * (1 + jitter)


def test_backoff_server_delay_wins_and_still_counts_as_an_attempt():
    b = Backoff(settings(initial_interval=1.0, max_interval=30.0, jitter=0.0))
    assert b.next_delay(7.5) == 7.5
    assert b.next_delay(0.0) == 0.0
    assert b.next_delay() == 4.0  # third attempt
    assert b.next_delay(120.0) == 120.0  # not capped by max_interval: the server knows best


def test_backoff_expires_when_the_next_wait_would_pass_max_elapsed_time():
    b = Backoff(settings(max_elapsed_time=10.0))
    assert not b.expired()
    b.started = time.monotonic() - 9.0
    assert not b.expired(0.5)
    assert b.expired(2.0)
    b.started = time.monotonic() - 11.0
    assert b.expired()


def test_backoff_with_zero_max_elapsed_time_never_expires():
    b = Backoff(settings(max_elapsed_time=0.0))
    b.started = time.monotonic() - 1e6
    assert not b.expired(3600.0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"initial_interval": 0.0}, "initial_interval"),
        ({"initial_interval": 5.0, "max_interval": 1.0}, "max_interval"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_retry_settings_refuse_nonsense(kw, message):
    with pytest.raises(ConfigError, match=message):
        settings(**kw).validate("exporters.http/x.retry")


# ---------------------------------------------------------------------------------------------------------------
# interruptible_sleep


async def test_interruptible_sleep_returns_early_when_stopped():
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    assert await interruptible_sleep(30.0, stop) is True
    assert time.monotonic() - started < 1.0


async def test_interruptible_sleep_sleeps_the_full_delay_when_not_stopped():
    stop = asyncio.Event()
    started = time.monotonic()
    assert await interruptible_sleep(0.1, stop) is False
    assert time.monotonic() - started >= 0.09


async def test_interruptible_sleep_with_stop_already_set_or_no_delay():
    stop = asyncio.Event()
    assert await interruptible_sleep(0.0, stop) is False
    assert await interruptible_sleep(-1.0, stop) is False
    stop.set()
    started = time.monotonic()
    assert await interruptible_sleep(30.0, stop) is True
    assert await interruptible_sleep(0.0, stop) is True
    assert time.monotonic() - started < 0.5


# ---------------------------------------------------------------------------------------------------------------
# outcome_for_status


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status):
    assert isinstance(outcome_for_status(status, "ok"), Success)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_408_429_and_5xx_are_retried_with_the_server_delay(status):
    out = outcome_for_status(status, "busy", retry_after=2.0)
    assert out == Retry(f"HTTP {status}: busy", 2.0, status)
    assert outcome_for_status(status).delay is None  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 415, 422])
def test_other_4xx_are_permanent(status):
    out = outcome_for_status(status, "nope", retry_after=5.0)
    assert out == Permanent(f"HTTP {status}: nope", status)


def test_reason_carries_a_short_single_line_body_snippet():
    body = "line one\n\n   line\ttwo " + "x" * 500
    out = outcome_for_status(400, body)
    assert isinstance(out, Permanent)
    assert out.reason.startswith("HTTP 400: line one line two x")
    assert len(out.reason) == len("HTTP 400: ") + 200
    assert outcome_for_status(503, "").reason == "HTTP 503"  # type: ignore[union-attr]
