"""The ``splunk_hec`` destination end to end: recorded Claude Code requests into an in-process bridge (real receivers,
store and delivery engine), out to the strict HEC fake. Proves what the exporter unit tests cannot: that the cursor
waits for indexer acknowledgement, that an ``invalid-event-number`` refusal dead-letters exactly one record (visible
in ``ccbridge dlq list``) while the others are indexed once, that busy/429 answers are retried until delivered, and
that token errors and Splunk's health reach ``/metrics`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from collector import cli
from collector.delivery.engine import DestinationWorker
from tests.conftest import CLAUDE_CODE_FIXTURES, Bridge, stored_bodies
from tests.contract.make_golden import recorded_requests, replay
from tests.fakes.splunk_hec import SplunkHecFake, TokenPolicy

TOKEN = "99999999-8888-7777-6666-555555555555"
DEST = "splunk_hec/siem"
EVENT_PATH = "/services/collector/event"

BridgeFactory = Callable[..., Awaitable[Bridge]]


def destination(url: str, **extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "endpoint": url,
        "token": TOKEN,
        "index": "ai_audit",
        "batch": {"max_records": 100, "timeout": "200ms"},
        "retry": {"initial_interval": "100ms", "max_interval": "500ms", "jitter": 0},
        "ack_poll_interval": "50ms",
        "health_check_interval": "1s",
    }
    section.update(extra)
    return section


async def start(bridge_factory: BridgeFactory, url: str, **extra: Any) -> Bridge:
    return await bridge_factory(overrides={"exporters": {DEST: destination(url, **extra)}})


async def send_run(b: Bridge, run: str) -> None:
    for req in recorded_requests(CLAUDE_CODE_FIXTURES / run):
        result = await replay(b.http_url, b.grpc_target, req)
        assert getattr(result, "status", 200) == 200, result


def ack_polls(fake: SplunkHecFake) -> list[Any]:
    """Acknowledgement queries that asked about at least one id (not the token probe)."""
    return [
        r
        for r in fake.requests
        if r.path == "/services/collector/ack" and r.status == 200 and orjson.loads(r.decoded_body or b"{}")["acks"]
    ]


def worker(b: Bridge) -> DestinationWorker:
    assert b.service.delivery is not None
    (w,) = [w for w in b.service.delivery.workers if w.name == DEST]
    return w


def stored_in_seq_order(b: Bridge) -> list[dict[str, Any]]:
    return stored_bodies(b.data_dir, "records")


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        return resp.status, await resp.text()


async def scraped(b: Bridge, series: str) -> float | None:
    """The value of ``series`` (``name`` or ``name{label="value",...}``) on ``/metrics``, or None."""
    _, text = await get(b.telemetry_url + "/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def metric(b: Bridge, name: str) -> float:
    return await scraped(b, f'{name}{{destination="{DEST}"}}') or 0.0


async def readyz(b: Bridge) -> tuple[int, dict[str, Any]]:
    status, text = await get(b.telemetry_url + "/readyz")
    return status, orjson.loads(text)


def dlq_list(b: Bridge) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["dlq", "list", "--data-dir", str(b.data_dir), "--format", "jsonl"])
    assert code == 0
    return [orjson.loads(line) for line in out.getvalue().splitlines() if line.strip()]


@pytest.fixture
async def fake() -> AsyncIterator[SplunkHecFake]:
    async with SplunkHecFake({TOKEN: TokenPolicy(indexes=["ai_audit"])}) as f:
        yield f


@pytest.fixture
async def ack_fake() -> AsyncIterator[SplunkHecFake]:
    async with SplunkHecFake({TOKEN: TokenPolicy(indexes=["ai_audit"], ack=True)}, ack_delay=None) as f:
        yield f


async def test_records_leave_only_when_acknowledged(bridge_factory, ack_fake):
    b = await start(bridge_factory, ack_fake.url, ack=True)
    await send_run(b, "v2.1.332-http-protobuf-allow")
    stored = stored_in_seq_order(b)
    assert len(stored) >= 19
    await until(lambda: len(ack_fake.events) == len(stored), what="all events posted")
    polls = len(ack_polls(ack_fake))
    await until(lambda: len(ack_polls(ack_fake)) >= polls + 3, what="more acknowledgement polls answered false")
    assert all(orjson.loads(r.response_body or b"{}")["acks"] for r in ack_polls(ack_fake)[polls:])
    assert not any(v for r in ack_polls(ack_fake) for v in orjson.loads(r.response_body or b"{}")["acks"].values())
    w = worker(b)
    assert w.cursor == 0  # indexed by Splunk, but not acknowledged: nothing is confirmed yet
    assert await metric(b, "ccbridge_exporter_sent_records_total") == 0
    assert ack_fake.pending_acks()
    ack_fake.release_acks()
    last_seq = w.reader.last_seq()
    await until(lambda: w.cursor == last_seq, what="cursor at the end after the acks")
    assert await metric(b, "ccbridge_exporter_sent_records_total") == len(stored)
    indexed = [e.event["id"] for e in ack_fake.events]
    assert sorted(indexed) == sorted(r["id"] for r in stored)  # each exactly once
    assert {e.index for e in ack_fake.events} == {"ai_audit"}
    assert all(isinstance(v, str) for e in ack_fake.events for v in e.fields.values())
    assert not dlq_list(b)


async def test_the_requests_of_one_batch_wait_for_their_acks_together(bridge_factory, ack_fake):
    b = await start(bridge_factory, ack_fake.url, ack=True, concurrency=1, max_request_events=3)
    await send_run(b, "v2.1.332-http-protobuf-allow")
    stored = stored_in_seq_order(b)
    assert len(stored) >= 19
    # One batch (concurrency 1) of several requests: all are posted while none is acknowledged yet.
    await until(lambda: len(ack_fake.events) == len(stored), what="every request of the batch posted before any ack")
    posts = [r for r in ack_fake.requests if r.path == EVENT_PATH]
    assert len(posts) >= len(stored) // 3
    assert worker(b).cursor == 0
    ack_fake.release_acks()
    w = worker(b)
    await until(lambda: w.cursor == w.reader.last_seq(), what="cursor at the end after the acks")
    assert await metric(b, "ccbridge_exporter_sent_records_total") == len(stored)


async def test_invalid_event_number_dead_letters_one_record_and_delivers_the_rest_once(bridge_factory, fake):
    b = await start(bridge_factory, fake.url, routing=[{"match": {"tool.decision": "reject"}, "index": "forbidden"}])
    await send_run(b, "v2.1.197-http-protobuf-deny")
    stored = stored_in_seq_order(b)
    (rejected,) = [r for r in stored if r.get("tool", {}).get("decision") == "reject"]
    position = stored.index(rejected)
    assert position > 0  # records before it share its request
    w = worker(b)
    await until(lambda: w.cursor == w.reader.last_seq(), what="cursor at the end")

    refusals = [r for r in fake.requests if r.path == EVENT_PATH and r.status == 400]
    assert refusals, "Splunk never refused an event"
    answer = orjson.loads(refusals[0].response_body or b"{}")
    assert answer["code"] == 7 and answer["invalid-event-number"] == position

    indexed = Counter(e.event["id"] for e in fake.events)
    assert all(n == 1 for n in indexed.values()), "an event was indexed twice"
    assert set(indexed) == {r["id"] for r in stored} - {rejected["id"]}
    before = [r["id"] for r in stored[:position]]
    assert [e.event["id"] for e in fake.events[:position]] == before  # indexed by the refused request, never re-sent

    (entry,) = await asyncio.to_thread(dlq_list, b)
    assert entry["destination"] == DEST
    assert entry["record_id"] == rejected["id"]
    assert entry["status"] == 400
    assert "'forbidden'" in entry["reason"] and "HEC code 7" in entry["reason"]
    assert await metric(b, "ccbridge_exporter_dead_letter_records_total") == 1
    assert await metric(b, "ccbridge_exporter_sent_records_total") == len(stored) - 1


async def test_busy_and_429_with_retry_after_are_retried_then_delivered(bridge_factory, fake):
    fake.fail_next(2, status=503, code=9)
    fake.fail_next(1, status=429, code=26, retry_after=1)
    b = await start(bridge_factory, fake.url)
    await send_run(b, "v2.1.197-http-json-allow")
    stored = stored_in_seq_order(b)
    w = worker(b)
    await until(lambda: w.cursor == w.reader.last_seq(), what="delivered after retries")
    statuses = [r.status for r in fake.requests if r.path == EVENT_PATH]
    assert statuses[:4] == [503, 503, 429, 200]
    reqs = [r for r in fake.requests if r.path == EVENT_PATH]
    assert reqs[3].received_at - reqs[2].received_at >= 0.9  # Retry-After: 1 honoured
    assert sorted(e.event["id"] for e in fake.events) == sorted(r["id"] for r in stored)
    assert await metric(b, "ccbridge_exporter_retries_total") == 3
    assert not dlq_list(b)


async def test_revoked_token_is_permanent_counted_and_fails_readiness_until_fixed(bridge_factory, fake):
    b = await start(bridge_factory, fake.url)
    await until(lambda: readyz(b), what="telemetry")
    fake.revoke_token(TOKEN)
    await send_run(b, "v2.1.197-http-protobuf-deny")
    stored = stored_in_seq_order(b)
    w = worker(b)
    await until(lambda: w.cursor == w.reader.last_seq(), what="batch dead-lettered")
    entries = await asyncio.to_thread(dlq_list, b)
    assert sorted(e["record_id"] for e in entries) == sorted(r["id"] for r in stored)
    assert {e["status"] for e in entries} == {403}
    assert all("refused the HEC token" in e["reason"] for e in entries)
    assert await metric(b, "ccbridge_exporter_auth_failures_total") >= 1
    status, body = await readyz(b)
    assert status == 200  # still accepting: the records wait in the store and dead letters
    assert "refused the HEC token" in body["degraded"][f"exporter:{DEST}"]
    assert TOKEN not in str(body)
    assert await scraped(b, f'ccbridge_check_ok{{check="exporter:{DEST}"}}') == 0
    fake.add_token(TOKEN, TokenPolicy(indexes=["ai_audit"]))
    await until(lambda: _healthy(b), timeout=5, what="healthy again after the token works (periodic check)")


async def _healthy(b: Bridge) -> bool:
    status, body = await readyz(b)
    return status == 200 and "degraded" not in body


async def test_splunk_health_feeds_readyz(bridge_factory, fake):
    b = await start(bridge_factory, fake.url)
    await until(lambda: any(r.path == "/services/collector/health" for r in fake.requests), what="first check")
    await until(lambda: _healthy(b), what="ready")
    fake.health_state = "queues_full"
    status, body = await until(lambda: _degraded(b), timeout=5, what="degraded")
    assert status == 200 and body["status"] == "ready"
    assert body["degraded"] == {f"exporter:{DEST}": "splunk health: queues full (code 18)"}
    assert await scraped(b, "ccbridge_ready") == 1
    fake.health_state = "healthy"
    await until(lambda: _healthy(b), timeout=5, what="healthy again")


async def test_readiness_destinations_fail_makes_splunk_health_fail_readyz(bridge_factory, fake):
    b = await bridge_factory(
        overrides={"exporters": {DEST: destination(fake.url)}, "telemetry": {"readiness_destinations": "fail"}}
    )
    await until(lambda: _healthy(b), what="ready")
    fake.health_state = "queues_full"
    _, body = await until(lambda: _not_ready(b), timeout=5, what="not ready")
    assert body["failing"] == {f"exporter:{DEST}": "splunk health: queues full (code 18)"}
    assert await scraped(b, "ccbridge_ready") == 0
    fake.health_state = "healthy"
    await until(lambda: _healthy(b), timeout=5, what="ready again")


async def _degraded(b: Bridge) -> tuple[int, dict[str, Any]] | None:
    status, body = await readyz(b)
    return (status, body) if "degraded" in body else None


async def _not_ready(b: Bridge) -> tuple[int, dict[str, Any]] | None:
    status, body = await readyz(b)
    return (status, body) if status == 503 else None
