"""The ``splunk_hec`` exporter against the strict HEC fake (:mod:`tests.fakes.splunk_hec`): config validation, what
goes over the wire (auth, channel, gzip, size limits), indexer acknowledgement (success only once acknowledged,
re-send after ``ack_timeout``), how each answer maps to a delivery outcome (invalid-event-number, token errors,
busy, 429 with Retry-After, 413), the health check, and TLS.

End-to-end behaviour through the real engine and bridge is in ``test_splunk_hec_e2e.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import exporters
from collector.configtypes import ConfigError
from collector.delivery.outcome import Partial, Permanent, Retry, Success
from collector.telemetry.selfmetrics import SelfMetrics
from exporters.base import DeliveryRecord
from exporters.splunk_hec import SplunkHecConfig, SplunkHecExporter
from tests.collector.delivery.delivery_support import send_through_engine
from tests.conftest import free_port
from tests.fakes.splunk_hec import RecordedRequest, SplunkHecFake, TokenPolicy

TOKEN = "11111111-2222-3333-4444-555555555555"
EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"

Make = Callable[..., SplunkHecExporter]


def config(url: str = "http://127.0.0.1:9", **section: Any) -> SplunkHecConfig:
    cfg = exporters.build_configs({"splunk_hec/t": {"endpoint": url, "token": TOKEN, **section}})["splunk_hec/t"]
    assert isinstance(cfg, SplunkHecConfig)
    return cfg


def rec(i: int, pad: int = 0, **over: Any) -> DeliveryRecord:
    body: dict[str, Any] = {
        "schema_version": "1.0",
        "id": f"{i:032x}",
        "kind": "tool_decision",
        "event": "claude_code.tool_decision",
        "time": f"2026-11-25T21:58:{i % 60:02d}.{i % 1000:03d}Z",
        "user": {"id": "ab" * 32, "email": f"dev{i % 3}@example.com"},
        "tool": {"name": "Bash", "decision": "accept", "approval_mode": "automatic"},
        "pad": "p" * pad,
        **over,
    }
    return DeliveryRecord(i + 1, body["id"], orjson.dumps(body), 0)


def recs(n: int, pad: int = 0) -> list[DeliveryRecord]:
    return [rec(i, pad) for i in range(n)]


def event_requests(fake: SplunkHecFake) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == EVENT_PATH]


def ids_indexed(fake: SplunkHecFake) -> list[str]:
    return [e.event["id"] for e in fake.events]


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.01)


async def push_all(exp: SplunkHecExporter, records: list[DeliveryRecord]) -> list[Any]:
    return [await exp.push(p) for p in exp.encode(records)]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """``make(url, **section)`` -> an exporter built through the config path; all are closed at teardown."""
    made: list[SplunkHecExporter] = []

    def factory(url: str, **section: Any) -> SplunkHecExporter:
        exp = exporters.create("splunk_hec/t", config(url, **section))
        assert isinstance(exp, SplunkHecExporter)
        made.append(exp)
        return exp

    yield factory
    for exp in made:
        await exp.close()


@pytest.fixture
async def fake() -> AsyncIterator[SplunkHecFake]:
    async with SplunkHecFake({TOKEN: TokenPolicy(indexes=["ai_audit", "ai_rejections"])}) as f:
        yield f


@pytest.fixture
async def ack_fake() -> AsyncIterator[SplunkHecFake]:
    """Acknowledgement on; acks arrive only when the test calls ``release_acks``."""
    async with SplunkHecFake({TOKEN: TokenPolicy(ack=True)}, ack_delay=None) as f:
        yield f


# ---------------------------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"endpoint": ""}, "splunk_hec/t.endpoint: required"),
        ({"endpoint": "ftp://splunk:8088"}, "splunk_hec/t.endpoint: must be an http:// or https:// URL"),
        ({"endpoint": "https://"}, "splunk_hec/t.endpoint: must be an http:// or https:// URL"),
        ({"endpoint": "https://s:8088/services/collector/event"}, "splunk_hec/t.endpoint: give the base URL"),
        ({"endpoint": "https://s:8088/?token=x"}, "splunk_hec/t.endpoint: give the base URL only"),
        ({"token": ""}, "splunk_hec/t.token: required"),
        ({"index": "Main"}, "splunk_hec/t.index: invalid Splunk index name 'Main'"),
        ({"index": "_internal"}, "splunk_hec/t.index: invalid Splunk index name"),
        ({"sourcetype": " "}, "splunk_hec/t.sourcetype: must not be empty"),
        ({"ack_timeout": "500ms"}, "splunk_hec/t.ack_timeout: must be >= 1s"),
        ({"ack_timeout": "5s", "ack_poll_interval": "10s"}, "splunk_hec/t.ack_poll_interval: must be between"),
        ({"ack_poll_interval": "1ms"}, "splunk_hec/t.ack_poll_interval: must be between"),
        ({"max_request_bytes": 100}, "splunk_hec/t.max_request_bytes: must be >= 1KiB"),
        ({"max_request_bytes": "lots"}, "splunk_hec/t.max_request_bytes: invalid size"),
        ({"max_request_events": 0}, "splunk_hec/t.max_request_events: must be >= 1"),
        ({"compression": "deflate"}, "splunk_hec/t.compression: must be one of gzip, none"),
        ({"health_check_interval": "100ms"}, "splunk_hec/t.health_check_interval: must be 0"),
        ({"timeout": 0}, "splunk_hec/t.timeout: must be > 0"),
        ({"ack": "maybe"}, "splunk_hec/t.ack: expected true or false"),
        ({"routing": {"kind": "x"}}, "splunk_hec/t.routing: expected a list"),
        ({"routing": [{"index": "x"}]}, "splunk_hec/t.routing[0].match: required"),
        ({"routing": [{"match": {"kind": "x"}}]}, "splunk_hec/t.routing[0].index: required"),
        ({"routing": [{"match": {"kind": "x"}, "index": "ok"}, {"match": {"kind": "y"}, "index": "Bad Index"}]},
         "splunk_hec/t.routing[1].index: invalid Splunk index name"),
        ({"routing": [{"match": {"a..b": "x"}, "index": "ok"}]}, "splunk_hec/t.routing[0].match: invalid field path"),
        ({"routing": [{"match": {"kind": []}, "index": "ok"}]}, "splunk_hec/t.routing[0].match.kind: an empty list"),
        ({"routing": [{"match": {"kind": {"a": 1}}, "index": "ok"}]}, "splunk_hec/t.routing[0].match.kind"),
        ({"routing": [{"match": {"kind": "x"}, "index": "ok", "sourcetype": "y"}]},
         "splunk_hec/t.routing[0].sourcetype: unknown key"),
        ({"fields": {"user.email": "hash"}}, "splunk_hec/t.hash_salt: required when a field policy hashes"),
        ({"fields": {"user.email": "mask"}}, "splunk_hec/t.fields.user.email: must be one of keep, drop, hash"),
        ({"tls": {"cert_file": "/c.pem"}}, "splunk_hec/t.tls: cert_file and key_file must be set together"),
        ({"concurrency": 0}, "splunk_hec/t.concurrency: must be between 1 and 64"),
        ({"indexes": ["x"]}, "splunk_hec/t.indexes: unknown key"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        config(**section)
    assert message in str(err.value)


def test_a_token_with_spaces_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as err:
        exporters.build_configs({"splunk_hec/t": {"endpoint": "https://s:8088", "token": "Splunk s3cr3t-value"}})
    assert "splunk_hec/t.token: must not contain spaces" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_defaults_and_the_token_is_never_shown():
    cfg = config("https://splunk.example.com:8088/")
    assert (cfg.ack, cfg.compression, cfg.sourcetype, cfg.source) == (False, "gzip", "claude:code:audit", "ccbridge")
    assert cfg.max_request_bytes == 1_000_000 and cfg.max_request_events == 500
    assert cfg.base_url == "https://splunk.example.com:8088"
    assert TOKEN not in repr(cfg)
    exp = exporters.create("splunk_hec/t", cfg)
    assert TOKEN not in repr(exp)
    assert all(TOKEN not in repr(p) for p in exp.encode(recs(2)))


def test_routing_values_from_yaml_numbers_and_booleans_are_accepted():
    cfg = config(
        routing=[{"match": {"organization.id": 12345, "tool.success": True, "kind": ["a", "b"]}, "index": "x"}]
    )
    assert cfg.routing[0].match == {"organization.id": "12345", "tool.success": True, "kind": ["a", "b"]}


def test_the_type_is_registered():
    assert exporters.registry()["splunk_hec"] is SplunkHecExporter


# ---------------------------------------------------------------------------------------------------------------
# on the wire


async def test_accepted_batch_is_success_with_auth_channel_and_gzip_on_the_wire(fake, make):
    exp = make(fake.url, index="ai_audit")
    rs = recs(20)
    assert await push_all(exp, rs) == [Success("accepted")]
    (req,) = event_requests(fake)
    assert req.method == "POST"
    assert req.headers["Authorization"] == f"Splunk {TOKEN}"
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Content-Type"] == "application/json"
    uuid.UUID(req.headers["X-Splunk-Request-Channel"])  # a GUID, even without acknowledgement
    assert gzip.decompress(req.body) == req.decoded_body
    assert len(req.body) < len(req.decoded_body)
    assert ids_indexed(fake) == [r.id for r in rs]
    assert {e.index for e in fake.events} == {"ai_audit"}
    assert not fake.dropped_events  # no unknown envelope key anywhere


async def test_compression_none_sends_plain_json(fake, make):
    exp = make(fake.url, compression="none")
    assert await push_all(exp, recs(3)) == [Success("accepted")]
    (req,) = event_requests(fake)
    assert "Content-Encoding" not in req.headers
    assert [orjson.loads(line)["event"]["id"] for line in req.body.splitlines()] == [r.id for r in recs(3)]


async def test_event_shape_as_indexed(fake, make):
    exp = make(fake.url, host="bridge-7", index="ai_audit")
    await push_all(exp, [rec(3)])
    (ev,) = fake.events
    assert ev.time == pytest.approx(1795643883.003, abs=1e-6)  # 2026-11-25T21:58:03.003Z
    assert b'"time":1795643883.003,' in fake.requests[-1].decoded_body
    assert (ev.host, ev.source, ev.sourcetype, ev.index) == ("bridge-7", "ccbridge", "claude:code:audit", "ai_audit")
    assert ev.fields == {
        "cc_kind": "tool_decision",
        "cc_event": "claude_code.tool_decision",
        "cc_user": "dev0@example.com",
        "cc_tool": "Bash",
        "cc_decision": "accept",
        "cc_approval_mode": "automatic",
    }
    assert ev.event == orjson.loads(rec(3).body)


async def test_no_request_exceeds_max_request_bytes_and_all_events_arrive_in_order(fake, make):
    limit = 8192
    exp = make(fake.url, max_request_bytes=limit)
    rs = recs(120, pad=300)
    outcomes = await push_all(exp, rs)
    assert len(outcomes) > 5 and all(o == Success("accepted") for o in outcomes)
    sizes = [len(r.decoded_body or b"") for r in event_requests(fake)]
    assert max(sizes) <= limit, sizes
    assert ids_indexed(fake) == [r.id for r in rs]


async def test_routing_rules_pick_the_index_per_record(fake, make):
    exp = make(
        fake.url,
        index="ai_audit",
        routing=[{"match": {"tool.decision": "reject"}, "index": "ai_rejections"}],
    )
    rs = [rec(0), rec(1, tool={"name": "Bash", "decision": "reject"}), rec(2)]
    assert await push_all(exp, rs) == [Success("accepted")]
    assert [(e.event["id"], e.index) for e in fake.events] == [
        (rs[0].id, "ai_audit"),
        (rs[1].id, "ai_rejections"),
        (rs[2].id, "ai_audit"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# indexer acknowledgement


async def test_with_ack_a_push_succeeds_only_once_its_ackid_is_acknowledged(ack_fake, make):
    exp = make(ack_fake.url, ack=True, ack_poll_interval="20ms")
    (p1,) = exp.encode(recs(3))
    (p2,) = exp.encode([rec(10)])
    t1 = asyncio.create_task(exp.push(p1))
    t2 = asyncio.create_task(exp.push(p2))
    await until(lambda: len(ack_fake.events) == 4 and len(ack_fake.pending_acks()) == 2, what="both posted")
    channel = exp.channel
    await until(lambda: sum(r.path == ACK_PATH for r in ack_fake.requests) >= 3, what="polling")
    assert not t1.done() and not t2.done()  # indexed by the fake, but not yet acknowledged
    ack_fake.release_acks(channel, [1])
    assert await asyncio.wait_for(t2, 5) == Success("indexed (acknowledged)")
    assert not t1.done()
    ack_fake.release_acks(channel, [0])
    assert await asyncio.wait_for(t1, 5) == Success("indexed (acknowledged)")
    polls = [orjson.loads(r.decoded_body or b"{}") for r in ack_fake.requests if r.path == ACK_PATH]
    assert {"acks": [0, 1]} in polls  # both outstanding ids in one poll
    reqs = [r for r in ack_fake.requests if r.path in (EVENT_PATH, ACK_PATH)]
    assert {r.headers["X-Splunk-Request-Channel"] for r in reqs} == {channel}  # one stable channel
    assert all(r.query.get("channel") == channel for r in reqs if r.path == ACK_PATH)


async def test_ack_never_comes_then_retry_after_ack_timeout_and_the_request_is_sent_again(ack_fake, make):
    exp = make(ack_fake.url, ack=True, ack_timeout="1s", ack_poll_interval="50ms")
    (p,) = exp.encode(recs(4))
    started = time.monotonic()
    outcome = await exp.push(p)
    assert isinstance(outcome, Retry)
    assert 1.0 <= time.monotonic() - started < 4.0
    assert "no indexer acknowledgement for ackId 0 within 1s" in outcome.reason
    assert "indexed twice" in outcome.reason
    second = asyncio.create_task(exp.push(p))  # what the engine does on Retry
    await until(lambda: len(event_requests(ack_fake)) == 2, what="re-send")
    first_req, second_req = event_requests(ack_fake)
    assert second_req.decoded_body == first_req.decoded_body  # the same events again
    ack_fake.release_acks(exp.channel, [1])
    assert await asyncio.wait_for(second, 5) == Success("indexed (acknowledged)")
    assert ids_indexed(ack_fake) == [r.id for r in recs(4)] * 2  # the inherent duplicate


async def test_ack_token_without_acknowledgement_is_delivered_on_receipt_with_one_warning(fake, make, caplog):
    exp = make(fake.url, ack=True)
    with caplog.at_level(logging.WARNING, logger="exporters.splunk_hec"):
        assert await push_all(exp, recs(2)) == [Success("indexed (acknowledged)")]
        assert await push_all(exp, recs(2)) == [Success("indexed (acknowledged)")]
    warnings = [r for r in caplog.records if "no ackId" in r.getMessage()]
    assert len(warnings) == 1
    assert not [r for r in fake.requests if r.path == ACK_PATH]


async def test_ack_off_with_an_ack_token_still_works_thanks_to_the_channel(ack_fake, make):
    exp = make(ack_fake.url)
    assert await push_all(exp, recs(2)) == [Success("accepted")]  # no code 10: the channel is always sent
    assert not [r for r in ack_fake.requests if r.path == ACK_PATH]


async def test_token_revoked_while_waiting_for_acks_is_retry_and_flags_the_token(ack_fake, make):
    exp = make(ack_fake.url, ack=True, ack_poll_interval="20ms")
    (p,) = exp.encode(recs(2))
    task = asyncio.create_task(exp.push(p))
    await until(lambda: len(ack_fake.events) == 2, what="posted")
    ack_fake.revoke_token(TOKEN)
    outcome = await asyncio.wait_for(task, 5)
    assert isinstance(outcome, Retry) and "Invalid token" in outcome.reason
    assert exp.health() is not None and "token" in exp.health()
    assert TOKEN not in exp.health()


# ---------------------------------------------------------------------------------------------------------------
# answers -> outcomes


async def test_invalid_event_number_is_partial_and_events_before_it_are_not_resent(fake, make):
    exp = make(fake.url, index="ai_audit", routing=[{"match": {"tool.decision": "reject"}, "index": "forbidden"}])
    rs = [rec(i) for i in range(6)]
    rs[3] = rec(3, tool={"name": "Bash", "decision": "reject"})
    (p,) = exp.encode(rs)
    outcome = await exp.push(p)
    assert isinstance(outcome, Partial)
    assert list(outcome.accepted) == rs[:3] and outcome.status == 400
    (refused,) = outcome.refused
    assert refused.record is rs[3] and refused.status == 400
    assert list(outcome.unsent) == rs[4:]
    assert "'forbidden'" in outcome.reason and "HEC code 7" in outcome.reason
    assert ids_indexed(fake) == [r.id for r in rs[:3]]
    # the engine then dead-letters rs[3] and sends the rest as a new payload
    assert await push_all(exp, rs[4:]) == [Success("accepted")]
    assert ids_indexed(fake) == [r.id for r in rs[:3] + rs[4:]]


@pytest.mark.parametrize(
    ("action", "code"),
    [("revoke", 4), ("disable", 1)],
)
async def test_token_errors_are_permanent_counted_logged_and_reported_by_health(fake, make, caplog, action, code):
    exp = make(fake.url)
    metrics = SelfMetrics()
    exp.bind_metrics(metrics)
    getattr(fake, f"{action}_token")(TOKEN)
    with caplog.at_level(logging.ERROR, logger="exporters.splunk_hec"):
        outcome = (await push_all(exp, recs(2)))[0]
        again = (await push_all(exp, recs(2)))[0]
    assert isinstance(outcome, Permanent) and outcome.status == 403
    assert f"HEC code {code}" in outcome.reason
    assert isinstance(again, Permanent)
    value = metrics.registry.get_sample_value("ccbridge_exporter_auth_failures_total", {"destination": "splunk_hec/t"})
    assert value == 2
    assert exp.auth_failures == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # loud, but not once per batch
    assert "refused the HEC token" in errors[0].getMessage()
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    health = exp.health()
    assert health is not None and "refused the HEC token" in health and f"HEC code {code}" in health
    fake.add_token(TOKEN, TokenPolicy())  # fixed on the Splunk side
    assert await push_all(exp, recs(1)) == [Success("accepted")]
    assert exp.health() is None


async def test_an_unknown_token_is_a_token_error(fake, make):
    exp = make(fake.url, token="not-a-known-token")
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Permanent) and "HEC code 4" in outcome.reason


async def test_busy_503_is_retry_with_retry_after(fake, make):
    exp = make(fake.url)
    fake.fail_next(1, status=503, code=9, retry_after=7)
    (p,) = exp.encode(recs(2))
    outcome = await exp.push(p)
    assert isinstance(outcome, Retry)
    assert (outcome.status, outcome.delay) == (503, 7.0)
    assert "HEC code 9" in outcome.reason and "Server is busy" in outcome.reason
    assert await exp.push(p) == Success("accepted")
    assert ids_indexed(fake) == [r.id for r in recs(2)]


@pytest.mark.parametrize(("status", "code", "retry_after"), [(429, 26, 3), (429, 27, None), (500, 8, None)])
async def test_429_and_500_are_retry_honouring_retry_after(fake, make, status, code, retry_after):
    exp = make(fake.url)
    fake.fail_next(1, status=status, code=code, retry_after=retry_after)
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Retry)
    assert outcome.status == status
    assert outcome.delay == (float(retry_after) if retry_after is not None else None)


@pytest.mark.parametrize("status", [502, 504, 408])
async def test_proxy_errors_without_a_hec_body_are_retry(fake, make, status):
    exp = make(fake.url)
    fake.fail_next(1, status=status)
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Retry) and outcome.status == status


async def test_a_404_from_a_wrong_path_prefix_is_permanent(fake, make):
    exp = make(fake.url + "/wrong-prefix")
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Permanent) and outcome.status == 404


async def test_connection_refused_and_dropped_connections_are_retry(fake, make):
    exp = make(f"http://127.0.0.1:{free_port()}")
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Retry) and "connection error" in outcome.reason
    exp2 = make(fake.url)
    fake.drop_next(1)
    outcome = (await push_all(exp2, recs(1)))[0]
    assert isinstance(outcome, Retry)


async def test_413_is_split_by_the_engine_and_everything_is_delivered_in_order(fake, make, tmp_path):
    exp = make(fake.url, compression="none")
    rs = recs(16, pad=400)
    (p,) = exp.encode(rs)
    fake.max_content_length = len(p.data) // 3  # the server's limit is lower than ours
    outcome = await exp.push(p)
    assert isinstance(outcome, Permanent) and outcome.status == 413  # the exporter does not split ...
    settled = await send_through_engine(exp, rs, tmp_path)  # ... the engine does
    assert settled.delivered == rs and settled.refused == []
    assert ids_indexed(fake) == [r.id for r in rs]
    statuses = [r.status for r in event_requests(fake)]
    assert statuses[:2] == [413, 413] and statuses.count(200) >= 3


async def test_413_for_a_single_event_is_permanent_with_a_clear_reason(fake, make):
    exp = make(fake.url, compression="none")
    fake.max_content_length = 2000
    (p,) = exp.encode([rec(0, pad=5000)])
    outcome = await exp.push(p)
    assert isinstance(outcome, Permanent) and outcome.status == 413
    assert "too large" in outcome.reason and "max_content_length" in outcome.reason


async def test_a_retry_after_a_split_resends_only_the_half_not_yet_confirmed(fake, make, tmp_path):
    """413, then the first half is confirmed and the second half meets a busy server: the retry re-sends only the
    second half, so every event is indexed exactly once (the engine holds the progress, not the exporter)."""
    exp = make(fake.url, compression="none", retry={"initial_interval": "10ms", "max_interval": "20ms"})
    rs = recs(8, pad=400)
    fake.fail_next(1, status=413)
    original = exp._post
    calls = 0

    async def busy_on_second_half(url: str, body: bytes, *, compressed: bool) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # 1: whole request (413), 2: first half, 3: second half
            fake.fail_next(1, status=503)
        return await original(url, body, compressed=compressed)

    exp._post = busy_on_second_half  # type: ignore[method-assign]
    settled = await send_through_engine(exp, rs, tmp_path)
    assert settled.delivered == rs
    assert ids_indexed(fake) == [r.id for r in rs]
    statuses = [r.status for r in event_requests(fake)]
    assert statuses == [413, 200, 503, 200]
    second_half = b"\n".join(exp.encoder.envelope(r).data for r in rs[4:])
    resent = event_requests(fake)[-1].decoded_body or b""
    assert len(resent) in (len(second_half), len(second_half) + 1)  # only the second half


async def test_permanent_failure_after_a_split_refuses_only_the_rest(fake, make, tmp_path):
    exp = make(fake.url, compression="none")
    rs = recs(8, pad=400)
    fake.fail_next(1, status=413)
    original = exp._post
    calls = 0

    async def revoke_before_second_half(url: str, body: bytes, *, compressed: bool) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            fake.revoke_token(TOKEN)
        return await original(url, body, compressed=compressed)

    exp._post = revoke_before_second_half  # type: ignore[method-assign]
    settled = await send_through_engine(exp, rs, tmp_path)
    assert settled.delivered == rs[:4]
    ((refused, _reason, status, _attempts),) = settled.refused
    assert refused == rs[4:] and status == 403


# ---------------------------------------------------------------------------------------------------------------
# health


async def test_health_check_reports_queues_full_and_recovers(fake, make):
    exp = make(fake.url)
    assert await exp.check_health() is None
    fake.health_state = "queues_full"
    assert await exp.check_health() == "splunk health: queues full (code 18)"
    assert exp.health() == "splunk health: queues full (code 18)"
    fake.health_state = "ack_unavailable"
    assert await exp.check_health() == "splunk health: ack service unavailable (code 19)"
    fake.health_state = "healthy"
    assert await exp.check_health() is None


async def test_health_check_of_an_unreachable_endpoint(make):
    exp = make(f"http://127.0.0.1:{free_port()}")
    problem = await exp.check_health()
    assert problem is not None and problem.startswith("splunk health: unreachable")


async def test_a_health_path_hidden_by_a_proxy_is_not_a_problem(fake, make, caplog):
    exp = make(fake.url + "/not-forwarded")
    with caplog.at_level(logging.WARNING, logger="exporters.splunk_hec"):
        assert await exp.check_health() is None
        assert await exp.check_health() is None
    assert len([r for r in caplog.records if "404" in r.getMessage()]) == 1


async def test_unreachable_is_cleared_by_an_accepted_request(fake, make):
    exp = make(fake.url, timeout="300ms")
    fake.delay_next(2, endpoint="health")
    problem = await exp.check_health()
    assert problem is not None and problem.startswith("splunk health: unreachable")
    assert await push_all(exp, recs(1)) == [Success("accepted")]
    assert exp.health() is None


async def test_health_check_finds_a_bad_token_before_any_data_is_sent(fake, make):
    exp = make(fake.url)
    fake.revoke_token(TOKEN)
    problem = await exp.check_health()
    assert problem is not None and "refused the HEC token" in problem and "HEC code 4" in problem
    fake.add_token(TOKEN, TokenPolicy())
    assert await exp.check_health() is None  # the token probe clears it


async def test_start_runs_health_checks_in_the_background_periodically(fake, make):
    exp = make(fake.url, health_check_interval="1s")
    await exp.start()
    await until(lambda: sum(r.path == "/services/collector/health" for r in fake.requests) >= 1, what="first check")
    fake.health_state = "queues_full"
    await until(lambda: exp.health() == "splunk health: queues full (code 18)", timeout=5, what="periodic check")
    await exp.close()
    assert exp.session is None


async def test_start_does_not_wait_for_a_slow_health_check(fake, make):
    exp = make(fake.url)
    fake.delay_next(5, endpoint="health")
    started = time.monotonic()
    await exp.start()
    assert time.monotonic() - started < 1.0
    await until(lambda: any(r.path == "/services/collector/health" for r in fake.requests), what="check started")
    await exp.close()  # cancels the pending check


# ---------------------------------------------------------------------------------------------------------------
# TLS


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509  # type: ignore[import-not-found]
    except ImportError:
        x509 = None
    if x509 is not None:
        import datetime
        import ipaddress

        from cryptography.hazmat.primitives import hashes, serialization  # type: ignore[import-not-found]
        from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found]
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found]

        pkey = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(pkey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(pkey, hashes.SHA256())
        )
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(
            pkey.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert, key
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_fake(tls_files) -> AsyncIterator[SplunkHecFake]:
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with SplunkHecFake({TOKEN: TokenPolicy(ack=True)}, ssl_context=ctx, ack_delay=0.0) as f:
        yield f


async def test_tls_with_the_servers_ca_delivers_with_acks_and_health(tls_fake, tls_files, make):
    assert tls_fake.url.startswith("https://")
    exp = make(tls_fake.url, ack=True, ack_poll_interval="20ms", tls={"ca_file": str(tls_files[0])})
    assert await push_all(exp, recs(3)) == [Success("indexed (acknowledged)")]
    assert ids_indexed(tls_fake) == [r.id for r in recs(3)]
    assert await exp.check_health() is None


async def test_tls_without_trusting_the_server_is_retry_and_unhealthy(tls_fake, make):
    exp = make(tls_fake.url)
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Retry) and ("TLS" in outcome.reason or "certificate" in outcome.reason.lower())
    assert not tls_fake.events
    problem = await exp.check_health()
    assert problem is not None and problem.startswith("splunk health: unreachable")


async def test_tls_insecure_skip_verify(tls_fake, make):
    exp = make(tls_fake.url, tls={"insecure_skip_verify": True})
    assert await push_all(exp, recs(1)) == [Success("accepted")]


async def test_an_answer_the_http_client_cannot_read_is_retry_not_an_exception(fake, make, monkeypatch):
    import exporters.splunk_hec as module

    async def broken_post(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("could not convert string to float: '²'")  # e.g. a Retry-After the parser chokes on

    monkeypatch.setattr(module, "post", broken_post)
    exp = make(fake.url)
    outcome = (await push_all(exp, recs(1)))[0]
    assert isinstance(outcome, Retry) and "unreadable answer" in outcome.reason
