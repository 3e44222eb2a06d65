"""Datadog logs: the entry of each audit record (source, service, host, tags, status, message after the field
policy, facet attributes), cutting batches to the intake's limits, oversize entries, and how every answer of the
strict fake intake (:mod:`tests.fakes.datadog`) becomes a delivery outcome (413 split, 429 delay, 401/403 loud and
permanent, 400 with the API's text, 5xx retried)."""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

import exporters
from collector.delivery.outcome import Permanent, Retry, Success
from collector.delivery.retry import parse_retry_after
from collector.telemetry.selfmetrics import SelfMetrics
from exporters.base import DeliveryRecord, Payload
from exporters.datadog import DatadogExporter
from exporters.datadog.intake import server_delay
from exporters.datadog.logs import MAX_ENTRY_BYTES, status_of, summary, tag_value
from exporters.httpclient import HttpAnswer
from tests.collector.delivery.delivery_support import send_through_engine
from tests.fakes.datadog import DatadogFake

KEY = "0123456789abcdef0123456789abcdef"
T0 = 1_795_643_846_000


def make_exporter(url: str = "http://127.0.0.1:9", **section: Any) -> DatadogExporter:
    section = {"api_key": KEY, "logs_endpoint": url, "metrics_endpoint": url, "hostname": "bridge-01", **section}
    cfg = exporters.build_configs({"datadog/t": section})["datadog/t"]
    exp = exporters.create("datadog/t", cfg)
    assert isinstance(exp, DatadogExporter)
    return exp


def record(i: int = 0, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": "1.0",
        "id": f"{i:032x}",
        "kind": "event",
        "event": "claude_code.assistant_response",
        "time": "2026-11-25T21:57:26.000Z",
        "session": {"id": "d2369f49-d11c-4322-b8a2-818d9c23de10"},
        "user": {"id": "5448c118" * 8},
        "attributes": {"event.name": "assistant_response"},
        "resource": {"service.name": "claude-code"},
    }
    base.update(fields)
    return base


def delivery(rec: dict[str, Any], seq: int = 1) -> DeliveryRecord:
    return DeliveryRecord(seq, rec["id"], orjson.dumps(rec), T0 + seq)


def deliveries(n: int, pad: int = 0) -> list[DeliveryRecord]:
    return [delivery(record(i, attributes={"pad": "x" * pad}), i + 1) for i in range(n)]


def decoded(payload: Payload) -> list[dict[str, Any]]:
    return orjson.loads(gzip.decompress(payload.data))


def one_entry(exp: DatadogExporter, rec: dict[str, Any]) -> dict[str, Any]:
    (payload,) = exp.encode([delivery(rec)])
    (entry,) = decoded(payload)
    return entry


DECISION = record(
    1,
    kind="tool_decision",
    event="claude_code.tool_decision",
    user={"id": "5448c118" * 8, "email": "jdoe@example.com", "enduser_id": "jdoe@example.com"},
    organization={"id": "3f0c5b8e-9a43-4c55-9d0c-2a7f0e4c1b11"},
    tool={
        "name": "Bash",
        "decision": "reject",
        "decision_source": "config",
        "approval_mode": "automatic",
        "command": "rm -f /home/dev/project/hello.txt",
        "parameters": {"full_command": "rm -f /home/dev/project/hello.txt"},
    },
    attributes={
        "enduser.id": "jdoe@example.com",
        "tool_parameters": '{"full_command":"rm -f /home/dev/project/hello.txt"}',
        "decision": "reject",
    },
    resource={"enduser.id": "jdoe@example.com", "service.name": "claude-code"},
)


# ---------------------------------------------------------------------------------------------------------------
# the entry


