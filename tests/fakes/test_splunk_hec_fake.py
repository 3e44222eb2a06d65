"""Tests proving the Splunk HEC fake enforces the wire spec (Splunk "Format events for HTTP Event Collector" and
"HTTP Event Collector REST API endpoints",
https://docs.splunk.com/Documentation/Splunk/latest/Data/FormateventsforHTTPEventCollector)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import shutil
import ssl
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .splunk_hec import SplunkHecFake, TokenPolicy, normalize_time, parse_concatenated

CHANNEL = "6f0b8d5e-3c1a-4f7e-9b2d-8a4c1e7f0d93"
OTHER_CHANNEL = "11111111-2222-3333-4444-555555555555"
EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def auth(token: str = "tok") -> dict[str, str]:
    return {"Authorization": f"Splunk {token}"}


def batch(*objects: Any) -> bytes:
    return "\n".join(json.dumps(obj) for obj in objects).encode()


@pytest.fixture
async def hec() -> AsyncIterator[SplunkHecFake]:
    tokens = {
        "tok": TokenPolicy(indexes=["ai_audit", "main"]),
        "acktok": TokenPolicy(indexes=["ai_audit"], ack=True),
        "qtok": TokenPolicy(allow_query_string_auth=True),
        "off": TokenPolicy(disabled=True),
    }
    async with SplunkHecFake(tokens, ack_delay=None) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    async with session.post(url, data=body, headers=headers or {}, **kwargs) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


# --------------------------------------------------------------------------- happy path


async def test_good_batch_is_indexed_with_metadata(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    body = batch(
        {
            "time": 1757337000.123,
            "host": "dev-laptop-17",
            "source": "claude-code",
            "sourcetype": "claude:code:ocsf",
            "index": "ai_audit",
            "fields": {"class_uid": "1007", "decision": "accept", "tags": ["a", 1]},
            "event": {"class_uid": 1007, "message": "ran Bash"},
        },
        {"time": "1757337001.456", "index": "main", "event": "plain text"},
    )
    status, answer = await post(session, hec.event_url, body, auth())
    assert (status, answer) == (200, {"text": "Success", "code": 0})
    first, second = hec.events
    assert first.index == "ai_audit"
    assert first.host == "dev-laptop-17"
    assert first.source == "claude-code"
    assert first.sourcetype == "claude:code:ocsf"
    assert first.time == 1757337000.123
    assert first.fields == {"class_uid": "1007", "decision": "accept", "tags": ["a", 1]}
    assert first.event == {"class_uid": 1007, "message": "ran Bash"}
    assert first.token == "tok"
    assert first.channel is None
    assert second.time == 1757337001.456
    assert second.event == "plain text"
    assert second.host == "splunk-fake"
    assert second.sourcetype == "httpevent"
    request = hec.requests[0]
    assert request.headers["Authorization"] == "Splunk tok"
    assert request.body == body
    assert request.status == 200


@pytest.mark.parametrize("path", ["/services/collector/event", "/services/collector/event/1.0", "/services/collector"])
async def test_event_route_aliases(hec: SplunkHecFake, session: aiohttp.ClientSession, path: str) -> None:
    status, answer = await post(session, hec.url + path, batch({"event": "x"}), auth())
    assert (status, answer["code"]) == (200, 0)
    assert hec.events[0].index == "ai_audit"


async def test_objects_may_be_concatenated_without_whitespace(
    hec: SplunkHecFake, session: aiohttp.ClientSession
) -> None:
    status, _ = await post(session, hec.event_url, b'{"event":1}{"event":2}  \r\n\t{"event":3}', auth())
    assert status == 200
    assert [event.event for event in hec.events] == [1, 2, 3]


async def test_metadata_does_not_carry_over(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    body = batch({"event": "a", "index": "main", "host": "h1"}, {"event": "b"})
    await post(session, hec.event_url, body, auth())
    assert [(e.index, e.host) for e in hec.events] == [("main", "h1"), ("ai_audit", "splunk-fake")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1757337000, 1757337000.0),
        (1757337000.1234567, 1757337000.123457),
        ("1757337000.5", 1757337000.5),
        (1757337000123, 1757337000.123),
        (1757337000123456, 1757337000.123456),
        (1757337000123456789, 1757337000.123457),
    ],
)
def test_time_is_read_by_magnitude(raw: Any, expected: float) -> None:
    assert normalize_time(raw) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("raw", [True, None, "abc", "", "1e9", "-5", -5, [1], {"t": 1}])
def test_invalid_times(raw: Any) -> None:
    with pytest.raises(ValueError):
        normalize_time(raw)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1}\n{"b":[2,3]}\n',
        b'{"a":1}\r\n\n  {"b":"\xc3\xa9"}  \n',
        b'{"a":1}{"b":2}\n{"c":3}',  # two values on one line
        b'{"a":\n1}\n{"b":2}',  # a value across lines
        b'{"a":123456789012345678901234567890}\n{"b":2}',  # beyond 64 bits
        b'{"a":-9999999999999999999}\n{"b":2}',  # below the signed 64-bit minimum
        b'{"a":NaN}\n{"b":2}',
        b'{"a":1}\n{"b":2',
        b'{"a":"\\ud800"}\n{"b":2}',  # a lone surrogate escape
        b'{"a":1}\n\xff\n',
    ],
)
def test_line_fast_path_reads_what_the_exact_reading_reads(body: bytes) -> None:
    from .splunk_hec import _reject_constant

    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    values: list[Any] = []
    broken = False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        text, broken = body[: exc.start].decode("utf-8"), True
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\n\r":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            broken = True
            break
        values.append(value)
    assert parse_concatenated(body) == (values, broken)


def test_parse_concatenated_reports_syntax_error_position() -> None:
    assert parse_concatenated(b'{"a":1} {"b":2}') == ([{"a": 1}, {"b": 2}], False)
    assert parse_concatenated(b'{"a":1},{"b":2}') == ([{"a": 1}], True)
    assert parse_concatenated(b'{"a":1} {"b":\xff}') == ([{"a": 1}], True)


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    ("headers", "query", "status", "code"),
    [
        ({}, "", 401, 2),
        ({"Authorization": "Bearer tok"}, "", 401, 3),
        ({"Authorization": "tok"}, "", 401, 3),
        ({"Authorization": "Splunk"}, "", 401, 3),
        ({"Authorization": "Basic !!!"}, "", 401, 3),
        ({"Authorization": "Splunk nope"}, "", 403, 4),
        ({"Authorization": "Splunk off"}, "", 403, 1),
        ({}, "?token=tok", 400, 16),
        ({}, "?token=nope", 403, 4),
    ],
)
async def test_auth_failures(
    hec: SplunkHecFake,
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    query: str,
    status: int,
    code: int,
) -> None:
    got_status, answer = await post(session, hec.event_url + query, batch({"event": "x"}), headers)
    texts = {1: "Token disabled", 2: "Token is required", 3: "Invalid authorization", 4: "Invalid token"}
    texts[16] = "Query string authorization is not enabled"
    assert (got_status, answer) == (status, {"text": texts[code], "code": code})
    assert hec.events == []


async def test_basic_auth_and_query_token_accepted(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    basic = base64.b64encode(b"anyuser:tok").decode()
    status, _ = await post(session, hec.event_url, batch({"event": 1}), {"Authorization": f"Basic {basic}"})
    assert status == 200
    status, _ = await post(session, hec.event_url + "?token=qtok", batch({"event": 2}))
    assert status == 200
    assert [e.token for e in hec.events] == ["tok", "qtok"]


async def test_token_revocation_and_disabling_at_runtime(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.disable_token("tok")
    assert await post(session, hec.event_url, batch({"event": 1}), auth()) == (
        403,
        {"text": "Token disabled", "code": 1},
    )
    hec.enable_token("tok")
    assert (await post(session, hec.event_url, batch({"event": 1}), auth()))[0] == 200
    hec.revoke_token("tok")
    assert await post(session, hec.event_url, batch({"event": 1}), auth()) == (
        403,
        {"text": "Invalid token", "code": 4},
    )


# --------------------------------------------------------------------------- per-event validation


@pytest.mark.parametrize(
    ("objects", "code", "text"),
    [
        ([{"time": 1}], 12, "Event field is required"),
        ([{"event": " "}], 13, "Event field cannot be blank"),
        ([{"event": ""}], 13, "Event field cannot be blank"),
        ([{"event": None}], 6, "Invalid data format"),
        ([{"event": False}], 6, "Invalid data format"),
        ([{"event": "x", "time": "yesterday"}], 6, "Invalid data format"),
        ([{"event": "x", "time": True}], 6, "Invalid data format"),
        ([{"event": "x", "host": 5}], 6, "Invalid data format"),
        ([{"event": "x", "index": "secret"}], 7, "Incorrect index"),
        ([{"event": "x", "index": ""}], 7, "Incorrect index"),
        ([{"event": "x", "fields": {"a": {"b": 1}}}], 15, "Error in handling indexed fields"),
        ([{"event": "x", "fields": {"a": [{"b": 1}]}}], 15, "Error in handling indexed fields"),
        ([{"event": "x", "fields": {"a": None}}], 15, "Error in handling indexed fields"),
        ([{"event": "x", "fields": ["a"]}], 15, "Error in handling indexed fields"),
        ([[{"event": "x"}]], 6, "Invalid data format"),
        (["just a string"], 6, "Invalid data format"),
    ],
)
async def test_invalid_event_rejected_with_spec_code(
    hec: SplunkHecFake, session: aiohttp.ClientSession, objects: list[Any], code: int, text: str
) -> None:
    status, answer = await post(session, hec.event_url, batch(*objects), auth())
    assert status == 400
    assert answer == {"text": text, "code": code, "invalid-event-number": 0}
    assert hec.events == []


@pytest.mark.parametrize("event", [{}, [], 0, True, "x", [1, "a"]])
async def test_non_blank_event_values_accepted(hec: SplunkHecFake, session: aiohttp.ClientSession, event: Any) -> None:
    status, _ = await post(session, hec.event_url, batch({"event": event}), auth())
    assert status == 200
    assert hec.events[0].event == event


async def test_events_before_the_invalid_one_are_kept(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    body = batch({"event": "a"}, {"event": "b"}, {"event": "c", "index": "nope"}, {"event": "d"})
    status, answer = await post(session, hec.event_url, body, auth())
    assert (status, answer) == (400, {"text": "Incorrect index", "code": 7, "invalid-event-number": 2})
    assert [event.event for event in hec.events] == ["a", "b"]
    assert [event.position for event in hec.events] == [0, 1]


@pytest.mark.parametrize(
    ("body", "number"),
    [
        (b'{"event":"a"},{"event":"b"}', 1),
        (b'{"event":"a"}\n{"event":"b"', 1),
        (b'{"event":"a"} {"event":NaN}', 1),
        (b'[{"event":"a"}]', 0),
        (b'{"event":"a"} {"event":"\xff"}', 1),
    ],
)
async def test_syntax_errors_give_code_6_with_event_number(
    hec: SplunkHecFake, session: aiohttp.ClientSession, body: bytes, number: int
) -> None:
    status, answer = await post(session, hec.event_url, body, auth())
    assert (status, answer) == (400, {"text": "Invalid data format", "code": 6, "invalid-event-number": number})
    assert len(hec.events) == number


@pytest.mark.parametrize("body", [b"", b"  \n\t "])
async def test_empty_body_is_no_data(hec: SplunkHecFake, session: aiohttp.ClientSession, body: bytes) -> None:
    assert await post(session, hec.event_url, body, auth()) == (400, {"text": "No data", "code": 5})


async def test_unknown_envelope_key_stops_indexing_but_answers_200(
    hec: SplunkHecFake, session: aiohttp.ClientSession
) -> None:
    body = batch({"event": "a"}, {"event": "b", "severity": "high"}, {"event": "c"})
    status, answer = await post(session, hec.event_url, body, auth())
    assert (status, answer) == (200, {"text": "Success", "code": 0})
    assert [event.event for event in hec.events] == ["a"]
    assert [(d.position, d.reason.startswith("unknown")) for d in hec.dropped_events] == [(1, True), (2, False)]


async def test_unknown_envelope_key_strict_mode(session: aiohttp.ClientSession) -> None:
    async with SplunkHecFake({"tok": TokenPolicy()}, strict_unknown_keys=True) as fake:
        status, answer = await post(session, fake.event_url, batch({"event": "a"}, {"event": "b", "x": 1}), auth())
    assert (status, answer) == (400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 1})


async def test_metrics_event_without_event_field(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    body = batch({"fields": {"metric_name:cpu": 1.5, "region": "eu"}})
    status, _ = await post(session, hec.event_url, body, auth())
    assert status == 200
    assert hec.events[0].event is None


async def test_index_allow_list_none_allows_any_index(session: aiohttp.ClientSession) -> None:
    async with SplunkHecFake({"tok": TokenPolicy()}) as fake:
        status, _ = await post(session, fake.event_url, batch({"event": 1, "index": "anything"}), auth())
        assert status == 200
        assert fake.events[0].index == "anything"


# --------------------------------------------------------------------------- encoding and size


async def test_gzip_body_accepted(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    raw = batch({"event": "a"}, {"event": "b"})
    headers = {**auth(), "Content-Encoding": "gzip"}
    status, _ = await post(session, hec.event_url, gzip.compress(raw), headers)
    assert status == 200
    assert [event.event for event in hec.events] == ["a", "b"]
    assert hec.requests[0].decoded_body == raw
    assert hec.requests[0].body[:2] == b"\x1f\x8b"


async def test_multi_member_gzip_accepted(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    body = gzip.compress(batch({"event": "a"})) + gzip.compress(batch({"event": "b"}))
    status, _ = await post(session, hec.event_url, body, {**auth(), "Content-Encoding": "gzip"})
    assert status == 200
    assert len(hec.events) == 2


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


GOOD_GZIP = gzip.compress(b'{"event": "a"}\n' * 50)
CORRUPT_GZIP = {
    "truncated": GOOD_GZIP[:-6],
    "wrong crc": _flip(GOOD_GZIP, len(GOOD_GZIP) - 8),
    "wrong length": _flip(GOOD_GZIP, len(GOOD_GZIP) - 1),
    "not deflate": b"\x1f\x8b\x07\x00" + GOOD_GZIP[4:],
    "garbage after the header": GOOD_GZIP[:10] + b"garbage" * 5,
    "not gzip at all": b"plain text, not gzip",
}


@pytest.mark.parametrize("body", CORRUPT_GZIP.values(), ids=CORRUPT_GZIP.keys())
async def test_corrupt_gzip_rejected(hec: SplunkHecFake, session: aiohttp.ClientSession, body: bytes) -> None:
    status, answer = await post(session, hec.event_url, body, {**auth(), "Content-Encoding": "gzip"})
    assert (status, answer) == (400, {"text": "Invalid data format", "code": 6})
    assert hec.events == []


@pytest.mark.parametrize("encoding", ["deflate", "br", "zstd"])
async def test_other_encodings_unsupported(hec: SplunkHecFake, session: aiohttp.ClientSession, encoding: str) -> None:
    body = zlib.compress(batch({"event": "a"}))
    status, answer = await post(session, hec.event_url, body, {**auth(), "Content-Encoding": encoding})
    assert status == 415
    assert answer["code"] == 415
    assert hec.events == []


async def test_max_content_length_applies_to_wire_and_decompressed_body(session: aiohttp.ClientSession) -> None:
    async with SplunkHecFake({"tok": TokenPolicy()}, max_content_length=200) as fake:
        ok = batch({"event": "x" * 100})
        assert (await post(session, fake.event_url, ok, auth()))[0] == 200
        big = batch({"event": "x" * 300})
        status, answer = await post(session, fake.event_url, big, auth())
        assert status == 413
        assert answer["code"] == 413
        assert "too large" in answer["text"]
        compressed = gzip.compress(big)
        assert len(compressed) < 200
        status, _ = await post(session, fake.event_url, compressed, {**auth(), "Content-Encoding": "gzip"})
        assert status == 413
        assert len(fake.events) == 1


async def test_size_is_checked_before_auth(session: aiohttp.ClientSession) -> None:
    async with SplunkHecFake({"tok": TokenPolicy()}, max_content_length=10) as fake:
        status, _ = await post(session, fake.event_url, b"x" * 50, {})
    assert status == 413


# --------------------------------------------------------------------------- indexer acknowledgement


async def test_ack_token_requires_valid_channel(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    body = batch({"event": "a"})
    assert await post(session, hec.event_url, body, auth("acktok")) == (
        400,
        {"text": "Data channel is missing", "code": 10},
    )
    bad = {**auth("acktok"), "X-Splunk-Request-Channel": "not-a-guid"}
    assert await post(session, hec.event_url, body, bad) == (400, {"text": "Invalid data channel", "code": 11})
    assert hec.events == []


async def test_channel_on_non_ack_token_must_still_be_a_guid(
    hec: SplunkHecFake, session: aiohttp.ClientSession
) -> None:
    headers = {**auth(), "X-Splunk-Request-Channel": "zzz"}
    assert (await post(session, hec.event_url, batch({"event": 1}), headers))[1]["code"] == 11
    headers = {**auth(), "X-Splunk-Request-Channel": CHANNEL}
    assert await post(session, hec.event_url, batch({"event": 1}), headers) == (
        200,
        {"text": "Success", "code": 0},
    )
    assert hec.events[0].channel == CHANNEL


async def test_ack_lifecycle_manual_release_and_read_once(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    headers = {**auth("acktok"), "X-Splunk-Request-Channel": CHANNEL}
    ack_url = hec.url + ACK_PATH
    first = await post(session, hec.event_url, batch({"event": "a"}), headers)
    second = await post(session, hec.event_url, batch({"event": "b"}), headers)
    assert first == (200, {"text": "Success", "code": 0, "ackId": 0})
    assert second == (200, {"text": "Success", "code": 0, "ackId": 1})
    assert [event.ack_id for event in hec.events] == [0, 1]
    assert await post(session, ack_url, b'{"acks":[0,1,7]}', headers) == (
        200,
        {"acks": {"0": False, "1": False, "7": False}},
    )
    assert hec.ack_status(CHANNEL) == {0: "pending", 1: "pending"}
    assert hec.release_acks(CHANNEL, [0]) == 1
    assert await post(session, ack_url, b'{"acks":[0,1]}', headers) == (200, {"acks": {"0": True, "1": False}})
    assert await post(session, ack_url, b'{"acks":[0]}', headers) == (200, {"acks": {"0": False}})
    assert hec.ack_status(CHANNEL) == {0: "reported", 1: "pending"}
    assert hec.pending_acks() == [(CHANNEL, 1)]


async def test_ack_ids_are_per_channel_and_channel_query_param_works(
    hec: SplunkHecFake, session: aiohttp.ClientSession
) -> None:
    for channel in (CHANNEL, OTHER_CHANNEL, CHANNEL):
        status, answer = await post(session, hec.event_url + f"?channel={channel}", batch({"event": 1}), auth("acktok"))
        assert status == 200
    assert [event.ack_id for event in hec.events] == [0, 0, 1]
    hec.release_acks()
    status, answer = await post(
        session, hec.url + ACK_PATH + f"?channel={OTHER_CHANNEL}", b'{"acks":[0,1]}', auth("acktok")
    )
    assert answer == {"acks": {"0": True, "1": False}}


async def test_ack_delay_and_never_arriving_acks(session: aiohttp.ClientSession) -> None:
    async with SplunkHecFake({"t": TokenPolicy(ack=True)}, ack_delay=0.15) as fake:
        headers = {**auth("t"), "X-Splunk-Request-Channel": CHANNEL}
        await post(session, fake.event_url, batch({"event": 1}), headers)
        ack_url = fake.url + ACK_PATH
        assert (await post(session, ack_url, b'{"acks":[0]}', headers))[1] == {"acks": {"0": False}}
        await asyncio.sleep(0.2)
        assert (await post(session, ack_url, b'{"acks":[0]}', headers))[1] == {"acks": {"0": True}}
        fake.ack_delay = None
        await post(session, fake.event_url, batch({"event": 2}), headers)
        await asyncio.sleep(0.2)
        assert (await post(session, ack_url, b'{"acks":[1]}', headers))[1] == {"acks": {"1": False}}


async def test_ack_endpoint_errors(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    ack_url = hec.url + ACK_PATH
    with_channel = {"X-Splunk-Request-Channel": CHANNEL}
    assert await post(session, ack_url, b'{"acks":[0]}', {**auth(), **with_channel}) == (
        400,
        {"text": "ACK is disabled", "code": 14},
    )
    assert (await post(session, ack_url, b'{"acks":[0]}', auth("acktok")))[1]["code"] == 10
    assert (await post(session, ack_url, b'{"acks":[0]}', with_channel))[1]["code"] == 2
    for bad in (b'{"acks":"0"}', b'{"ack":[0]}', b'{"acks":[-1]}', b"[0]", b"{"):
        status, answer = await post(session, ack_url, bad, {**auth("acktok"), **with_channel})
        assert (status, answer) == (400, {"text": "Invalid data format", "code": 6})


async def test_failed_batch_gets_no_ack_id(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    headers = {**auth("acktok"), "X-Splunk-Request-Channel": CHANNEL}
    status, answer = await post(session, hec.event_url, batch({"event": "a"}, {"time": 1}), headers)
    assert status == 400
    assert "ackId" not in answer
    assert hec.pending_acks() == []


async def test_concurrent_posts_get_distinct_ack_ids(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    headers = {**auth("acktok"), "X-Splunk-Request-Channel": CHANNEL}
    results = await asyncio.gather(*(post(session, hec.event_url, batch({"event": n}), headers) for n in range(20)))
    assert sorted(answer["ackId"] for _, answer in results) == list(range(20))
    assert len(await hec.wait_for_events(20, timeout=1)) == 20


# --------------------------------------------------------------------------- health, routing


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ("healthy", 200, 17),
        ("queues_full", 503, 18),
        ("ack_unavailable", 503, 19),
        ("queues_full_ack_unavailable", 503, 20),
    ],
)
async def test_health(hec: SplunkHecFake, session: aiohttp.ClientSession, state: str, status: int, code: int) -> None:
    hec.health_state = state
    for path in ("/services/collector/health", "/services/collector/health/1.0"):
        for headers in ({}, auth(), auth("bogus")):
            async with session.get(hec.url + path, headers=headers) as resp:
                assert resp.status == status
                assert (await resp.json())["code"] == code


async def test_routing_errors(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    async with session.get(hec.url + "/services/collector/nope") as resp:
        assert resp.status == 404
        assert await resp.json() == {"text": "The requested URL was not found on this server.", "code": 404}
    async with session.get(hec.event_url, headers=auth()) as resp:
        assert resp.status == 405
        assert "POST" in resp.headers["Allow"]
    async with session.options(hec.event_url) as resp:
        assert resp.status == 200
        assert "POST" in resp.headers["Allow"]
    async with session.get(hec.url + "/__fake__/events") as resp:
        assert resp.status == 404


async def test_raw_endpoint(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    url = hec.url + "/services/collector/raw?sourcetype=st&index=main&host=h"
    status, _ = await post(session, url, b"line one\n\nline two\r\n", auth())
    assert status == 200
    assert [(e.event, e.sourcetype, e.index, e.host) for e in hec.events] == [
        ("line one", "st", "main", "h"),
        ("line two", "st", "main", "h"),
    ]
    status, answer = await post(session, hec.url + "/services/collector/raw?index=nope", b"x", auth())
    assert (status, answer) == (400, {"text": "Incorrect index", "code": 7})
    status, answer = await post(session, hec.url + "/services/collector/raw", b"x", auth("acktok"))
    assert answer["code"] == 10


# --------------------------------------------------------------------------- failure injection


async def test_fail_next_busy_then_recovers(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.fail_next(2)
    body = batch({"event": 1})
    assert await post(session, hec.event_url, body, auth()) == (503, {"text": "Server is busy", "code": 9})
    assert await post(session, hec.event_url, body, auth()) == (503, {"text": "Server is busy", "code": 9})
    assert (await post(session, hec.event_url, body, auth()))[0] == 200
    assert len(hec.events) == 1
    assert [request.status for request in hec.requests] == [503, 503, 200]


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        (500, None, "Internal server error"),
        (429, None, "HEC queue is at capacity"),
        (429, 27, "HEC ACK channel is at capacity"),
        (503, 23, "Server is shutting down"),
    ],
)
async def test_fail_next_statuses(
    hec: SplunkHecFake, session: aiohttp.ClientSession, status: int, code: int | None, text: str
) -> None:
    hec.fail_next(status=status, code=code, retry_after=3)
    async with session.post(hec.event_url, data=batch({"event": 1}), headers=auth()) as resp:
        assert resp.status == status
        assert (await resp.json())["text"] == text
        assert resp.headers["Retry-After"] == "3"


async def test_fail_next_without_hec_code_and_413(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.fail_next(status=502)
    assert await post(session, hec.event_url, batch({"event": 1}), auth()) == (502, "Bad Gateway")
    hec.fail_next(status=413)
    status, answer = await post(session, hec.event_url, batch({"event": 1}), auth())
    assert (status, answer["code"]) == (413, 413)
    with pytest.raises(ValueError):
        hec.fail_next(status=500, code=9)


async def test_warning_code_still_indexes(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.fail_next(status=200, code=24)
    assert await post(session, hec.event_url, batch({"event": 1}), auth()) == (
        200,
        {"text": "HEC queue is approaching its capacity limit", "code": 24},
    )
    assert len(hec.events) == 1


async def test_fault_endpoint_filter(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.fail_next(endpoint="health")
    assert (await post(session, hec.event_url, batch({"event": 1}), auth()))[0] == 200
    async with session.get(hec.url + "/services/collector/health") as resp:
        assert resp.status == 503
    with pytest.raises(ValueError):
        hec.fail_next(endpoint="nowhere")


async def test_drop_connection(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.drop_next()
    with pytest.raises(aiohttp.ClientError):
        await post(session, hec.event_url, batch({"event": 1}), auth())
    assert hec.events == []
    assert hec.requests[0].dropped
    assert (await post(session, hec.event_url, batch({"event": 2}), auth()))[0] == 200


async def test_drop_after_processing_keeps_events(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.drop_next(after_processing=True)
    headers = {**auth("acktok"), "X-Splunk-Request-Channel": CHANNEL}
    with pytest.raises(aiohttp.ClientError):
        await post(session, hec.event_url, batch({"event": 1}), headers)
    assert [event.event for event in hec.events] == [1]
    assert hec.pending_acks() == [(CHANNEL, 0)]


async def test_delay_causes_client_timeout(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    hec.delay_next(0.5)
    with pytest.raises(asyncio.TimeoutError):
        await post(session, hec.event_url, batch({"event": 1}), auth(), timeout=aiohttp.ClientTimeout(total=0.1))
    hec.response_delay = 0.05
    status, _ = await post(session, hec.event_url, batch({"event": 2}), auth())
    assert status == 200


async def test_reset_clears_records(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    await post(session, hec.event_url, batch({"event": 1}), auth())
    hec.fail_next()
    hec.reset()
    assert (hec.events, hec.requests) == ([], [])
    assert (await post(session, hec.event_url, batch({"event": 1}), auth()))[0] == 200


async def test_records_readable_from_another_thread(hec: SplunkHecFake, session: aiohttp.ClientSession) -> None:
    await post(session, hec.event_url, batch({"event": 1}), auth())
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(len(hec.events)))
    thread.start()
    thread.join()
    assert seen == [1]


# --------------------------------------------------------------------------- TLS and process mode


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not available")
async def test_tls(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with SplunkHecFake({"tok": TokenPolicy()}, ssl_context=server_ctx) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        status, _ = await post(session, fake.event_url, batch({"event": 1}), auth(), ssl=client_ctx)
        assert status == 200


async def test_runs_as_a_process_with_control_api(session: aiohttp.ClientSession) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.splunk_hec", "--port", "0", "--token", "T", "--ack", "--manual-acks"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.to_thread(proc.stdout.readline)).strip()
        assert url.startswith("http://127.0.0.1:")
        headers = {**auth("T"), "X-Splunk-Request-Channel": CHANNEL}
        status, answer = await post(session, url + EVENT_PATH, batch({"event": "e2e"}), headers)
        assert (status, answer["ackId"]) == (200, 0)
        async with session.get(url + "/__fake__/events") as resp:
            events = await resp.json()
        assert [(e["event"], e["channel"]) for e in events] == [("e2e", CHANNEL)]
        async with session.get(url + "/__fake__/requests") as resp:
            assert (await resp.json())[0]["headers"]["Authorization"] == "Splunk T"
        async with session.post(url + "/__fake__/release_acks", json={}) as resp:
            assert (await resp.json()) == {"result": 1}
        assert (await post(session, url + ACK_PATH, b'{"acks":[0]}', headers))[1] == {"acks": {"0": True}}
        async with session.post(url + "/__fake__/fail", json={"count": 1, "status": 503}) as resp:
            assert resp.status == 200
        assert (await post(session, url + EVENT_PATH, batch({"event": 1}), headers))[0] == 503
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0


async def test_without_retention_events_are_still_validated_and_counted(session: aiohttp.ClientSession) -> None:
    async with SplunkHecFake({"tok": TokenPolicy(ack=True)}, ack_delay=0.0, retain=False) as fake:
        url = fake.url + EVENT_PATH
        headers = {**auth(), "X-Splunk-Request-Channel": CHANNEL}
        status, answer = await post(session, url, batch({"event": {"a": 1}}, {"event": "b"}), headers)
        assert (status, answer["code"]) == (200, 0) and "ackId" in answer
        status, answer = await post(session, url, batch({"event": {"a": 1}}, {"time": 1}), headers)
        assert status == 400 and answer["invalid-event-number"] == 1  # the same checks as with retention
        status, _ = await post(session, url, batch({"event": 1}), auth("wrong"))
        assert status == 403
        assert fake.events == [] and fake.requests == []
        assert (fake.event_count, fake.request_count) == (3, 3)  # a partial batch indexes the events before N
        fake.reset()
        assert (fake.event_count, fake.request_count) == (0, 0)
