"""Delivery engine acceptance tests, end to end: OTLP clients -> bridge (receivers, durable store, delivery engine,
``http`` exporter) -> the strict HTTP sink (:mod:`tests.fakes.http_sink`), checked by record id.

Bridges run in process (fast, white-box access to the engine) or as real ``ccbridge run`` subprocesses where a
process has to die or stop (SIGKILL, SIGTERM). Everything listens on 127.0.0.1; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from collector.delivery import engine as engine_mod
from collector.store.sqlite import connect, shard_path
from tests.collector.delivery.delivery_support import (
    LoadClients,
    Traffic,
    get_json,
    http_destination,
    metric,
    metric_is,
    run_cli,
    send_grpc_once,
    send_once,
    start_bridge_with_exporters,
    stored_ids,
    wait_until,
)
from tests.conftest import PROJECT_ROOT, Bridge, free_port
from tests.fakes.http_sink import HttpSink

pytestmark = pytest.mark.slow

SENT = "ccbridge_exporter_sent_records_total"
BACKLOG = "ccbridge_exporter_backlog_records"
DROPPED = "ccbridge_exporter_dropped_records_total"
DEAD = "ccbridge_exporter_dead_letter_records_total"
RETRIES = "ccbridge_exporter_retries_total"


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


StartBridge = Callable[..., Awaitable[tuple[Bridge, Path]]]


@pytest.fixture
async def bridges(tmp_path: Path) -> AsyncIterator[StartBridge]:
    """``await bridges(overrides, name="bridge") -> (Bridge, config_path)``: in-process bridges with destinations."""
    started: list[Bridge] = []

    async def start(overrides: dict[str, Any], name: str = "bridge") -> tuple[Bridge, Path]:
        b, cfg = await start_bridge_with_exporters(tmp_path / name, overrides)
        started.append(b)
        return b, cfg

    yield start
    for b in reversed(started):
        await b.stop()


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as s:
        yield s


def exporters_cfg(**sections: dict[str, Any]) -> dict[str, Any]:
    return {"exporters": {f"http/{name}": section for name, section in sections.items()}}


def seqs(data_dir: Path) -> dict[str, int]:
    """Record id -> seq in shard 0."""
    with contextlib.closing(connect(shard_path(data_dir, 0), readonly=True)) as conn:
        return {rid: seq for rid, seq in conn.execute("SELECT id, seq FROM records")}


def dlq_list(config: Path) -> list[dict[str, Any]]:
    code, out, err = run_cli(["dlq", "list", "--format", "jsonl", "--config", str(config)])
    assert code == 0, err
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


async def send_all(http_url: str, reqs: list[Any]) -> None:
    for req in reqs:
        ans = await send_once(http_url, req)
        assert ans.ok, ans


# ---------------------------------------------------------------------------------------------------------------
# 1. kill -9 under sustained load


@dataclass
class SinkProcess:
    proc: subprocess.Popen[str]
    url: str
    control: str

    async def received(self) -> dict[str, list[float]]:
        status, state = await get_json(self.control + "/state")
        assert status == 200
        return state["received"]

    async def control_post(self, action: str, doc: dict[str, Any] | None = None) -> None:
        async with aiohttp.ClientSession() as s, s.post(f"{self.control}/{action}", json=doc or {}) as resp:
            assert resp.status == 200, await resp.text()


@pytest.fixture
def sink_process() -> Iterator[SinkProcess]:
    """``python -m tests.fakes.http_sink`` as its own process (stopped by its pid at teardown)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.http_sink", "--port", "0"],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url, control = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"sink did not start: {url!r}"
        yield SinkProcess(proc, url, control)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigkill_under_load_loses_no_acknowledged_record(spawn_bridge, sink_process):
    """Clients send continuously over OTLP/HTTP and OTLP/gRPC; the bridge is killed with SIGKILL at a random moment
    and restarted on the same data directory. Every record whose request got a success answer reaches the
    destination, and re-sent records (duplicates) are at most the batches that were in flight."""
    seed = int(os.environ.get("CCBRIDGE_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    max_records, concurrency = 100, 2
    overrides = exporters_cfg(x=http_destination(sink_process.url, max_records=max_records, concurrency=concurrency))
    first = await asyncio.to_thread(spawn_bridge, overrides=overrides)
    await sink_process.control_post("delay", {"seconds": 0.1})  # keep batches in flight most of the time
    traffic = Traffic(seed)
    async with LoadClients(first.http_url, first.grpc_target, traffic, http_clients=2, grpc_clients=2) as load:
        await load.wait_accepted(800, timeout=20)
        await wait_until(sink_process.received, 10, "first deliveries", interval=0.05)
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        first.kill()  # SIGKILL to the bridge process this test started
        accepted_at_kill = len(load.stats.accepted)
        pending_at_kill = len(load.stats.accepted - (await sink_process.received()).keys())
        await asyncio.sleep(0.3)  # clients see the refused connections
    stats = load.stats
    accepted = set(stats.accepted)
    assert stats.ok["http"] > 0 and stats.ok["grpc"] > 0, stats.ok
    assert len(accepted) >= accepted_at_kill >= 800

    await sink_process.control_post("clear")
    second = await asyncio.to_thread(spawn_bridge, data_dir=first.data_dir, overrides=overrides)
    received: dict[str, list[float]] = {}

    async def all_delivered() -> bool:
        nonlocal received
        received = await sink_process.received()
        return accepted <= received.keys()

    try:
        await wait_until(all_delivered, 30, "every acknowledged record at the sink", interval=0.25)
    except TimeoutError:
        missing = accepted - received.keys()
        pytest.fail(f"seed {seed}: {len(missing)} of {len(accepted)} acknowledged records never delivered")
    duplicates = sum(len(times) - 1 for times in received.values())
    print(f"seed {seed}: {len(accepted)} acknowledged, {pending_at_kill} undelivered at the kill, {duplicates} dups")
    assert duplicates <= max_records * concurrency, f"seed {seed}: {duplicates} duplicate deliveries"
    assert received.keys() <= stored_ids(second.records()), "the sink got records the bridge never stored"


# ---------------------------------------------------------------------------------------------------------------
# 2. Retry-After honoured through an outage


async def test_503_with_retry_after_for_30s_is_honoured_and_everything_arrives(bridges, sink):
    """The destination answers 503 ``Retry-After: 2`` for 30 s, then recovers: attempts are spaced by the server's
    delay (>= 2 s, < 2.5 s + jitter) and every record is delivered exactly once."""
    outage = 30.0
    dest = http_destination(sink.url, max_records=1000, retry={"initial_interval": "100ms", "jitter": 0.2})
    b, _ = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(2)
    reqs = [traffic.request(turns=3) for _ in range(3)]
    ids = {i for _, rids in reqs for i in rids}
    sink.fail_for(outage, status=503, retry_after="2")
    started = time.monotonic()
    await send_all(b.http_url, [r for r, _ in reqs])

    await sink.wait_for_ids(ids, timeout=outage + 10)
    refused = [r for r in sink.requests if r.status == 503]
    assert len(refused) >= 13, f"only {len(refused)} attempts during a {outage}s outage"
    for prev, nxt in zip(sink.requests, sink.requests[1:], strict=False):
        if prev.status != 503:
            continue
        assert nxt.mono - prev.answered_mono >= 2.0 - 0.01, "retried before the server's Retry-After"
        assert nxt.mono - prev.mono >= 2.0
        assert nxt.mono - prev.mono < 2.5 + 2.0 * 0.2, f"waited {nxt.mono - prev.mono:.2f}s for a 2 s Retry-After"
    first_ok = min(r.mono for r in sink.requests if r.status == 200)
    assert first_ok - started >= outage - 0.5
    assert sink.duplicates() == 0
    assert await metric(b.telemetry_url, RETRIES, destination="http/x") == len(refused)
    assert await metric(b.telemetry_url, DEAD, destination="http/x") == 0


# ---------------------------------------------------------------------------------------------------------------
# 3. a refused batch: dead letters, then replay


async def test_400_batch_goes_to_dead_letters_later_batches_flow_and_replay_delivers_it(bridges, sink):
    b, config = await bridges(exporters_cfg(x=http_destination(sink.url, max_records=20)))
    traffic = Traffic(3)
    (req_a, ids_a), (req_b, ids_b), (req_c, ids_c) = (traffic.request() for _ in range(3))
    await send_all(b.http_url, [req_a])
    await sink.wait_for_ids(ids_a, timeout=10)

    bad = ids_b[len(ids_b) // 2]
    sink.reject_records([bad], status=400, body="field event.timestamp is malformed")
    await send_all(b.http_url, [req_b])
    await send_all(b.http_url, [req_c])
    await sink.wait_for_ids(ids_c, timeout=10)  # batches after the refused one flow

    rejected_reqs = [r for r in sink.requests if r.status == 400]
    assert len(rejected_reqs) == 1, "a 400 must not be retried"
    rejected = set(rejected_reqs[0].ids)
    assert bad in rejected
    assert rejected <= set(ids_b)
    delivered = sink.ids()
    assert set(ids_a + ids_b + ids_c) - rejected <= delivered
    assert not rejected & delivered

    entries = await wait_until(lambda: dlq_list(config), 5, "dead letters listed")
    assert {e["record_id"] for e in entries} == rejected
    for e in entries:
        assert e["destination"] == "http/x"
        assert e["status"] == 400
        assert e["reason"].startswith("HTTP 400")
        assert "field event.timestamp is malformed" in e["reason"]
        assert e["attempts"] == 1
    assert await metric(b.telemetry_url, DEAD, destination="http/x") == len(rejected)

    stored = {r["id"]: r for r in b.records()}
    entry = next(e for e in entries if e["record_id"] == bad)
    code, out, err = await asyncio.to_thread(run_cli, ["dlq", "show", entry["id"], "--config", str(config)])
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["record"] == {k: v for k, v in stored[bad].items() if k != "chain"}  # export adds the chain link
    assert (shown["status"], shown["destination"]) == (400, "http/x")

    sink.clear()
    code, out, err = await asyncio.to_thread(run_cli, ["dlq", "replay", "--config", str(config)])
    assert code == 0, err
    assert f"replayed: {len(rejected)} delivered, 0 still failing" in out
    assert all(sink.count(i) == 1 for i in rejected)
    assert dlq_list(config) == []

    req_d, ids_d = traffic.request()
    await send_all(b.http_url, [req_d])
    await sink.wait_for_ids(ids_d, timeout=10)
    assert sink.duplicates() == 0


# ---------------------------------------------------------------------------------------------------------------
# 3b. outages never need a person: retry while the backlog is within limits; automatic replay of dead letters


async def test_outage_of_three_times_max_elapsed_time_delivers_everything_without_dead_letters(bridges, sink, caplog):
    """The destination is down (connection refused) for 3x ``retry.max_elapsed_time``, then back: every acknowledged
    record arrives, nothing goes to dead letters, no command is run; the stalled batch is reported in the log. A 400
    afterwards still dead-letters at once."""
    budget = 1.0
    await sink.stop()
    dest = http_destination(sink.url, max_records=20, retry={"max_elapsed_time": f"{budget}s", "max_interval": "300ms"})
    b, config = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(31)
    reqs = [traffic.request() for _ in range(6)]
    ids = {i for _, rids in reqs for i in rids}
    caplog.set_level("WARNING", logger="collector.delivery.engine")
    down_at = time.monotonic()
    await send_all(b.http_url, [r for r, _ in reqs])  # acknowledged while the destination is down
    await wait_until(lambda: metric(b.telemetry_url, RETRIES, destination="http/x"), 5, "retries while down")
    await asyncio.sleep(max(0.0, 3 * budget + 0.5 - (time.monotonic() - down_at)))
    assert await metric(b.telemetry_url, DEAD, destination="http/x") == 0
    await sink.start()

    await sink.wait_for_ids(ids, timeout=15)
    assert dlq_list(config) == []
    assert await metric(b.telemetry_url, DEAD, destination="http/x") == 0
    assert any("destination stalled" in r.getMessage() for r in caplog.records), "no stalled-destination warning"

    (req_bad, ids_bad) = traffic.request()
    bad = ids_bad[0]
    sink.reject_records([bad], status=400, body="malformed")
    await send_all(b.http_url, [req_bad])
    entries = await wait_until(lambda: dlq_list(config), 10, "the 400 batch in dead letters")
    assert bad in {e["record_id"] for e in entries}
    assert all(e["status"] == 400 and e["attempts"] == 1 for e in entries)
    assert len([r for r in sink.requests if r.status == 400]) == 1, "a 400 must not be retried"


async def test_auto_replay_delivers_a_dead_letter_once_the_destination_accepts_again(bridges, sink):
    """A record refused with 400 is a dead letter; once the destination has been through retryable failures and
    accepts again, the engine re-sends it by itself (``dead_letter.auto_replay``, on by default) and it is gone
    from the dead letters."""
    b, config = await bridges(exporters_cfg(x=http_destination(sink.url, max_records=20)))
    traffic = Traffic(32)
    req_a, ids_a = traffic.request()
    bad = ids_a[1]
    sink.reject_records([bad], status=400, body="index does not exist yet")
    await send_all(b.http_url, [req_a])
    entries = await wait_until(lambda: dlq_list(config), 10, "dead letters")
    refused = {e["record_id"] for e in entries}
    assert bad in refused

    sink.clear()  # the destination is fixed ...
    sink.fail_for(1.5, status=503, retry_after="1")  # ... after a short outage
    req_b, ids_b = traffic.request()
    await send_all(b.http_url, [req_b])
    await sink.wait_for_ids(set(ids_b) | refused, timeout=15)
    await wait_until(lambda: dlq_list(config) == [], 10, "dead letters replayed and removed")
    assert all(sink.count(i) == 1 for i in refused)
    assert await metric(b.telemetry_url, RETRIES, destination="http/x") > 0


async def test_auto_replay_off_keeps_dead_letters_after_recovery(bridges, sink):
    dest = http_destination(sink.url, max_records=20, dead_letter={"auto_replay": False})
    b, config = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(33)
    req_a, ids_a = traffic.request()
    sink.reject_records([ids_a[0]], status=400)
    await send_all(b.http_url, [req_a])
    entries = await wait_until(lambda: dlq_list(config), 10, "dead letters")
    sink.clear()
    sink.fail_for(1.0, status=503, retry_after="1")
    req_b, ids_b = traffic.request()
    await send_all(b.http_url, [req_b])
    await sink.wait_for_ids(ids_b, timeout=15)
    await asyncio.sleep(0.5)
    assert [e["id"] for e in dlq_list(config)] == [e["id"] for e in entries]
    assert not {e["record_id"] for e in entries} & sink.ids()


async def test_drop_oldest_with_auto_replay_delivers_the_dropped_records_after_the_outage(bridges, sink):
    await sink.stop()
    dest = http_destination(sink.url, backlog={"max_records": 100, "policy": "drop_oldest"})
    b, config = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(34)
    reqs = [traffic.request() for _ in range(12)]
    await send_all(b.http_url, [r for r, _ in reqs])
    await wait_until(lambda: metric(b.telemetry_url, DROPPED, destination="http/x"), 10, "drop_oldest dropped")
    await sink.start()
    await sink.wait_for_ids({i for _, ids in reqs for i in ids}, timeout=20)
    await wait_until(lambda: dlq_list(config) == [], 10, "dropped records replayed")


# ---------------------------------------------------------------------------------------------------------------
# 4. backlog limit with backpressure


async def test_backlog_limit_answers_429_until_the_destination_recovers_and_drops_nothing(bridges, sink):
    await sink.stop()  # the destination is down (connection refused)
    dest = http_destination(sink.url, backlog={"max_records": 200, "retry_after": "1s"})
    b, config = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(4)
    async with LoadClients(b.http_url, b.grpc_target, traffic, http_clients=1, grpc_clients=1) as load:
        await wait_until(
            lambda: {t for t, _ in load.stats.refused} >= {"http", "grpc"}, 15, "refusals on both transports"
        )
        answers = {(t, a.status, a.retry_after) for t, a in load.stats.refused}
        assert ("http", "429", "1") in answers, answers
        assert ("grpc", "RESOURCE_EXHAUSTED", "1") in answers, answers
        assert await metric(b.telemetry_url, BACKLOG, destination="http/x") > 200
        refused_http = await metric(
            b.telemetry_url,
            "ccbridge_receiver_refused_requests_total",
            signal="logs",
            transport="http",
            reason="backpressure",
        )
        assert refused_http >= 1

        await sink.start()
        recovered = time.monotonic()
        await wait_until(
            lambda: all(load.stats.last_ok.get(t, 0) > recovered + 0.5 for t in ("http", "grpc")),
            15,
            "clients accepted again on both transports",
        )
    accepted = load.stats.accepted
    await sink.wait_for_ids(accepted, timeout=15)
    stored = stored_ids(b.records())
    assert accepted <= stored
    await wait_until(lambda: stored <= sink.ids(), 10, "every stored record delivered")
    assert await metric(b.telemetry_url, DROPPED, destination="http/x") == 0
    assert await metric(b.telemetry_url, DEAD, destination="http/x") == 0
    assert dlq_list(config) == []


# ---------------------------------------------------------------------------------------------------------------
# 5. backlog limit with drop_oldest


async def check_drop_oldest_accounting(b: Bridge, config: Path, sink: HttpSink, accepted: set[str], newest: list[str]):
    """Every accepted record is delivered or dropped to dead letters (never both), the newest are kept, and the
    dropped ones are counted in ``ccbridge_exporter_dropped_records_total``."""
    await wait_until(
        lambda: accepted <= sink.ids() | {e["record_id"] for e in dlq_list(config)}, 15, "every record accounted for"
    )
    entries = dlq_list(config)
    dropped = {e["record_id"] for e in entries}
    assert dropped, "nothing was dropped"
    assert all(e["reason"].startswith("dropped (backlog limit, policy drop_oldest)") for e in entries)
    assert not dropped & sink.ids()
    assert len(entries) == len(dropped)
    assert await metric(b.telemetry_url, DROPPED, destination="http/x") == len(dropped)
    order = seqs(b.data_dir)
    assert max(order[i] for i in dropped) < min(order[i] for i in newest), "a newer record was dropped"
    assert set(newest) <= sink.ids()


async def test_drop_oldest_while_the_destination_is_down_drops_and_never_refuses(bridges, sink):
    await sink.stop()
    dest = http_destination(
        sink.url, backlog={"max_records": 100, "policy": "drop_oldest"}, dead_letter={"auto_replay": False}
    )
    b, config = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(5)
    reqs = [traffic.request() for _ in range(20)]
    await send_all(b.http_url, [r for r, _ in reqs])  # never refused
    total = b.count()
    assert total > 400

    async def under_limit() -> bool:
        dropped = await metric(b.telemetry_url, DROPPED, destination="http/x")
        backlog = await metric(b.telemetry_url, BACKLOG, destination="http/x")
        return dropped > 0 and backlog <= 100 + 50

    await wait_until(under_limit, 5, "drop_oldest brought the backlog back under max_records")
    await sink.start()
    await check_drop_oldest_accounting(b, config, sink, {i for _, ids in reqs for i in ids}, reqs[-1][1])


async def test_drop_oldest_with_a_slow_destination_drops_the_oldest_and_never_refuses(bridges, sink):
    sink.set_delay(0.3)
    dest = http_destination(
        sink.url,
        max_records=20,
        backlog={"max_records": 100, "policy": "drop_oldest"},
        dead_letter={"auto_replay": False},
    )
    b, config = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(6)
    reqs = [traffic.request() for _ in range(30)]
    await send_all(b.http_url, [r for r, _ in reqs])  # never refused
    accepted = {i for _, ids in reqs for i in ids}
    assert stored_ids(b.records()) == accepted
    await wait_until(
        lambda: metric(b.telemetry_url, DROPPED, destination="http/x"), 10, "drop_oldest dropped something"
    )
    await check_drop_oldest_accounting(b, config, sink, accepted, reqs[-1][1])


# ---------------------------------------------------------------------------------------------------------------
# 7. one dead destination does not hold up another


async def test_dead_destination_does_not_delay_the_live_one(bridges, sink):
    dead_url = f"http://127.0.0.1:{free_port()}/ingest"
    b, _ = await bridges(exporters_cfg(live=http_destination(sink.url), dead=http_destination(dead_url)))
    traffic = Traffic(7)
    async with LoadClients(b.http_url, b.grpc_target, traffic, pause=0.05) as load:
        await asyncio.sleep(3)
    accepted_at = load.stats.accepted_at
    assert len(accepted_at) > 200
    await sink.wait_for_ids(accepted_at, timeout=5)
    latency = {i: sink.received[i][0].mono - t for i, t in accepted_at.items()}
    worst = max(latency.values())
    assert worst < 5.0, f"a record took {worst:.1f}s to reach the live destination"

    total = b.count()

    async def backlogs() -> bool:
        dead = await metric(b.telemetry_url, BACKLOG, destination="http/dead")
        live = await metric(b.telemetry_url, BACKLOG, destination="http/live")
        return dead == total and live == 0

    await wait_until(backlogs, 5, "backlog gauges: everything pending for http/dead, nothing for http/live")
    assert await metric(b.telemetry_url, SENT, destination="http/dead") == 0
    assert await metric(b.telemetry_url, RETRIES, destination="http/dead") > 0


# ---------------------------------------------------------------------------------------------------------------
# 8. a graceful restart resumes exactly where delivery stopped


async def test_graceful_restart_resumes_at_the_cursor(spawn_bridge, sink):
    """Deliver N, take the destination down, ingest M more, stop the bridge with SIGTERM, bring the destination
    back and restart: the destination gets exactly what was still undelivered (the M, plus the ``chain_head`` record
    a graceful stop publishes), once, and none of the N again."""
    overrides = exporters_cfg(x=http_destination(sink.url, concurrency=2))
    first = await asyncio.to_thread(spawn_bridge, overrides=overrides)
    traffic = Traffic(8)
    before = [traffic.request() for _ in range(5)]
    ids_before = {i for _, ids in before for i in ids}
    await send_all(first.http_url, [r for r, _ in before])
    await sink.wait_for_ids(ids_before, timeout=10)
    await wait_until(
        lambda: metric_is(first.telemetry_url, SENT, len(ids_before), destination="http/x"),
        10,
        "the bridge saw every confirmation",
    )

    await sink.stop()
    after = [traffic.request() for _ in range(5)]
    ids_m = {i for _, ids in after for i in ids}
    await send_all(first.http_url, [r for r, _ in after])
    assert await asyncio.to_thread(first.terminate) == 0  # SIGTERM to the process this test started

    stored = {r["id"]: r for r in first.records()}
    undelivered = stored.keys() - ids_before
    assert ids_m <= undelivered
    assert all(stored[i]["kind"] == "chain_head" for i in undelivered - ids_m), "unexpected extra records"
    await sink.start()
    second = await asyncio.to_thread(spawn_bridge, data_dir=first.data_dir, overrides=overrides)
    await sink.wait_for_ids(undelivered, timeout=15)
    await wait_until(lambda: metric_is(second.telemetry_url, BACKLOG, 0, destination="http/x"), 5, "backlog drained")
    assert await metric(second.telemetry_url, SENT, destination="http/x") == len(undelivered)
    assert sink.ids() == ids_before | undelivered
    assert all(sink.count(i) == 1 for i in sink.ids()), "a record was delivered twice"


# ---------------------------------------------------------------------------------------------------------------
# 9. retention waits for every destination


def received_ms(data_dir: Path) -> dict[str, int]:
    with contextlib.closing(connect(shard_path(data_dir, 0), readonly=True)) as conn:
        return {rid: t for rid, t in conn.execute("SELECT id, received_ms FROM records")}


async def wait_older_than(data_dir: Path, ids: list[str], seconds: float) -> None:
    """Until every one of ``ids`` was received more than ``seconds`` ago (retention counts from arrival)."""
    newest = max(received_ms(data_dir)[i] for i in ids) / 1000
    await wait_until(lambda: time.time() - newest > seconds + 0.1, seconds + 5, "records old enough")


RETENTION = 2.0  # storage.retention of these tests, in seconds


async def test_retention_deletes_old_records_only_once_every_destination_has_them(bridges):
    """``apply_retention`` removes records received more than ``storage.retention`` ago once every destination
    confirmed them, and not before; younger records stay even when delivered everywhere (and even when their event
    time is old: retention counts from arrival)."""
    async with HttpSink() as sink_a, HttpSink() as sink_b:
        sink_b.fail_for(3600, status=503, retry_after=None)
        overrides = {
            **exporters_cfg(a=http_destination(sink_a.url), b=http_destination(sink_b.url)),
            "storage": {"retention": f"{RETENTION}s"},
        }
        b, _ = await bridges(overrides)
        engine = b.service.delivery
        assert engine is not None
        traffic = Traffic(9)
        old_req, old_ids = traffic.request()
        await send_all(b.http_url, [old_req])
        await sink_a.wait_for_ids(old_ids, timeout=10)
        await wait_older_than(b.data_dir, old_ids, RETENTION)

        assert await engine.apply_retention() == 0  # old, but http/b does not have them yet
        assert stored_ids(b.records()) == set(old_ids)

        sink_b.clear()
        await sink_b.wait_for_ids(old_ids, timeout=10)
        last = b.count()
        await wait_until(lambda: all(w.cursor == last for w in engine.workers), 5, "every cursor at the end")
        new_req, new_ids = traffic.request(t_ns=time.time_ns() - 3 * 86400 * 10**9)  # old event time, new arrival
        await send_all(b.http_url, [new_req])
        assert await engine.apply_retention() == len(old_ids)
        assert stored_ids(b.records()) == set(new_ids)
        assert await engine.apply_retention() == 0


async def test_periodic_retention_waits_for_the_slowest_destination(bridges, monkeypatch):
    monkeypatch.setattr(engine_mod, "RETENTION_INTERVAL", 0.0)  # a pass on every stats cycle (1 s) instead of hourly
    async with HttpSink() as sink_a, HttpSink() as sink_b:
        sink_b.fail_for(3600, status=503, retry_after=None)
        overrides = {
            **exporters_cfg(a=http_destination(sink_a.url), b=http_destination(sink_b.url)),
            "storage": {"retention": f"{RETENTION}s"},
        }
        b, _ = await bridges(overrides)
        engine = b.service.delivery
        assert engine is not None
        passes = 0
        run = engine.run_retention

        async def counted(*args: Any) -> int:
            nonlocal passes
            passes += 1
            return await run(*args)  # type: ignore[operator]

        engine.run_retention = counted
        traffic = Traffic(10)
        reqs = [traffic.request() for _ in range(2)]
        ids = [i for _, rids in reqs for i in rids]
        await send_all(b.http_url, [r for r, _ in reqs])
        await sink_a.wait_for_ids(ids, timeout=10)
        await wait_older_than(b.data_dir, ids, RETENTION)
        seen = passes
        await wait_until(lambda: passes >= seen + 2, 5, "two retention passes")
        assert stored_ids(b.records()) == set(ids), "deleted before http/b had them"

        sink_b.clear()
        await sink_b.wait_for_ids(ids, timeout=10)
        order = seqs(b.data_dir)
        newest = max(order, key=order.__getitem__)
        # everything goes but the newest record, which retention always keeps (so seq values are never reused)
        await wait_until(lambda: stored_ids(b.records()) == {newest}, 5, "old records removed by retention")


# ---------------------------------------------------------------------------------------------------------------
# both receivers refuse under backpressure with the same Retry-After


async def test_single_requests_get_429_and_resource_exhausted_with_retry_after(bridges, sink):
    await sink.stop()
    dest = http_destination(sink.url, max_records=10, backlog={"max_records": 20, "retry_after": "3s"})
    b, _ = await bridges(exporters_cfg(x=dest))
    traffic = Traffic(11)
    req, ids = traffic.request(turns=3)
    assert len(ids) > 20
    assert (await send_once(b.http_url, req)).ok

    async def refused_http() -> Any:
        ans = await send_once(b.http_url, traffic.request()[0])
        return None if ans.ok else ans

    ans = await wait_until(refused_http, 5, "HTTP 429")
    assert (ans.status, ans.retry_after) == ("429", "3")
    ans = await send_grpc_once(b.grpc_target, traffic.request()[0])
    assert (ans.ok, ans.status, ans.retry_after) == (False, "RESOURCE_EXHAUSTED", "3")
    assert "backlog" in ans.detail
    async with (
        aiohttp.ClientSession() as s,
        s.post(b.http_url + "/v1/logs", data=b"{}", headers={"Content-Type": "application/json"}) as resp,
    ):
        body = await resp.json()
    assert resp.status == 429
    assert "http/x" in body["message"]