def test_entry_carries_source_service_host_tags_status_and_the_record():
    exp = make_exporter(service="cc-audit", tags=["env:prod", "team:platform"])
    entry = one_entry(exp, DECISION)
    assert entry["ddsource"] == "claude-code"
    assert entry["service"] == "cc-audit"
    assert entry["hostname"] == "bridge-01"
    assert entry["status"] == "warning"
    assert entry["ddtags"].split(",") == [
        "env:prod",
        "team:platform",
        "kind:tool_decision",
        "tool:Bash",
        "decision:reject",
        "organization:3f0c5b8e-9a43-4c55-9d0c-2a7f0e4c1b11",
    ]
    assert entry["timestamp"] == T0 + 1
    assert entry["message"].endswith(" rejected Bash (automatic)")  # a human line, not the record as JSON
    assert entry["evt"] == {"name": "claude_code.tool_decision"}
    assert entry["usr"]["id"] == "5448c118" * 8
    facets = entry["claude_code"]
    assert facets["tool"]["decision"] == "reject" and facets["tool"]["approval_mode"] == "automatic"
    assert facets["session"]["id"] == DECISION["session"]["id"]
    assert facets["id"] == DECISION["id"] and facets["kind"] == "tool_decision"
    # the record once: its raw wire data among the attributes, no second copy in ``message``
    assert facets["attributes"]["decision"] == "reject" and facets["resource"]["service.name"] == "claude-code"
    assert DECISION["id"] not in entry["message"]
    assert orjson.dumps(entry).count(b'"decision_source"') == 1


def test_message_is_a_short_human_line():
    exp = make_exporter(fields={"user.email": "keep", "tool.command": "keep"})
    approved = record(
        2,
        kind="tool_decision",
        user={"id": "u1", "email": "alice@example.com"},
        tool={"name": "Bash", "decision": "accept", "approval_mode": "manual", "command": "rm -rf build"},
    )
    assert one_entry(exp, approved)["message"] == "alice approved Bash: rm -rf build (manual)"
    failed = record(
        3,
        kind="tool_result",
        user={"id": "u1", "email": "alice@example.com"},
        tool={"name": "Edit", "success": False, "error_type": "ShellError"},
        file={"path": "/repo/app.py"},
    )
    assert summary(failed) == "alice ran Edit: /repo/app.py: failed (ShellError)"
    api = record(4, kind="api_request", user={"id": "u1"}, model="m1", tokens={"input": 10, "output": 2}, cost_usd=0.5)
    assert summary(api) == "user u1: m1 request, 10 in / 2 out tokens, $0.5000"
    long = record(5, kind="tool_decision", tool={"name": "Bash", "decision": "accept", "command": "x" * 5000})
    assert len(summary(long)) <= 300


def test_privacy_defaults_hash_emails_and_drop_command_lines():
    entry = one_entry(make_exporter(), DECISION)
    text = orjson.dumps(entry).decode()
    assert "jdoe@example.com" not in text
    assert "rm -f" not in text and "full_command" not in text
    assert entry["usr"]["email"].startswith("sha256:")
    assert entry["message"].startswith("sha256:")  # the line names the person as the policy leaves them
    message = entry["claude_code"]
    assert message["user"]["email"] == entry["usr"]["email"]
    assert message["attributes"]["enduser.id"].startswith("sha256:")
    assert message["resource"]["enduser.id"].startswith("sha256:")
    assert "command" not in message["tool"] and "parameters" not in message["tool"]
    assert "tool_parameters" not in message["attributes"]
    assert message["attributes"]["decision"] == "reject"  # only what the policy names is touched


def test_hashes_are_stable_per_salt_and_differ_across_salts():
    a = one_entry(make_exporter(hash_salt="one"), DECISION)["usr"]["email"]
    assert one_entry(make_exporter(hash_salt="one"), DECISION)["usr"]["email"] == a
    assert one_entry(make_exporter(hash_salt="two"), DECISION)["usr"]["email"] != a


def test_configured_fields_let_emails_and_commands_through():
    exp = make_exporter(fields={"user.email": "keep", "tool.command": "keep"})
    entry = one_entry(exp, DECISION)
    assert entry["usr"]["email"] == "jdoe@example.com"
    assert entry["message"] == "jdoe rejected Bash: rm -f /home/dev/project/hello.txt (automatic)"
    message = entry["claude_code"]
    assert message["user"]["email"] == "jdoe@example.com"
    assert message["tool"]["command"] == "rm -f /home/dev/project/hello.txt"
    assert "parameters" not in message["tool"]  # still dropped by the defaults
    assert message["attributes"]["enduser.id"].startswith("sha256:")


def test_a_dropped_email_leaves_no_usr_email():
    entry = one_entry(make_exporter(fields={"user.email": "drop"}), DECISION)
    assert "email" not in entry["usr"]


