"""The shared ingest path: decoded events -> redacted, normalized, encoded rows -> one durable append."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.demo import DemoSession, logs_request
from collector.pipeline import CHUNK_EVENTS, Pipeline
from collector.processing.decode import DecodeError, log_stream_from_protobuf
from collector.processing.redact import Redactor
from collector.store.sqlite import AuditStore
from collector.telemetry.selfmetrics import SelfMetrics
from tests.conftest import stored_bodies, stored_count

SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def request(events: int) -> ExportLogsServiceRequest:
    session = DemoSession(email="dev@example.com")
    records: list = []
    t = time.time_ns()
    while len(records) < events:
        records += session.prompt_turn(t)
        t += 1_000_000_000
    req = logs_request(records[:events])
    req.resource_logs[0].resource.attributes.add(key="ci.token", value={"string_value": SECRET})
    return req


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    store = AuditStore(tmp_path, writer="inline").open()
    try:
        yield Pipeline(store, SelfMetrics(), redactor=Redactor())
    finally:
        store.close()


async def test_a_streamed_request_larger_than_a_chunk_is_stored_whole(pipeline: Pipeline, tmp_path: Path) -> None:
    events = CHUNK_EVENTS * 3 + 5
    req = request(events)
    result = await pipeline.consume("logs", log_stream_from_protobuf(req.SerializeToString()), "http")
    stored = stored_bodies(tmp_path, "records")
    assert result.records == len(stored) >= events
    assert len({r["sequence"] for r in stored if r["kind"] != "file_change"}) == events
    assert all(SECRET not in str(r["resource"]) for r in stored)  # the shared resource is redacted in every chunk
    accepted = pipeline.metrics.registry.get_sample_value(
        "ccbridge_receiver_accepted_items_total", {"signal": "logs", "transport": "http"}
    )
    assert accepted == events


async def test_a_bad_event_in_a_later_chunk_stores_nothing_of_the_request(pipeline: Pipeline, tmp_path: Path) -> None:
    req = request(CHUNK_EVENTS * 2)
    value = req.resource_logs[0].scope_logs[0].log_records[-1].attributes.add(key="deep").value
    for _ in range(12):
        value = value.kvlist_value.values.add(key="k").value
    value.string_value = "bottom"
    with pytest.raises(DecodeError, match="nested deeper"):
        await pipeline.consume("logs", log_stream_from_protobuf(req.SerializeToString(), 8), "http")
    assert stored_count(tmp_path, "records") == 0


async def test_each_record_keeps_its_own_resource_across_many_resource_logs(pipeline: Pipeline, tmp_path: Path) -> None:
    # Redacted resources are remembered by the identity of the decoded dict; a lazily decoded request frees each
    # resource dict once it moves on, and the next one may get the same address (found by review: records took
    # an earlier resource's attributes).
    req = ExportLogsServiceRequest()
    for i in range(50):
        rl = req.resource_logs.add()
        rl.resource.attributes.add(key="host.name", value={"string_value": f"host-{i}"})
        rl.resource.attributes.add(key="ci.token", value={"string_value": SECRET})
        sl = rl.scope_logs.add()
        for j in range(5):
            lr = sl.log_records.add()
            lr.body.string_value = "claude_code.user_prompt"
            lr.attributes.add(key="session.id", value={"string_value": f"session-{i}"})
            lr.attributes.add(key="event.sequence", value={"int_value": j})
    await pipeline.consume("logs", log_stream_from_protobuf(req.SerializeToString()), "http")
    stored = stored_bodies(tmp_path, "records")
    assert len(stored) == 250
    for rec in stored:
        assert rec["resource"]["host.name"] == "host-" + rec["session"]["id"].removeprefix("session-")
        assert SECRET not in str(rec["resource"])
