"""The Datadog destination end to end: recorded Claude Code requests go into a real in-process bridge (receivers,
store, delivery engine, metrics tailer) configured with ``exporters.datadog/t`` pointing at the strict fake intake.

Recordings are replayed with their times moved to now (so metric points are inside Datadog's one-hour window),
except where the test is about an old backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from collector.config import load_text
from collector.demo import batches
from collector.service import Service
from collector.store.delivery_state import state_path
from collector.store.sqlite import shard_path
from tests.conftest import LOOPBACK, Bridge, bridge_config_dict, free_port
from tests.contract.make_golden import (
    FIXTURES,
    RecordedRequest,
    Replayer,
    json_to_protobuf,
    protobuf_to_json,
    recorded_requests,
    stdout_json,
)
from tests.fakes.datadog import DatadogFake

KEY = "fedcba9876543210fedcba9876543210"
DEST = "datadog/t"
DETAILS = "v2.1.332-http-json-details-traces"
DENY = "v2.1.197-http-protobuf-deny"
REFERENCE = "v2.1.332-http-protobuf-allow"
EMAIL = "jdoe@example.com"
_TIME_FIELD = re.compile(rb'"(timeUnixNano|observedTimeUnixNano|startTimeUnixNano|endTimeUnixNano)":\s*"?(\d+)"?')

StartBridge = Callable[..., Awaitable[Bridge]]


# ---------------------------------------------------------------------------------------------------------------
# helpers


def section(fake: DatadogFake, **extra: Any) -> dict[str, Any]:
    return {
        "api_key": KEY,
        "logs_endpoint": fake.url,
        "metrics_endpoint": fake.url,
        "hostname": "bridge-01",
        "tags": ["env:test"],
        "metrics_interval": 1,
        "batch": {"timeout": "50ms"},
        "retry": {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "30s"},
        **extra,
    }


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[StartBridge]:
    """``await start(exporters={...})``: a bridge whose config goes through the YAML loader (exporters built)."""
    started: list[Bridge] = []

    async def run(exporters: dict[str, Any], data_dir: Path | None = None) -> Bridge:
        ddir = data_dir or tmp_path / f"bridge-{len(started)}"
        for _ in range(3):
            ports = {"http_port": free_port(), "grpc_port": free_port(), "telemetry_port": free_port()}
            tree = bridge_config_dict(ddir, **ports, overrides={"exporters": exporters})
            cfg = load_text(yaml.safe_dump(tree))
            service = Service(cfg)
            try:
                await service.start()
            except OSError:
                with contextlib.suppress(Exception):
                    await service.stop()
                continue
            bridge = Bridge(
                cfg=cfg,
                service=service,
                data_dir=ddir,
                http_url=f"http://{LOOPBACK}:{ports['http_port']}",
                grpc_target=f"{LOOPBACK}:{ports['grpc_port']}",
                telemetry_url=f"http://{LOOPBACK}:{ports['telemetry_port']}",
            )
            started.append(bridge)
            return bridge
        raise RuntimeError("could not start a bridge")

    yield run
    for b in reversed(started):
        await b.stop()


@pytest.fixture
async def fake() -> AsyncIterator[DatadogFake]:
    async with DatadogFake([KEY]) as f:
        yield f


def shifted(req: RecordedRequest, offset_ns: int) -> RecordedRequest:
    """``req`` with every OTLP time moved by ``offset_ns`` (protobuf bodies go through OTLP/JSON and back)."""

    def move(body: bytes) -> bytes:
        return _TIME_FIELD.sub(lambda m: b'"%s":"%d"' % (m.group(1), int(m.group(2)) + offset_ns), body)

    if (req.content_type or "").endswith("json"):
        return replace(req, body=move(req.body))
    return replace(req, body=json_to_protobuf(req.signal, move(protobuf_to_json(req.signal, req.body))))


async def replay(bridge: Bridge, run: str, *, fresh: bool = True) -> list[RecordedRequest]:
    reqs = recorded_requests(FIXTURES / run)
    if fresh:
        latest = max(int(m.group(2)) for r in reqs for m in _TIME_FIELD.finditer(_as_json(r)))
        reqs = [shifted(r, time.time_ns() - latest) for r in reqs]
    async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
        for r in reqs:
            res = await rp.send(r)
            assert getattr(res, "status", 200) == 200, res
    return reqs


def _as_json(req: RecordedRequest) -> bytes:
    return req.body if (req.content_type or "").endswith("json") else protobuf_to_json(req.signal, req.body)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if result is not False and result is not None:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def datadog_view(fake: DatadogFake) -> dict[tuple[str, tuple[str, ...]], float]:
    """Per (metric, tags): the last value per timestamp (Datadog keeps the last submission), summed."""
    last: dict[tuple[str, tuple[str, ...], int], float] = {}
    for p in fake.points:
        last[(p.metric, tuple(p.tags), p.timestamp)] = p.value
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for (metric, tags, _), value in last.items():
        out[(metric, tags)] = out.get((metric, tags), 0.0) + value
    return out


def total(fake: DatadogFake, metric: str, *tags: str) -> float:
    return sum(v for (m, t), v in datadog_view(fake).items() if m == metric and all(x in t for x in tags))


async def telemetry(bridge: Bridge, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(bridge.telemetry_url + path) as resp:
        return resp.status, await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one exposed sample; 0 while a labelled counter has not been incremented yet."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def dead_letters(bridge: Bridge, destination: str = DEST) -> int:
    with contextlib.closing(sqlite3.connect(state_path(bridge.data_dir, 0))) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM dead_letters WHERE destination = ?", (destination,)).fetchone()[0]
        )


def log_requests(fake: DatadogFake) -> list[Any]:
    return [r for r in fake.requests if r.path == "/api/v2/logs"]


# ---------------------------------------------------------------------------------------------------------------
# tests


async def test_details_run_reaches_datadog_without_emails_or_commands(start, fake):
    bridge = await start({DEST: section(fake)})
    await replay(bridge, DETAILS)
    stored = [r for r in bridge.records() if r["kind"] != "chain_head"]
    logs = await fake.wait_for_logs(len(stored), timeout=15)
    assert len(logs) == len(stored) == 21  # 19 events + 2 file changes
    assert {e.attributes["claude_code"]["id"] for e in logs} == {r["id"] for r in stored}
    for entry in logs:
        raw = orjson.dumps(entry.raw).decode()
        assert EMAIL not in raw
        assert "full_command" not in raw and '"command"' not in raw and "echo hi" not in raw  # commands, prompt
        assert entry.ddsource == "claude-code" and entry.service == "claude-code" and entry.hostname == "bridge-01"
        assert entry.status == "info"  # everything was accepted and succeeded
        assert entry.tags[0] == "env:test" and f"kind:{entry.attributes['claude_code']['kind']}" in entry.tags
        assert entry.attributes["usr"]["email"].startswith("sha256:")
        assert entry.timestamp_in_window is True and not entry.truncated
    decisions = [e for e in logs if e.attributes["claude_code"]["kind"] == "tool_decision"]
    assert sorted(e.attributes["claude_code"]["tool"]["name"] for e in decisions) == ["Bash", "Edit", "Write"]
    assert all("decision:accept" in e.tags and "model:" not in e.ddtags for e in decisions)  # type: ignore[operator]
    requests = [e for e in logs if e.attributes["claude_code"]["kind"] == "api_request"]
    assert all("model:claude-opus-5-5" in e.tags for e in requests)
    for req in log_requests(fake):
        assert req.headers["Content-Encoding"] == "gzip" and req.headers["DD-API-KEY"] == KEY

    result = stdout_json(FIXTURES / DETAILS)
    await eventually(lambda: total(fake, "claude_code.session.count") == 1)
    await eventually(lambda: total(fake, "claude_code.audit.records") == 21)
    assert total(fake, "claude_code.cost.usage") == pytest.approx(result["total_cost_usd"])
    assert total(fake, "claude_code.audit.cost_usd", "model:claude-opus-5-5") == pytest.approx(result["total_cost_usd"])
    assert total(fake, "claude_code.token.usage", "type:input") == result["usage"]["input_tokens"]
    assert total(fake, "claude_code.audit.tokens", "type:output") == result["usage"]["output_tokens"]
    assert total(fake, "claude_code.lines_of_code.count", "type:added") == 4
    assert total(fake, "claude_code.lines_of_code.count", "type:removed") == 1
    assert total(fake, "claude_code.code_edit_tool.decision", "decision:accept") == 2
    assert total(fake, "claude_code.audit.tool_decisions", "decision:accept", "approval_mode:automatic") == 3
    assert total(fake, "claude_code.audit.tool_results", "success:true") == 3
    session_id = stored[0]["session"]["id"]
    for p in fake.points:
        assert p.type == 1 and p.interval == 1 and p.host == "bridge-01" and p.tags[0] == "env:test"
        assert not any("@" in t or session_id in t or stored[0]["user"]["id"] in t for t in p.tags)
    assert fake.dropped_points == []


async def test_configured_fields_let_the_email_through(start, fake):
    bridge = await start({DEST: section(fake, fields={"user.email": "keep"}, send_metrics=False)})
    await replay(bridge, DETAILS)
    logs = await fake.wait_for_logs(21, timeout=15)
    assert {e.attributes["usr"]["email"] for e in logs} == {EMAIL}
    assert all(e.attributes["claude_code"]["user"]["email"] == EMAIL for e in logs)
    local_part = EMAIL.split("@", maxsplit=1)[0]
    assert all(e.message.startswith(local_part) for e in logs if e.attributes["claude_code"].get("user"))
    assert all("full_command" not in orjson.dumps(e.attributes).decode() for e in logs)  # commands still dropped
    assert not [r for r in fake.requests if r.path == "/api/v2/series"]


async def test_a_rejected_command_is_a_warning_and_counted_as_reject(start, fake):
    bridge = await start({DEST: section(fake)})
    await replay(bridge, DENY)
    logs = await fake.wait_for_logs(12, timeout=15)
    (reject,) = [e for e in logs if "decision:reject" in e.tags]
    assert reject.status == "warning"
    assert reject.attributes["claude_code"]["tool"] == {
        "name": "Bash",
        "use_id": reject.attributes["claude_code"]["tool"]["use_id"],
        "decision": "reject",
        "decision_source": "config",
        "approval_mode": "automatic",
    }
    assert [e.status for e in logs].count("warning") == 1
    await eventually(lambda: total(fake, "claude_code.audit.tool_decisions", "decision:reject", "tool:Bash") == 1)
    assert total(fake, "claude_code.audit.tool_decisions", "decision:accept") == 1


async def test_an_old_backlog_goes_to_logs_but_not_to_metric_series(start, fake):
    bridge = await start({DEST: section(fake)})
    assert bridge.service.delivery is not None
    (exporter,) = bridge.service.delivery.exporters
    # the reader has taken its positions (on an empty store) before the old data arrives
    await eventually(lambda: exporter.tailer is not None and exporter.tailer.stats.passes >= 1)  # type: ignore[attr-defined]
    await replay(bridge, REFERENCE, fresh=False)  # recorded more than an hour ago
    logs = await fake.wait_for_logs(19, timeout=15)
    assert len(logs) == 19

    async def skipped() -> float:
        _, text = await telemetry(bridge, "/metrics")
        return sample(text, "ccbridge_exporter_metric_points_skipped_total", destination=DEST, reason="too_old")

    deadline = time.monotonic() + 15
    while await skipped() < 30 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await skipped() == 30  # 19 records + 11 Claude Code data points
    assert fake.points == [] and fake.dropped_points == []
    assert not [r for r in fake.requests if r.path == "/api/v2/series"]


async def test_batches_respect_1000_entries_and_5mb(start, fake, tmp_path):
    dest = section(fake, send_metrics=False, batch={"max_records": 5000, "max_bytes": "64MiB", "timeout": "1s"})
    bridge = await start({DEST: dest})
    gen = batches(2500, users=5, seed=3)
    async with aiohttp.ClientSession() as s:
        body = next(gen).SerializeToString()
        headers = {"Content-Type": "application/x-protobuf"}
        async with s.post(bridge.http_url + "/v1/logs", data=body, headers=headers) as resp:
            assert resp.status == 200
    stored = bridge.count()
    logs = await fake.wait_for_logs(stored, timeout=30)
    assert len(logs) == stored >= 2500
    assert len({e.attributes["claude_code"]["id"] for e in logs}) == stored
    sizes = [(len(orjson.loads(r.decoded_body or b"[]")), len(r.decoded_body or b"")) for r in log_requests(fake)]
    assert all(n <= 1000 and size <= 5_000_000 for n, size in sizes)
    assert len(sizes) >= 3 and all(r.status == 202 for r in log_requests(fake))


async def test_413_is_split_through_the_engine_without_losses(start, fake):
    fake.logs_max_payload_bytes = 12_000
    bridge = await start({DEST: section(fake, send_metrics=False)})
    await replay(bridge, DETAILS)
    logs = await fake.wait_for_logs(21, timeout=15)
    assert len({e.attributes["claude_code"]["id"] for e in logs}) == 21 == len(logs)
    assert 413 in [r.status for r in log_requests(fake)]
    assert dead_letters(bridge) == 0


async def test_429_is_retried_after_retry_after(start, fake):
    fake.fail_next(status=429, retry_after=1, endpoint="logs")
    bridge = await start({DEST: section(fake, send_metrics=False)})
    await replay(bridge, DENY)
    await fake.wait_for_logs(12, timeout=15)
    first, second = log_requests(fake)[:2]
    assert first.status == 429 and second.status == 202
    assert second.received_at - first.received_at >= 0.9
    assert dead_letters(bridge) == 0


async def test_403_dead_letters_alerts_and_degrades_readiness(start, fake, caplog):
    fake.revoke_key(KEY)
    bridge = await start({DEST: section(fake)})
    await replay(bridge, DENY)
    await eventually(lambda: dead_letters(bridge) == 12)
    status, body = await telemetry(bridge, "/readyz")
    assert status == 200  # the bridge keeps accepting; the problem is reported, not a reason to refuse traffic
    reason = orjson.loads(body)["degraded"][f"exporter:{DEST}"]
    assert "Datadog refused the API key" in reason and KEY not in reason
    _, text = await telemetry(bridge, "/metrics")
    assert sample(text, "ccbridge_exporter_auth_failures_total", destination=DEST) >= 1
    assert "Datadog refused the API key" in caplog.text and KEY not in caplog.text
    assert fake.logs == []


async def test_a_restart_sends_no_metric_twice(start, fake, tmp_path):
    data_dir = tmp_path / "restart"
    bridge = await start({DEST: section(fake)}, data_dir=data_dir)
    await replay(bridge, DENY)
    await eventually(lambda: total(fake, "claude_code.audit.records") == 12)
    first_logs = await fake.wait_for_logs(12)
    await bridge.stop()
    before = len(fake.requests)
    again = await start({DEST: section(fake)}, data_dir=data_dir)
    assert again.service.delivery is not None
    (exporter,) = again.service.delivery.exporters
    await eventually(lambda: exporter.tailer is not None and exporter.tailer.stats.passes >= 2)  # type: ignore[attr-defined]
    again_sent = fake.requests[before:]
    # only the chain head the first bridge published while stopping may follow; no record or count twice
    assert [r.path for r in again_sent] in ([], ["/api/v2/logs"])
    assert all(e.attributes["claude_code"]["kind"] == "chain_head" for e in fake.logs[len(first_logs) :])
    assert len({e.attributes["claude_code"]["id"] for e in fake.logs}) == len(fake.logs)


@pytest.mark.slow
async def test_two_worker_processes_each_deliver_their_shard(spawn_bridge, fake, tmp_path):
    """``ccbridge run`` with two workers: each binds its own shard, logs arrive once, series add up over workers."""
    proc = await asyncio.to_thread(
        spawn_bridge, overrides={"server": {"workers": 2}, "exporters": {DEST: section(fake)}}
    )
    gen = batches(20, users=4, seed=11)
    deadline = time.monotonic() + 30
    while not all(shard_records(proc.data_dir, i) for i in (0, 1)):  # until both workers got some
        assert time.monotonic() < deadline, "the second worker never received a request"
        # a new connection each time, so the kernel spreads them over both workers
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            body = next(gen).SerializeToString()
            headers = {"Content-Type": "application/x-protobuf"}
            async with s.post(proc.http_url + "/v1/logs", data=body, headers=headers) as resp:
                assert resp.status == 200
    stored = [r for r in proc.records() if r["kind"] != "chain_head"]
    logs = await fake.wait_for_logs(len(stored), timeout=30)
    assert {e.attributes["claude_code"]["id"] for e in logs} >= {r["id"] for r in stored}
    await eventually(lambda: total(fake, "claude_code.audit.records") == len(stored), timeout=30)
    workers = {t for p in fake.points for t in p.tags if t.startswith("ccbridge_worker:")}
    assert workers == {"ccbridge_worker:0", "ccbridge_worker:1"}


def shard_records(data_dir: Path, shard: int) -> int:
    path = shard_path(data_dir, shard)
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM records WHERE kind != 'chain_head'").fetchone()[0])
        except sqlite3.OperationalError:  # created but not yet initialised
            return 0