@pytest.mark.parametrize(
    ("fields", "status", "outcome"),
    [
        ({"kind": "tool_decision", "tool": {"name": "Bash", "decision": "reject"}}, "warning", None),
        ({"kind": "tool_decision", "tool": {"name": "Bash", "decision": "accept"}}, "info", None),
        ({"kind": "api_error", "model": "claude-opus-5-5"}, "error", "failure"),
        ({"kind": "api_request", "model": "claude-opus-5-5"}, "info", "success"),
        ({"kind": "tool_result", "tool": {"name": "Bash", "success": False}}, "warning", "failure"),
        ({"kind": "tool_result", "tool": {"name": "Bash", "success": True}}, "info", "success"),
        ({"kind": "tool_result", "tool": {"name": "Bash"}}, "info", None),
        ({"kind": "file_change", "tool": {"name": "Write", "success": False}}, "warning", "failure"),
        ({"kind": "user_prompt"}, "info", None),
        ({"kind": "event"}, "info", None),
    ],
)
def test_status_per_kind(fields, status, outcome):
    rec = record(3, **fields)
    assert status_of(rec) == status
    entry = one_entry(make_exporter(), rec)
    assert entry["status"] == status
    assert entry["evt"].get("outcome") == outcome


def test_tags_are_sanitised_and_skip_missing_values():
    assert tag_value("claude-opus-4-8[1m]") == "claude-opus-4-8_1m"
    assert tag_value("a, b c") == "a_b_c"
    assert tag_value("x" * 300) == "x" * 200
    entry = one_entry(make_exporter(), record(4, kind="api_request", model="claude-opus-4-8[1m]"))
    assert entry["ddtags"] == "kind:api_request,model:claude-opus-4-8_1m"


def test_tags_follow_each_records_values_and_types():
    exp = make_exporter()
    model_one = one_entry(exp, record(5, kind="api_request", model=1))
    model_true = one_entry(exp, record(6, kind="api_request", model=True))
    opus = one_entry(exp, record(7, kind="api_request", model="opus"))
    opus_again = one_entry(exp, record(8, kind="api_request", model="opus"))
    sonnet = one_entry(exp, record(9, kind="api_request", model="sonnet"))
    assert model_one["ddtags"] == "kind:api_request,model:1"
    assert model_true["ddtags"] == "kind:api_request,model:true"
    assert opus["ddtags"] == opus_again["ddtags"] == "kind:api_request,model:opus"
    assert sonnet["ddtags"] == "kind:api_request,model:sonnet"


# ---------------------------------------------------------------------------------------------------------------
# limits


def test_batches_are_cut_at_1000_entries():
    payloads = make_exporter().encode(deliveries(2500))
    assert [len(p.records) for p in payloads] == [1000, 1000, 500]
    assert [e["claude_code"]["id"] for p in payloads for e in decoded(p)] == [f"{i:032x}" for i in range(2500)]


def test_batches_are_cut_at_5mb_of_json():
    payloads = make_exporter().encode(deliveries(40, pad=300_000))
    assert len(payloads) > 2
    for p in payloads:
        assert len(gzip.decompress(p.data)) <= 5_000_000
    assert sum(len(p.records) for p in payloads) == 40
    assert [r.seq for p in payloads for r in p.records] == list(range(1, 41))


def test_an_oversize_entry_is_cut_visibly():
    huge = record(5, kind="tool_result", tool={"name": "Read", "success": True, "output": "y" * 3_000_000})
    exp = make_exporter(fields={"tool.output": "keep"})
    (payload,) = exp.encode([delivery(huge)])
    raw = gzip.decompress(payload.data)
    assert len(raw) <= MAX_ENTRY_BYTES + 2
    (entry,) = orjson.loads(raw)
    assert entry["message"] == summary(exp.encoder.policy.apply(huge))
    assert entry["ccbridge"] == {"truncated": True, "record_bytes": len(orjson.dumps(exp.encoder.policy.apply(huge)))}
    assert "output" not in entry["claude_code"]["tool"]  # large facet values are removed ...
    assert entry["claude_code"]["tool"]["name"] == "Read"  # ... the small ones stay
    assert entry["status"] == "info" and "kind:tool_result" in entry["ddtags"]


def test_gzip_can_be_turned_off_and_the_key_is_never_in_a_payload():
    exp = make_exporter(compression="none")
    (payload,) = exp.encode(deliveries(3))
    assert orjson.loads(payload.data)[0]["ddsource"] == "claude-code"
    assert "Content-Encoding" not in exp._headers()
    assert KEY.encode() not in payload.data and KEY not in str(payload.headers) and KEY not in str(payload.meta)
    (packed,) = make_exporter().encode(deliveries(3))
    assert KEY.encode() not in gzip.decompress(packed.data)


