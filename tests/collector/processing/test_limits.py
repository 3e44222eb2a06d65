"""Size caps: one attribute value and one record are cut and marked ``attributes_truncated``; a gzip body that
inflates to one huge attribute is stored capped (or refused past the decompressed-size cap)."""

from __future__ import annotations

import gzip
from typing import Any

import aiohttp
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.config import Config
from collector.processing.limits import TRUNCATION_MARK, Truncation, cap_strings


def test_values_keys_and_the_record_total_are_capped() -> None:
    t = Truncation(100)
    value = {"small": "abc", "big": "x" * 500, "k" * 300: 1, "list": ["y" * 80, "z" * 80]}
    out = cap_strings(value, 50, t)
    assert out["small"] == "abc"
    assert out["big"] == "x" * (50 - len(TRUNCATION_MARK)) + TRUNCATION_MARK
    assert "k" * 300 not in out and any(k.endswith(TRUNCATION_MARK) for k in out)
    assert sum(len(s) for s in out["list"]) <= 100  # the record allowance ran out
    assert t.values >= 3 and t.bytes >= 500 + 300
    small = {"a": "b", "c": ["d"]}
    assert cap_strings(small, 50, Truncation(100)) is small


def one_attribute_request(size: int) -> bytes:
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.body.string_value = "claude_code.tool_result"
    for k, v in {"session.id": "s", "event.sequence": "1", "tool_name": "Read", "x.blob": "A" * size}.items():
        lr.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    return req.SerializeToString()


async def post(url: str, body: bytes) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/logs",
            data=gzip.compress(body),
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        ) as resp,
    ):
        return resp.status, await resp.text()


async def test_a_gzip_bomb_attribute_is_stored_capped_and_marked(bridge_factory: Any) -> None:
    b = await bridge_factory()
    status, text = await post(b.http_url, one_attribute_request(20 * 1024 * 1024))  # 20 MiB of one attribute
    assert status == 200, text
    (rec,) = [r for r in b.records() if r["kind"] != "chain_head"]
    blob = rec["attributes"]["x.blob"]
    assert len(blob) == 1024 * 1024 and blob.endswith(TRUNCATION_MARK)
    assert rec["attributes_truncated"] == {"values": 1, "bytes": 20 * 1024 * 1024}
    assert b.service.metrics.truncated._value.get() == 1


async def test_past_the_decompressed_cap_is_refused(bridge_factory: Any) -> None:
    assert Config().receivers.otlp.http.max_decompressed_size == 32 * 1024 * 1024
    b = await bridge_factory()
    status, text = await post(b.http_url, one_attribute_request(60 * 1000 * 1000))  # 58 KB of gzip -> 60 MB
    assert status == 413 and "decompressed body exceeds" in text
    assert b.count() == 0


async def test_small_requests_are_not_walked(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides={"receivers": {"max_attribute_value_size": "1KiB", "max_record_size": "4KiB"}})
    status, _ = await post(b.http_url, one_attribute_request(900))
    assert status == 200
    status, _ = await post(b.http_url, one_attribute_request(5000).replace(b"event.sequence", b"event.sequencf"))
    assert status == 200
    recs = sorted((r for r in b.records() if r["kind"] != "chain_head"), key=lambda r: len(str(r)))
    assert "attributes_truncated" not in recs[0]
    assert recs[1]["attributes_truncated"]["values"] == 1
    assert len(recs[1]["attributes"]["x.blob"]) == 1024
