"""Acknowledged means stored: ``kill -9`` the bridge process right after a success answer, restart it on the same
data directory, and every record of every acknowledged request is there (by id).

The bridge runs as a real subprocess (``python -m collector.cli run --config FILE``, via the ``spawn_bridge``
fixture). SIGKILL gives the process no chance to flush or finish anything, so these tests prove that the answer is
sent only after the commit; they cannot simulate a power loss (the kernel's page cache survives a process kill), which
is what ``storage.synchronous: full`` adds on top.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.processing.decode import logs_from_protobuf
from collector.processing.normalize import normalize_log
from collector.store.sqlite import shard_paths

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
EVENTS = ("user_prompt", "tool_decision", "api_request", "tool_result")

pytestmark = pytest.mark.slow


def logs_batch(n: int) -> tuple[bytes, set[str]]:
    """A request of ``n`` events of one fresh session, and the ids of the records they must become."""
    session = str(uuid.uuid4())
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    now = time.time_ns()
    for seq in range(n):
        name = EVENTS[seq % len(EVENTS)]
        lr = sl.log_records.add()
        lr.time_unix_nano = now + seq * 1_000_000
        lr.body.string_value = f"claude_code.{name}"
        for k, v in (("session.id", session), ("event.name", name), ("tool_name", "Write")):
            lr.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
        lr.attributes.append(KeyValue(key="tool_input", value=AnyValue(string_value=f'{{"file_path":"/p/{seq}.txt"}}')))
        lr.attributes.append(KeyValue(key="event.sequence", value=AnyValue(int_value=seq)))
    body = req.SerializeToString()
    ids = {r["id"] for ev in logs_from_protobuf(body) for r in normalize_log(ev, 0)}
    assert len(ids) == n + n // len(EVENTS)  # each tool_result also yields a file_change record
    return body, ids


class HttpSender:
    """Blocking OTLP/HTTP client; ``fresh`` opens a new connection per request (spreads over SO_REUSEPORT)."""

    def __init__(self, base_url: str, *, fresh: bool = False) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port, self.fresh = host, int(port), fresh
        self.conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes) -> bool:
        if self.conn is None or self.fresh:
            self.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Content-Type": "application/x-protobuf"}
        if self.fresh:
            headers["Connection"] = "close"
        self.conn.request("POST", "/v1/logs", body=body, headers=headers)
        resp = self.conn.getresponse()
        resp.read()
        return resp.status == 200

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class GrpcSender:
    """Blocking OTLP/gRPC client; ``fresh`` opens a new channel (connection) per request."""

    def __init__(self, target: str, *, fresh: bool = False) -> None:
        self.target, self.fresh = target, fresh
        self.channel: grpc.Channel | None = None

    def send(self, body: bytes) -> bool:
        if self.channel is None or self.fresh:
            self.close()
            self.channel = grpc.insecure_channel(self.target)
        self.channel.unary_unary(LOGS_METHOD)(body, timeout=10)
        return True  # an error raises grpc.RpcError

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def stored_ids(reader: Callable[..., list[dict]]) -> set[str]:
    return {r["id"] for r in reader()}


def shard_counts(data_dir: Path) -> list[int]:
    counts = []
    for db in shard_paths(data_dir):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
                counts.append(int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]))
        except sqlite3.Error:
            counts.append(0)  # the worker is still creating it
    return counts


def kill_group(proc) -> None:
    """SIGKILL the process group this test started (the bridge leads its own session) and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class Load:
    """Client threads sending continuously; records which requests were acknowledged (and every id ever sent)."""

    def __init__(self, senders: list[HttpSender | GrpcSender], batch: int = 8) -> None:
        self.senders = senders
        self.batch = batch
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.acked_requests = 0
        self.threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in senders]

    def _run(self, sender: HttpSender | GrpcSender) -> None:
        try:
            while not self.stop.is_set():
                body, ids = logs_batch(self.batch)
                with self.lock:
                    self.sent |= ids
                try:
                    ok = sender.send(body)
                except (OSError, http.client.HTTPException, grpc.RpcError):
                    return  # the bridge is gone: this request is not acknowledged
                if ok:
                    with self.lock:
                        self.acked |= ids
                        self.acked_requests += 1
        finally:
            sender.close()

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def wait_for(self, requests: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_requests < requests:
            assert time.monotonic() < deadline, f"only {self.acked_requests} requests acknowledged"
            time.sleep(0.01)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)
            assert not t.is_alive()