# ---------------------------------------------------------------------------------------------------------------
# answers of the intake


@pytest.fixture
async def fake() -> AsyncIterator[DatadogFake]:
    async with DatadogFake([KEY]) as f:
        yield f


@pytest.fixture
async def exporter(fake: DatadogFake) -> AsyncIterator[DatadogExporter]:
    exp = make_exporter(fake.url)
    exp.bind_metrics(SelfMetrics(CollectorRegistry()))
    await exp.start()
    yield exp
    await exp.close()


def metric(exp: DatadogExporter, name: str) -> float:
    counter = {"auth": exp._auth_metric}[name]
    return float(counter._value.get())


async def test_success_sends_gzip_json_with_the_api_key(fake, exporter):
    (payload,) = exporter.encode(deliveries(5))
    assert await exporter.push(payload) == Success("HTTP 202")
    (req,) = fake.requests
    assert req.headers["DD-API-KEY"] == KEY
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Content-Type"] == "application/json"
    assert [e.attributes["claude_code"]["id"] for e in fake.logs] == [f"{i:032x}" for i in range(5)]
    assert all(e.ddsource == "claude-code" and e.hostname == "bridge-01" and not e.truncated for e in fake.logs)


async def test_an_oversize_entry_is_accepted_whole_by_the_intake(fake, exporter):
    huge = record(5, attributes={"blob": "z" * 2_500_000})
    (payload,) = exporter.encode([delivery(huge)])
    assert isinstance(await exporter.push(payload), Success)
    (entry,) = fake.logs
    assert not entry.truncated and entry.size <= MAX_ENTRY_BYTES
    assert entry.attributes["ccbridge"]["truncated"] is True


async def test_413_is_split_by_the_engine_and_every_entry_arrives_once_in_order(fake, exporter, tmp_path):
    fake.logs_max_payload_bytes = 4000
    recs = deliveries(12, pad=500)
    (payload,) = exporter.encode(recs)
    outcome = await exporter.push(payload)
    assert isinstance(outcome, Permanent) and outcome.status == 413  # the exporter does not split ...
    settled = await send_through_engine(exporter, recs, tmp_path)  # ... the engine does
    assert settled.delivered == recs and settled.refused == []
    assert [e.attributes["claude_code"]["id"] for e in fake.logs] == [f"{i:032x}" for i in range(12)]
    statuses = [r.status for r in fake.requests]
    assert statuses[:2] == [413, 413] and statuses.count(202) >= 3


async def test_413_for_a_single_entry_dead_letters_only_that_record(fake, exporter, tmp_path):
    recs = [delivery(record(0), 1), delivery(record(1, attributes={"pad": "p" * 6000}), 2), delivery(record(2), 3)]
    fake.logs_max_payload_bytes = 3000
    settled = await send_through_engine(exporter, recs, tmp_path)
    assert settled.delivered == [recs[0], recs[2]]
    ((refused, reason, status, _attempts),) = settled.refused
    assert refused == [recs[1]] and status == 413
    assert "one log entry of" in reason
    assert [e.attributes["claude_code"]["id"] for e in fake.logs] == [f"{0:032x}", f"{2:032x}"]
    (single,) = exporter.encode([recs[1]])
    outcome = await exporter.push(single)
    assert isinstance(outcome, Permanent) and outcome.status == 413


async def test_a_retry_after_a_split_resends_only_the_rest(fake, tmp_path, monkeypatch):
    exporter = make_exporter(fake.url, retry={"initial_interval": "10ms", "max_interval": "20ms"})
    await exporter.start()
    recs = deliveries(4, pad=500)
    fake.logs_max_payload_bytes = len(exporter.encoder.encode(recs[0])) * 2 + 10  # two entries fit, four do not
    real = exporter._post_logs
    sent: list[list[str]] = []
    calls = 0

    async def flaky(data: bytes):
        nonlocal calls
        calls += 1
        sent.append([e["claude_code"]["id"] for e in orjson.loads(gzip.decompress(data))])
        if calls == 3:  # 1: whole (413), 2: first half (202), 3: second half -> 503
            fake.fail_next(status=503)
        return await real(data)

    monkeypatch.setattr(exporter, "_post_logs", flaky)
    try:
        settled = await send_through_engine(exporter, recs, tmp_path)
    finally:
        await exporter.close()
    assert settled.delivered == recs
    ids = [f"{i:032x}" for i in range(4)]
    assert sent == [ids, ids[:2], ids[2:], ids[2:]]  # the retry re-sends only the half not yet accepted
    assert [e.attributes["claude_code"]["id"] for e in fake.logs] == ids


