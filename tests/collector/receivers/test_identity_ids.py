"""The authenticated identity is part of every record id: a token holder cannot replace or suppress another
identity's records by sending forged ones for its session and sequence numbers first; a record whose id collides
with different content is stored and flagged, never dropped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector import cli
from collector.processing.normalize import record_id
from collector.store.reader import verify_chain
from collector.store.sqlite import AuditStore
from tests.fakes.http_sink import HttpSink

TOKEN_A = "tok-A-7f3c9e2b5d1a4c8e0b6f"
TOKEN_B = "tok-B-1d9a0c7e3f5b2a8c4e6d"
SESSION = "0d9b1f0e-team-a-session"


def decision(seq: int, command: str, verdict: str, t: int) -> bytes:
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.time_unix_nano = t
    lr.body.string_value = "claude_code.tool_decision"
    for k, v in {
        "session.id": SESSION,
        "event.sequence": str(seq),
        "event.name": "tool_decision",
        "tool_name": "Bash",
        "decision": verdict,
        "source": "user_temporary",
        "tool_parameters": orjson.dumps({"full_command": command}).decode(),
    }.items():
        lr.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    return req.SerializeToString()


async def post(url: str, token: str, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/logs",
            data=body,
            headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        return resp.status


def test_the_identity_changes_the_id_and_anonymous_ids_are_unchanged() -> None:
    anonymous = record_id("s", 5, "claude_code.tool_decision", None)
    assert anonymous == record_id("s", 5, "claude_code.tool_decision", None, None)
    assert anonymous == record_id("s", 5, "claude_code.tool_decision", None, "")
    a = record_id("s", 5, "claude_code.tool_decision", None, "team-a")
    b = record_id("s", 5, "claude_code.tool_decision", None, "team-b")
    assert len({anonymous, a, b}) == 3
    assert a == record_id("s", 5, "claude_code.tool_decision", None, "team-a")  # stable: retries dedup
    # content-hashed records (no session/sequence) carry the identity too
    assert record_id(None, None, "e", [1, 2], "team-a") != record_id(None, None, "e", [1, 2], "team-b")


async def test_a_forged_record_cannot_suppress_the_genuine_one(bridge_factory: Any) -> None:
    t = time.time_ns()
    async with HttpSink() as sink:
        b = await bridge_factory(
            overrides={
                "receivers": {
                    "auth": {
                        "tokens": [{"token": TOKEN_A, "identity": "team-a"}, {"token": TOKEN_B, "identity": "team-b"}]
                    }
                },
                "exporters": {"http/sink": {"url": sink.url, "batch": {"timeout": "100ms"}}},
            }
        )
        # team-b learned team-a's session id and sends the coming sequence number first
        assert await post(b.http_url, TOKEN_B, decision(5, "ls", "accept", t)) == 200
        genuine = decision(5, "rm -rf /", "reject", t)
        assert await post(b.http_url, TOKEN_A, genuine) == 200
        assert await post(b.http_url, TOKEN_A, genuine) == 200  # team-a's own retry: still stored once
        records = [r for r in b.records() if r["kind"] == "tool_decision"]
        assert len(records) == 2
        by_identity = {r["source"]["identity"]: r for r in records}
        assert by_identity["team-a"]["tool"]["decision"] == "reject"
        assert by_identity["team-a"]["tool"]["command"] == "rm -rf /"
        assert by_identity["team-b"]["tool"]["command"] == "ls"
        assert not any("id_collision" in r for r in records)  # different ids: no collision at all
        await sink.wait_for_ids({r["id"] for r in records}, timeout=20)
        delivered = sink.records[by_identity["team-a"]["id"]]
        assert delivered["tool"]["decision"] == "reject" and delivered["source"]["identity"] == "team-a"
        assert sink.duplicates() == 0


def _row(rid: str, body: dict[str, Any]) -> tuple[str, int, str, None, None, str, int, bytes]:
    return (rid, 1_000, "tool_decision", None, None, "s", 2_000, orjson.dumps(body))


def test_a_colliding_record_with_different_content_is_stored_flagged_and_exported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    rid = "a" * 32
    first = {"id": rid, "kind": "tool_decision", "received_time": "t1", "attributes": {"decision": "reject"}}
    retry = first | {"received_time": "t2"}  # a retry differs only in when it arrived
    other = first | {"attributes": {"decision": "accept"}}
    with AuditStore(data) as store:
        r1 = store.append_sync(records=[_row(rid, first)])
        r2 = store.append_sync(records=[_row(rid, retry)])
        r3 = store.append_sync(records=[_row(rid, other)])
        r4 = store.append_sync(records=[_row(rid, other | {"received_time": "t3"})])  # the collision's retry
        r5 = store.append_sync(records=[_row(rid, other), _row(rid, first | {"attributes": {"x": 1}})])
    assert (r1.new_records, r2.new_records, r3.new_records, r4.new_records) == (1, 0, 1, 0)
    assert (r3.collisions, r4.collisions, r5.collisions, r5.new_records) == (1, 0, 1, 1)
    assert cli.main(["audit", "export", "--data-dir", str(data)]) == 0
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_attrs = {orjson.dumps(r["attributes"]): r for r in out}
    assert set(by_attrs) == {b'{"decision":"reject"}', b'{"decision":"accept"}', b'{"x":1}'}
    original, accept, x = by_attrs[b'{"decision":"reject"}'], by_attrs[b'{"decision":"accept"}'], by_attrs[b'{"x":1}']
    assert "id_collision" not in original and original["id"] == rid
    assert accept["id_collision"] == {"id": rid} and accept["id"] != rid
    assert x["id_collision"] == {"id": rid} and x["id"] not in (rid, accept["id"])
    assert cli.main(["audit", "export", "--data-dir", str(data), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    col, idcol = header.index("id_collision"), header.index("id")
    flags = {line.split(",")[idcol]: line.split(",")[col] for line in lines[1:]}
    assert flags == {rid: "", accept["id"]: rid, x["id"]: rid}
    report = verify_chain(data)
    assert report.broken is None and report.records == 3
    assert cli.main(["audit", "verify", "--data-dir", str(data)]) == 0
