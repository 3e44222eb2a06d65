"""The generic ``http`` exporter: encoding (NDJSON, JSON array, gzip), request splitting under
``max_request_bytes``, configured headers (kept as secrets, sent on the wire), and how each answer of a real HTTP
server (the strict sink in :mod:`tests.fakes.http_sink`) maps to a delivery outcome.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporters
from collector.configtypes import Secret
from collector.delivery.outcome import Permanent, Retry, Success
from exporters.base import DeliveryRecord
from exporters.http import HttpExporter, HttpExporterConfig, split_by_size
from tests.conftest import free_port
from tests.fakes.http_sink import HttpSink


def make_exporter(url: str = "http://127.0.0.1:9/ingest", **section: Any) -> HttpExporter:
    """Through the real config path (``exporters.build_configs``), as ``ccbridge run`` builds it."""
    cfg = exporters.build_configs({"http/t": {"url": url, **section}})["http/t"]
    exp = exporters.create("http/t", cfg)
    assert isinstance(exp, HttpExporter)
    return exp


def rec(i: int, pad: int = 20) -> DeliveryRecord:
    body = orjson.dumps({"id": f"{i:032x}", "kind": "event", "pad": "p" * pad})
    return DeliveryRecord(i + 1, f"{i:032x}", body, 1_700_000_000_000 + i)


def records(n: int, pad: int = 20) -> list[DeliveryRecord]:
    return [rec(i, pad) for i in range(n)]


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as s:
        yield s


# ---------------------------------------------------------------------------------------------------------------
# encoding


def test_ndjson_is_one_record_per_line_with_its_media_type():
    rs = records(3)
    (p,) = make_exporter(format="ndjson").encode(rs)
    assert p.headers["Content-Type"] == "application/x-ndjson"
    assert "Content-Encoding" not in p.headers
    assert p.data == b"".join(r.body + b"\n" for r in rs)
    assert [orjson.loads(line)["id"] for line in p.data.splitlines()] == [r.id for r in rs]
    assert list(p.records) == rs


def test_json_array_is_one_array_with_its_media_type():
    rs = records(3)
    (p,) = make_exporter(format="json_array").encode(rs)
    assert p.headers["Content-Type"] == "application/json"
    assert orjson.loads(p.data) == [orjson.loads(r.body) for r in rs]


@pytest.mark.parametrize("fmt", ["ndjson", "json_array"])
def test_gzip_compresses_exactly_the_plain_encoding(fmt):
    rs = records(50, pad=200)
    (plain,) = make_exporter(format=fmt).encode(rs)
    (packed,) = make_exporter(format=fmt, compression="gzip").encode(rs)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Content-Type"] == plain.headers["Content-Type"]
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data)


def test_record_bodies_are_sent_byte_for_byte():
    body = '{"id":"0123456789abcdef0123456789abcdef","text":"ünïcödé ✓","n":1.50}'.encode()
    r = DeliveryRecord(1, "0123456789abcdef0123456789abcdef", body, 0)
    (p,) = make_exporter(format="ndjson").encode([r])
    assert p.data == body + b"\n"


# ---------------------------------------------------------------------------------------------------------------
# splitting under max_request_bytes


@pytest.mark.parametrize("fmt", ["ndjson", "json_array"])
def test_no_request_exceeds_max_request_bytes(fmt):
    limit = 4096
    rs = records(200, pad=150)
    payloads = make_exporter(format=fmt, max_request_bytes=limit).encode(rs)
    assert len(payloads) > 1
    assert all(len(p.data) <= limit for p in payloads), [len(p.data) for p in payloads]
    assert [r for p in payloads for r in p.records] == rs  # every record once, in order


@pytest.mark.parametrize("fmt", ["ndjson", "json_array"])
def test_an_oversize_record_goes_alone(fmt):
    limit = 2048
    rs = [rec(0), rec(1), rec(2, pad=5000), rec(3), rec(4)]
    payloads = make_exporter(format=fmt, max_request_bytes=limit).encode(rs)
    big = [p for p in payloads if rs[2] in p.records]
    assert len(big) == 1
    assert list(big[0].records) == [rs[2]]
    assert all(len(p.data) <= limit for p in payloads if p is not big[0])
    assert [r for p in payloads for r in p.records] == rs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=60),
    limit=st.integers(min_value=1024, max_value=6000),
    fmt=st.sampled_from(["ndjson", "json_array"]),
)
def test_splitting_property(sizes, limit, fmt):
    rs = [rec(i, pad=n) for i, n in enumerate(sizes)]
    exp = make_exporter(format=fmt, max_request_bytes=limit)
    payloads = exp.encode(rs)
    assert [r for p in payloads for r in p.records] == rs
    for i, p in enumerate(payloads):
        assert p.records
        if len(p.records) > 1:
            assert len(p.data) <= limit
        else:
            assert len(p.data) <= limit or len(p.records[0].body) + 2 > limit
        if i + 1 < len(payloads):  # greedy: the next record would not have fitted
            nxt = payloads[i + 1].records[0]
            assert len(p.data) + len(nxt.body) + 1 > limit - 2


def test_split_by_size_keeps_everything_in_order_with_an_empty_input():
    assert split_by_size([], 1024) == []


# ---------------------------------------------------------------------------------------------------------------
# headers


def test_configured_headers_are_secrets_and_never_shown():
    exp = make_exporter(headers={"Authorization": "Bearer s3cr3t-t0ken", "X-Tenant": "acme"})
    cfg = exp.cfg
    assert isinstance(cfg, HttpExporterConfig)
    assert all(isinstance(v, Secret) for v in cfg.headers.values())
    assert "s3cr3t-t0ken" not in repr(cfg)
    assert "s3cr3t-t0ken" not in str(cfg.headers)
    (p,) = exp.encode(records(1))
    assert p.headers["Authorization"] == "Bearer s3cr3t-t0ken"
    assert p.headers["X-Tenant"] == "acme"


async def test_configured_headers_reach_the_destination(sink):
    exp = make_exporter(sink.url, headers={"Authorization": "Bearer s3cr3t-t0ken", "X-Tenant": "acme"})
    await exp.start()
    try:
        assert isinstance(await exp.push(exp.encode(records(2))[0]), Success)
    finally:
        await exp.close()
    (req,) = sink.requests
    assert req.headers["Authorization"] == "Bearer s3cr3t-t0ken"
    assert req.headers["X-Tenant"] == "acme"
    assert req.headers["User-Agent"].startswith("ccbridge/")


# ---------------------------------------------------------------------------------------------------------------
# push: answers of a real server -> outcomes


async def push_one(exp: HttpExporter, n: int = 3) -> Any:
    await exp.start()
    try:
        return await exp.push(exp.encode(records(n))[0])
    finally:
        await exp.close()


@pytest.mark.parametrize(("fmt", "compression"), [("ndjson", "none"), ("json_array", "none"), ("ndjson", "gzip")])
async def test_accepted_push_is_success_and_every_record_arrives(sink, fmt, compression):
    exp = make_exporter(sink.url, format=fmt, compression=compression)
    assert isinstance(await push_one(exp, 5), Success)
    assert sink.ids() == {r.id for r in records(5)}
    assert sink.duplicates() == 0


async def test_503_with_retry_after_seconds_is_retry_with_that_delay(sink):
    sink.fail_for(60, status=503, retry_after="2")
    out = await push_one(make_exporter(sink.url))
    assert isinstance(out, Retry)
    assert (out.delay, out.status) == (2.0, 503)
    assert out.reason.startswith("HTTP 503")
    assert sink.ids() == set()


async def test_429_with_an_http_date_is_retry_with_the_remaining_seconds(sink):
    sink.throttle_with_date(60, retry_in=5)
    out = await push_one(make_exporter(sink.url))
    assert isinstance(out, Retry)
    assert out.status == 429
    assert out.delay is not None
    assert 3.0 <= out.delay <= 5.0  # HTTP-dates have whole seconds


@pytest.mark.parametrize("status", [408, 500, 502])
async def test_408_and_5xx_without_retry_after_are_retry_without_delay(sink, status):
    sink.fail_requests([1], status=status)
    out = await push_one(make_exporter(sink.url))
    assert isinstance(out, Retry)
    assert (out.status, out.delay) == (status, None)


async def test_400_is_permanent_with_status_and_the_server_reason(sink):
    sink.reject_records([records(3)[1].id], status=400, body="field x is malformed")
    out = await push_one(make_exporter(sink.url))
    assert isinstance(out, Permanent)
    assert out.status == 400
    assert "field x is malformed" in out.reason


async def test_destination_down_is_retry_connection_error():
    exp = make_exporter(f"http://127.0.0.1:{free_port()}/ingest")
    out = await push_one(exp)
    assert isinstance(out, Retry)
    assert out.status is None
    assert out.reason.startswith("connection error")


async def test_slow_destination_past_the_timeout_is_retry_timeout(sink):
    sink.set_delay(3.0)
    exp = make_exporter(sink.url, timeout="300ms")
    started = time.monotonic()
    out = await push_one(exp)
    assert isinstance(out, Retry)
    assert out.reason.startswith("timeout")
    assert time.monotonic() - started < 2.0


async def test_garbage_retry_after_is_ignored_not_raised(sink):
    sink.fail_for(60, status=503, retry_after="²")
    out = await push_one(make_exporter(sink.url))
    assert isinstance(out, Retry)
    assert (out.status, out.delay) == (503, None)