async def test_429_honours_retry_after_then_x_ratelimit_reset(fake, exporter):
    (payload,) = exporter.encode(deliveries(2))
    fake.fail_next(status=429, retry_after=7, endpoint="logs")
    outcome = await exporter.push(payload)
    assert isinstance(outcome, Retry) and outcome.delay == 7.0 and outcome.status == 429
    fake.fail_next(status=429, endpoint="logs")  # no Retry-After: X-RateLimit-Reset: 1
    outcome = await exporter.push(payload)
    assert isinstance(outcome, Retry) and outcome.delay == 1.0
    assert isinstance(await exporter.push(payload), Success)
    assert len(fake.logs) == 2


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_timeouts_and_server_errors_are_retried(fake, exporter, status):
    (payload,) = exporter.encode(deliveries(1))
    fake.fail_next(status=status)
    outcome = await exporter.push(payload)
    assert isinstance(outcome, Retry) and outcome.status == status
    assert exporter.health() is None


async def test_a_connection_failure_is_retried():
    exp = make_exporter("http://127.0.0.1:9")
    (payload,) = exp.encode(deliveries(1))
    try:
        outcome = await exp.push(payload)
    finally:
        await exp.close()
    assert isinstance(outcome, Retry) and "connection" in outcome.reason


async def test_403_is_permanent_loud_and_unhealthy_until_the_key_works(fake, exporter, caplog):
    fake.revoke_key(KEY)
    (payload,) = exporter.encode(deliveries(2))
    with caplog.at_level(logging.ERROR, logger="exporters.datadog"):
        outcome = await exporter.push(payload)
        await exporter.push(payload)
    assert isinstance(outcome, Permanent) and outcome.status == 403
    assert "Invalid API key" in outcome.reason and "check api_key and site" in outcome.reason
    assert exporter.health() is not None and "refused the API key" in exporter.health()
    assert metric(exporter, "auth") == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # throttled
    assert KEY not in caplog.text and KEY not in outcome.reason and KEY not in exporter.health()
    fake.add_key(KEY)
    assert isinstance(await exporter.push(payload), Success)
    assert exporter.health() is None


async def test_401_is_permanent_and_unhealthy(fake, exporter):
    fake.fail_next(status=401, endpoint="logs")
    (payload,) = exporter.encode(deliveries(1))
    outcome = await exporter.push(payload)
    assert isinstance(outcome, Permanent) and outcome.status == 401
    assert exporter.health() is not None


async def test_400_is_permanent_with_the_apis_error_text(fake, exporter):
    bad = Payload([delivery(record(0))], gzip.compress(b'[{"ddsource":"claude-code"}]'), meta={})
    outcome = await exporter.push(bad)
    assert isinstance(outcome, Permanent) and outcome.status == 400
    assert "log entry 0: message is required" in outcome.reason
    assert exporter.health() is None


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"x-ratelimit-reset": "12"}, 12.0),
        ({"retry-after": "2", "x-ratelimit-reset": "12"}, 2.0),
        ({"x-ratelimit-reset": "999999"}, 3600.0),
        ({"x-ratelimit-reset": "inf"}, None),
        ({"x-ratelimit-reset": "-5"}, None),
        ({"x-ratelimit-reset": "²"}, None),
        ({}, None),
    ],
)
def test_server_delay_of_a_429(headers, delay):
    answer = HttpAnswer(429, "{}", headers, parse_retry_after(headers.get("retry-after")))
    assert server_delay(answer) == delay


def test_an_entry_with_huge_facets_still_fits():
    many = {f"k{i:06d}": "v" * 20 for i in range(60_000)}  # many small values: each below the large-value cut
    (payload,) = make_exporter().encode([delivery(record(6, kind="event", extra=many))])
    raw = gzip.decompress(payload.data)
    assert len(raw) <= MAX_ENTRY_BYTES + 2
    (entry,) = orjson.loads(raw)
    assert entry["ccbridge"]["truncated"] is True and "claude_code" not in entry
    assert entry["ddsource"] == "claude-code" and entry["ddtags"] == "kind:event"
