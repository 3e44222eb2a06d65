"""Tests proving the Datadog intake fake enforces the wire spec (Datadog "Logs API" and "Metrics API" references,
https://docs.datadoghq.com/api/latest/logs/ and https://docs.datadoghq.com/api/latest/metrics/)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .datadog import DatadogFake, parse_log_timestamp

KEY = "0123456789abcdef0123456789abcdef"
NOW = 1_757_337_000
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def headers(key: str | None = KEY, **extra: str) -> dict[str, str]:
    result = {"Content-Type": "application/json", **extra}
    if key is not None:
        result["DD-API-KEY"] = key
    return result


def series_body(*series: dict[str, Any]) -> bytes:
    return json.dumps({"series": list(series)}).encode()


def gauge(metric: str = "claude_code.cost", timestamp: int = NOW, value: float = 1.5, **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "type": 3, "points": [{"timestamp": timestamp, "value": value}], **extra}


@pytest.fixture
async def dd() -> AsyncIterator[DatadogFake]:
    async with DatadogFake({KEY}, clock=lambda: float(NOW)) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, hdrs: dict[str, str], **kwargs: Any
) -> tuple[int, Any]:
    data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > 1_000_000 else body
    async with session.post(url, data=data, headers=hdrs, **kwargs) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def log_error(status: int) -> dict[str, Any]:
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        413: "Payload Too Large",
        415: "Unsupported Media Type",
    }
    return {"status": str(status), "title": titles[status]}


def assert_log_error(answer: Any, status: int) -> None:
    assert isinstance(answer, dict)
    (error,) = answer["errors"]
    assert {"status": error["status"], "title": error["title"]} == log_error(status)
    assert isinstance(error["detail"], str)


# --------------------------------------------------------------------------- logs: happy path


async def test_logs_batch_accepted_and_recorded(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    entries = [
        {
            "message": "tool Bash accepted",
            "ddsource": "claude-code",
            "ddtags": "env:prod,team:platform",
            "hostname": "dev-laptop-17",
            "service": "ccbridge",
            "status": "info",
            "timestamp": NOW * 1000,
            "ocsf": {"class_uid": 6003},
        },
        {"message": "second"},
    ]
    status, answer = await post(session, dd.logs_url + "?ddtags=bridge:1", json.dumps(entries).encode(), headers())
    assert (status, answer) == (202, {})
    first, second = dd.logs
    assert first.message == "tool Bash accepted"
    assert first.ddsource == "claude-code"
    assert first.ddtags == "env:prod,team:platform"
    assert first.tags == ["bridge:1", "env:prod", "team:platform"]
    assert first.hostname == "dev-laptop-17"
    assert first.service == "ccbridge"
    assert first.status == "info"
    assert first.attributes == {"timestamp": NOW * 1000, "ocsf": {"class_uid": 6003}}
    assert first.timestamp == NOW
    assert first.timestamp_in_window is True
    assert not first.truncated
    assert second.tags == ["bridge:1"]
    assert second.timestamp_in_window is None
    assert dd.requests[0].headers["DD-API-KEY"] == KEY


async def test_single_log_object_accepted(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    status, _ = await post(session, dd.logs_url, b'{"message":"one"}', headers())
    assert status == 202
    assert [entry.message for entry in dd.logs] == ["one"]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", lambda data: data)],
)
async def test_logs_encodings(dd: DatadogFake, session: aiohttp.ClientSession, encoding: str, compress: Any) -> None:
    raw = json.dumps([{"message": "m"}]).encode()
    status, answer = await post(session, dd.logs_url, compress(raw), headers(**{"Content-Encoding": encoding}))
    assert (status, answer) == (202, {})
    assert dd.requests[0].decoded_body == raw


@pytest.mark.parametrize("encoding", ["br", "zstd1", "compress"])
async def test_logs_unsupported_encoding(dd: DatadogFake, session: aiohttp.ClientSession, encoding: str) -> None:
    status, answer = await post(session, dd.logs_url, b'[{"message":"m"}]', headers(**{"Content-Encoding": encoding}))
    assert status == 415
    assert_log_error(answer, 415)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


_GZIP = gzip.compress(b'[{"message":"m"}]')
_DEFLATE = zlib.compress(b'[{"message":"m"}]')
CORRUPT = [
    ("gzip", b"not compressed"),
    ("gzip", _GZIP[:-6]),
    ("gzip", _flip(_GZIP, len(_GZIP) - 8)),
    ("gzip", _flip(_GZIP, len(_GZIP) - 1)),
    ("deflate", b"not compressed"),
    ("deflate", _DEFLATE[:-3]),
    ("deflate", _flip(_DEFLATE, len(_DEFLATE) - 1)),
]


@pytest.mark.parametrize(
    ("encoding", "body"),
    CORRUPT,
    ids=[
        "gzip-plain",
        "gzip-truncated",
        "gzip-crc",
        "gzip-length",
        "deflate-plain",
        "deflate-truncated",
        "deflate-adler",
    ],
)
async def test_logs_corrupt_compressed_body(
    dd: DatadogFake, session: aiohttp.ClientSession, encoding: str, body: bytes
) -> None:
    status, answer = await post(session, dd.logs_url, body, headers(**{"Content-Encoding": encoding}))
    assert status == 400
    assert_log_error(answer, 400)
    assert dd.logs == []


# --------------------------------------------------------------------------- auth and content type


async def test_logs_auth(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    body = b'[{"message":"m"}]'
    status, answer = await post(session, dd.logs_url, body, headers(None))
    assert status == 401
    assert_log_error(answer, 401)
    status, answer = await post(session, dd.logs_url, body, headers("wrong"))
    assert status == 403
    assert_log_error(answer, 403)
    dd.revoke_key(KEY)
    assert (await post(session, dd.logs_url, body, headers()))[0] == 403
    dd.add_key(KEY)
    assert (await post(session, dd.logs_url, body, headers()))[0] == 202
    assert len(dd.logs) == 1


async def test_series_auth(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    for key in (None, "wrong"):
        assert await post(session, dd.series_url, series_body(gauge()), headers(key)) == (
            403,
            {"errors": ["Forbidden"]},
        )
    assert dd.points == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_content_type_required(dd: DatadogFake, session: aiohttp.ClientSession, content_type: str | None) -> None:
    hdrs = {"DD-API-KEY": KEY}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    status, answer = await post(session, dd.logs_url, b'[{"message":"m"}]', hdrs)
    assert status == 415
    assert_log_error(answer, 415)
    status, answer = await post(session, dd.series_url, series_body(gauge()), hdrs)
    assert status == 415
    assert len(answer["errors"]) == 1


async def test_content_type_parameters_allowed(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    hdrs = {"DD-API-KEY": KEY, "Content-Type": "application/json; charset=utf-8"}
    assert (await post(session, dd.logs_url, b'[{"message":"m"}]', hdrs))[0] == 202


# --------------------------------------------------------------------------- logs: validation and limits


@pytest.mark.parametrize(
    "body",
    [
        b'[{"message": "m"}',
        b'[{"message": NaN}]',
        b'"a string"',
        b"[]",
        b'["m"]',
        b'[{"ddsource": "x"}]',
        b'[{"message": 5}]',
        b'[{"message": "m", "ddtags": ["a:b"]}]',
        b'[{"message": "m", "hostname": null}]',
        b'[{"message": "ok"}, {"message": "m", "service": 1}]',
        b'[{"message": "m", "status": 3}]',
    ],
)
async def test_logs_bad_payload_400(dd: DatadogFake, session: aiohttp.ClientSession, body: bytes) -> None:
    status, answer = await post(session, dd.logs_url, body, headers())
    assert status == 400
    assert_log_error(answer, 400)
    assert dd.logs == []


async def test_logs_entry_count_limit(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    ok = json.dumps([{"message": str(n)} for n in range(1000)]).encode()
    assert (await post(session, dd.logs_url, ok, headers()))[0] == 202
    too_many = json.dumps([{"message": str(n)} for n in range(1001)]).encode()
    status, answer = await post(session, dd.logs_url, too_many, headers())
    assert status == 413
    assert_log_error(answer, 413)
    assert len(dd.logs) == 1000


async def test_logs_payload_limit_is_5mb_uncompressed(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    def payload(total: int) -> bytes:
        skeleton = len(json.dumps([{"message": ""}] * 5).encode())
        per = (total - skeleton) // 5
        extra = total - skeleton - per * 5
        messages = ["x" * per] * 4 + ["x" * (per + extra)]
        body = json.dumps([{"message": m} for m in messages]).encode()
        assert len(body) == total
        return body

    at_limit = payload(5_000_000)
    assert (await post(session, dd.logs_url, at_limit, headers()))[0] == 202
    over = payload(5_000_001)
    status, answer = await post(session, dd.logs_url, over, headers())
    assert status == 413
    assert_log_error(answer, 413)
    status, _ = await post(session, dd.logs_url, gzip.compress(over, 1), headers(**{"Content-Encoding": "gzip"}))
    assert status == 413
    assert len(dd.logs) == 5


async def test_oversize_log_entry_is_truncated_not_rejected(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    big = {"message": "y" * 1_200_000, "service": "ccbridge"}
    body = json.dumps([big, {"message": "small"}]).encode()
    status, answer = await post(session, dd.logs_url, body, headers())
    assert (status, answer) == (202, {})
    truncated, small = dd.logs
    assert truncated.truncated
    assert truncated.size > 1_000_000
    assert len(json.dumps({**big, "message": truncated.message}, separators=(",", ":"))) <= 1_000_000
    assert truncated.service == "ccbridge"
    assert not small.truncated


@pytest.mark.parametrize(
    ("attribute", "value", "in_window"),
    [
        ("timestamp", NOW * 1000, True),
        ("timestamp", (NOW - 19 * 3600) * 1000, False),
        ("date", "2025-09-08T13:10:00Z", True),
        ("@timestamp", NOW + 3 * 3600, False),
        ("published", NOW - 17 * 3600, True),
        ("eventTime", "garbage", None),
    ],
)
async def test_log_timestamp_window_is_flagged(
    dd: DatadogFake, session: aiohttp.ClientSession, attribute: str, value: Any, in_window: bool | None
) -> None:
    status, _ = await post(session, dd.logs_url, json.dumps([{"message": "m", attribute: value}]).encode(), headers())
    assert status == 202
    assert dd.logs[0].timestamp_in_window is in_window


def test_parse_log_timestamp() -> None:
    assert parse_log_timestamp(NOW) == NOW
    assert parse_log_timestamp(NOW * 1000 + 500) == NOW + 0.5
    assert parse_log_timestamp("2025-09-08T13:10:00+00:00") == NOW
    assert parse_log_timestamp(True) is None
    assert parse_log_timestamp({"x": 1}) is None


# --------------------------------------------------------------------------- series


async def test_series_accepted_and_recorded(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    count = {
        "metric": "claude_code.lines_added",
        "type": 1,
        "interval": 60,
        "points": [{"timestamp": NOW - 60, "value": 3}, {"timestamp": NOW, "value": 4.5}],
        "tags": ["env:prod", "model:claude-sonnet-4-5"],
        "resources": [{"type": "host", "name": "bridge-01"}],
        "unit": "line",
        "source_type_name": "claude-code",
        "metadata": {"origin": {"origin_product": 0}},
    }
    status, answer = await post(session, dd.series_url, series_body(count, gauge()), headers())
    assert (status, answer) == (202, {"errors": []})
    first, second, third = dd.points
    assert (first.metric, first.type, first.timestamp, first.value, first.interval) == (
        "claude_code.lines_added",
        1,
        NOW - 60,
        3.0,
        60,
    )
    assert first.tags == ["env:prod", "model:claude-sonnet-4-5"]
    assert first.host == "bridge-01"
    assert first.unit == "line"
    assert second.value == 4.5
    assert (third.metric, third.type, third.host) == ("claude_code.cost", 3, None)
    assert len(dd.series) == 2


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress), (None, lambda data: data)]
)
async def test_series_encodings(
    dd: DatadogFake, session: aiohttp.ClientSession, encoding: str | None, compress: Any
) -> None:
    hdrs = headers(**({"Content-Encoding": encoding} if encoding else {}))
    assert (await post(session, dd.series_url, compress(series_body(gauge())), hdrs))[0] == 202


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"series": {}},
        {"series": []},
        {"series": ["x"]},
        {"series": [{"type": 3, "points": [{"timestamp": NOW, "value": 1}]}]},
        {"series": [gauge(metric="")]},
        {"series": [gauge(type=4)]},
        {"series": [gauge(type=True)]},
        {"series": [gauge(type="gauge")]},
        {"series": [{"metric": "m", "type": 3}]},
        {"series": [{"metric": "m", "type": 3, "points": []}]},
        {"series": [{"metric": "m", "points": [{"timestamp": float(NOW), "value": 1}]}]},
        {"series": [{"metric": "m", "points": [{"timestamp": str(NOW), "value": 1}]}]},
        {"series": [{"metric": "m", "points": [{"timestamp": NOW, "value": "1"}]}]},
        {"series": [{"metric": "m", "points": [{"timestamp": NOW}]}]},
        {"series": [{"metric": "m", "points": [[NOW, 1]]}]},
        {"series": [gauge(tags="env:prod")]},
        {"series": [gauge(tags=["env:prod", 5])]},
        {"series": [gauge(resources=[{"name": "h"}])]},
        {"series": [gauge(resources={"type": "host", "name": "h"})]},
        {"series": [gauge(unit=1)]},
        {"series": [gauge(interval=0)]},
        {"series": [gauge(interval=1.5)]},
        {"series": [gauge(metadata=[])]},
        {"series": [gauge(type=1)]},
        {"series": [gauge(type=2)]},
    ],
)
async def test_series_bad_payload_400(dd: DatadogFake, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
    status, answer = await post(session, dd.series_url, json.dumps(body).encode(), headers())
    assert status == 400
    assert answer["errors"] and all(isinstance(item, str) for item in answer["errors"])
    assert dd.points == []


async def test_series_malformed_json(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    assert (await post(session, dd.series_url, b'{"series": [', headers()))[0] == 400


async def test_count_without_interval_can_be_allowed(session: aiohttp.ClientSession) -> None:
    async with DatadogFake({KEY}, require_interval_for_count_rate=False) as fake:
        body = series_body(gauge(type=1, timestamp=int(time.time())))
        assert (await post(session, fake.series_url, body, headers()))[0] == 202


async def test_series_wire_size_limit(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    def body_of(size: int) -> bytes:
        base = series_body(gauge(tags=[""]))
        body = series_body(gauge(tags=["t" * (size - len(base))]))
        assert len(body) == size
        return body

    assert (await post(session, dd.series_url, body_of(512_000), headers()))[0] == 202
    status, answer = await post(session, dd.series_url, body_of(512_001), headers())
    assert status == 413
    assert len(answer["errors"]) == 1


async def test_series_decompressed_size_limit(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    def body_of(size: int) -> bytes:
        base = series_body(gauge(tags=[""]))
        return series_body(gauge(tags=["t" * (size - len(base))]))

    hdrs = headers(**{"Content-Encoding": "gzip"})
    below = gzip.compress(body_of(5_242_879))
    assert len(below) < 512_000
    assert (await post(session, dd.series_url, below, hdrs))[0] == 202
    status, _ = await post(session, dd.series_url, gzip.compress(body_of(5_242_880)), hdrs)
    assert status == 413


async def test_series_points_outside_window_are_dropped_with_202(
    dd: DatadogFake, session: aiohttp.ClientSession
) -> None:
    series = {
        "metric": "m",
        "type": 3,
        "points": [
            {"timestamp": NOW - 3600, "value": 1},
            {"timestamp": NOW - 3601, "value": 2},
            {"timestamp": NOW + 600, "value": 3},
            {"timestamp": NOW + 601, "value": 4},
        ],
    }
    status, answer = await post(session, dd.series_url, series_body(series), headers())
    assert status == 202
    assert len(answer["errors"]) == 2
    assert [point.value for point in dd.points] == [1.0, 3.0]
    assert [(d.point.value, "past" in d.reason) for d in dd.dropped_points] == [(2.0, True), (4.0, False)]


# --------------------------------------------------------------------------- routing


async def test_routing(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    async with session.get(dd.url + "/api/v1/validate", headers=headers()) as resp:
        assert resp.status == 404
    async with session.get(dd.logs_url, headers=headers()) as resp:
        assert resp.status == 405
    async with session.put(dd.series_url, headers=headers()) as resp:
        assert resp.status == 405


# --------------------------------------------------------------------------- failure injection


async def test_rate_limit_injection(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    dd.fail_next(2, status=429, retry_after=7, endpoint="logs")
    for _ in range(2):
        async with session.post(dd.logs_url, data=b'[{"message":"m"}]', headers=headers()) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "7"
            assert resp.headers["X-RateLimit-Remaining"] == "0"
            assert resp.headers["X-RateLimit-Reset"] == "7"
            assert {"X-RateLimit-Limit", "X-RateLimit-Period", "X-RateLimit-Name"} <= set(resp.headers)
            (error,) = (await resp.json())["errors"]
            assert (error["status"], error["title"]) == ("429", "Too Many Requests")
    assert (await post(session, dd.series_url, series_body(gauge()), headers()))[0] == 202
    assert (await post(session, dd.logs_url, b'[{"message":"m"}]', headers()))[0] == 202
    assert len(dd.logs) == 1


@pytest.mark.parametrize("status", [500, 503, 413, 403, 408])
async def test_status_injection_on_series(dd: DatadogFake, session: aiohttp.ClientSession, status: int) -> None:
    dd.fail_next(status=status, endpoint="series")
    got, answer = await post(session, dd.series_url, series_body(gauge()), headers())
    assert got == status
    assert len(answer["errors"]) == 1
    if status == 403:
        assert answer == {"errors": ["Forbidden"]}
    assert dd.points == []
    assert (await post(session, dd.series_url, series_body(gauge()), headers()))[0] == 202


async def test_injection_precedes_auth(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    dd.fail_next(status=503)
    assert (await post(session, dd.logs_url, b"", {}))[0] == 503


async def test_drop_and_delay(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    body = b'[{"message":"m"}]'
    dd.drop_next()
    with pytest.raises(aiohttp.ClientError):
        await post(session, dd.logs_url, body, headers())
    assert dd.logs == []
    dd.drop_next(after_processing=True)
    with pytest.raises(aiohttp.ClientError):
        await post(session, dd.logs_url, body, headers())
    assert len(dd.logs) == 1
    dd.delay_next(0.5)
    with pytest.raises(asyncio.TimeoutError):
        await post(session, dd.logs_url, body, headers(), timeout=aiohttp.ClientTimeout(total=0.1))
    dd.response_delay = 0.05
    started = time.monotonic()
    assert (await post(session, dd.logs_url, body, headers()))[0] == 202
    assert time.monotonic() - started >= 0.05
    assert [request.dropped for request in dd.requests] == [True, True, False, False]


async def test_wait_for_and_reset(dd: DatadogFake, session: aiohttp.ClientSession) -> None:
    await post(session, dd.logs_url, b'[{"message":"a"},{"message":"b"}]', headers())
    assert len(await dd.wait_for_logs(2, timeout=1)) == 2
    with pytest.raises(TimeoutError):
        await dd.wait_for_points(1, timeout=0.05)
    dd.reset()
    assert (dd.logs, dd.requests) == ([], [])


# --------------------------------------------------------------------------- process mode


async def test_runs_as_a_process_with_control_api(session: aiohttp.ClientSession) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.datadog", "--port", "0", "--api-key", "K"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.to_thread(proc.stdout.readline)).strip()
        assert url.startswith("http://127.0.0.1:")
        assert (await post(session, url + "/api/v2/logs", b'[{"message":"e2e"}]', headers("K")))[0] == 202
        body = series_body(gauge(timestamp=int(time.time())))
        assert (await post(session, url + "/api/v2/series", body, headers("K")))[0] == 202
        async with session.get(url + "/__fake__/logs") as resp:
            assert [entry["message"] for entry in await resp.json()] == ["e2e"]
        async with session.get(url + "/__fake__/points") as resp:
            assert [point["metric"] for point in await resp.json()] == ["claude_code.cost"]
        async with session.post(url + "/__fake__/fail", json={"status": 429, "retry_after": 2}) as resp:
            assert resp.status == 200
        assert (await post(session, url + "/api/v2/logs", b'[{"message":"x"}]', headers("K")))[0] == 429
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0


async def test_without_retention_entries_are_still_validated_and_counted(session: aiohttp.ClientSession) -> None:
    async with DatadogFake({KEY}, clock=lambda: float(NOW), retain=False) as dd:
        assert (await post(session, dd.logs_url, b'[{"message":"a"},{"message":"b"}]', headers()))[0] == 202
        status, _ = await post(session, dd.logs_url, b'[{"message":"a"},{"nomessage":1}]', headers())
        assert status == 400  # the same checks as with retention; nothing of a refused batch is counted
        assert (await post(session, dd.logs_url, b'[{"message":"a"}]', headers("f" * 32)))[0] == 403
        assert (await post(session, dd.series_url, series_body(gauge()), headers()))[0] == 202
        assert dd.logs == [] and dd.points == [] and dd.requests == []
        assert (dd.log_count, dd.point_count, dd.request_count) == (2, 1, 4)
        dd.reset()
        assert (dd.log_count, dd.point_count, dd.request_count) == (0, 0, 0)