# ---------------------------------------------------------------------------------------------------------------


def test_sigkill_right_after_each_acknowledgement_loses_nothing(spawn_bridge, tmp_path):
    data = tmp_path / "data"
    acked: set[str] = set()
    for transport in ("http", "grpc", "http", "grpc"):
        bp = spawn_bridge(data_dir=data)
        sender = HttpSender(bp.http_url) if transport == "http" else GrpcSender(bp.grpc_target)
        for _ in range(3):
            body, ids = logs_batch(10)
            assert sender.send(body)
            acked |= ids
        body, ids = logs_batch(10)
        assert sender.send(body)
        bp.kill()  # SIGKILL the instant the answer arrived
        acked |= ids
        sender.close()
        assert bp.proc.returncode == -signal.SIGKILL

    restarted = spawn_bridge(data_dir=data)
    assert stored_ids(restarted.records) == acked  # all acknowledged, and nothing else
    body, ids = logs_batch(3)  # and it keeps working on the recovered store
    assert HttpSender(restarted.http_url).send(body)
    assert stored_ids(restarted.records) == acked | ids
    assert restarted.terminate() == 0


def test_sigkill_under_concurrent_load_keeps_every_acknowledged_record(spawn_bridge, tmp_path):
    data = tmp_path / "data"
    bp = spawn_bridge(data_dir=data)
    load = Load([HttpSender(bp.http_url) for _ in range(3)] + [GrpcSender(bp.grpc_target) for _ in range(3)]).start()
    try:
        load.wait_for(30)
        time.sleep(random.Random(20261125).uniform(0.1, 0.6))  # a "random" moment, reproducible
        bp.kill()
    finally:
        load.join()
    assert bp.proc.returncode == -signal.SIGKILL
    assert load.acked_requests >= 30

    restarted = spawn_bridge(data_dir=data)
    stored = stored_ids(restarted.records)
    missing = load.acked - stored
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
    assert stored <= load.sent  # in-flight requests may or may not be stored; nothing else may appear
    body, ids = logs_batch(3)
    assert GrpcSender(restarted.grpc_target).send(body)
    assert ids <= stored_ids(restarted.records)


def test_sigkill_of_two_workers_keeps_every_acknowledged_record(spawn_bridge, tmp_path):
    data = tmp_path / "data"
    two = {"server": {"workers": 2}}
    bp = spawn_bridge(data_dir=data, overrides=two)

    # new connections for every request, so the kernel spreads them over both workers' sockets
    load = Load(
        [HttpSender(bp.http_url, fresh=True) for _ in range(3)]
        + [GrpcSender(bp.grpc_target, fresh=True) for _ in range(2)],
        batch=4,
    ).start()
    try:
        deadline = time.monotonic() + 30
        while True:  # until the second worker is up and has stored something too
            counts = shard_counts(data)
            if len(counts) == 2 and min(counts) > 0:
                break
            assert time.monotonic() < deadline, f"second worker never stored anything: {counts}\n{bp.output()}"
            time.sleep(0.05)
        time.sleep(random.Random(7).uniform(0.1, 0.4))
        kill_group(bp.proc)
    finally:
        load.join()
    assert load.acked_requests > 0

    restarted = spawn_bridge(data_dir=data, overrides=two)
    stored = stored_ids(restarted.records)  # merged over both shards
    missing = load.acked - stored
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
    assert stored <= load.sent
    assert len(shard_paths(data)) == 2
    assert restarted.terminate(timeout=30) == 0
