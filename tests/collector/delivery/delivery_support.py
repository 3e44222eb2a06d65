"""Helpers for the delivery end-to-end tests: realistic OTLP traffic with known record ids, OTLP clients for both
receivers, a bounded load generator, ``/metrics`` scraping, destination config and the CLI.

Record ids: the bridge derives an audit record's id from session id, ``event.sequence`` and event name (and a
second, ``file_change`` record from file-editing tool results), so the ids a request will produce are known before it
is sent; :func:`audit_ids` computes them with the bridge's own decoder and normalizer, and the tests cross-check them
against the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import yaml
from grpc import aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from collector import cli
from collector.demo import DemoSession, logs_request
from collector.processing.decode import logs_from_message
from collector.processing.normalize import normalize_logs
from tests.conftest import Bridge, bridge_config_dict, start_bridge

GRPC_LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
MAX_LOAD_SECONDS = 60.0  # a load generator stops by itself after this, whatever the test does


# ---------------------------------------------------------------------------------------------------------------
# traffic


def audit_ids(req: ExportLogsServiceRequest) -> list[str]:
    """The ids of the audit records the bridge stores for ``req`` (one or two per log record)."""
    return [r["id"] for r in normalize_logs(logs_from_message(req), time.time_ns(), "test")]


class Traffic:
    """Claude Code sessions from :mod:`collector.demo`, one fresh session per request, deterministic per seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.sent = 0

    def request(self, turns: int = 2, t_ns: int | None = None) -> tuple[ExportLogsServiceRequest, list[str]]:
        """A logs request of ``turns`` prompt turns (about 12 log records each) and its audit record ids."""
        self.sent += 1
        s = DemoSession(
            email=f"dev{self.sent % 50:03d}@example.com",
            session_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            rng=random.Random(self.rng.getrandbits(32)),
        )
        t = time.time_ns() if t_ns is None else t_ns
        records = []
        for _ in range(turns):
            records += s.prompt_turn(t)
            t += 2_000_000_000
        req = logs_request(records)
        return req, audit_ids(req)


# ---------------------------------------------------------------------------------------------------------------
# OTLP clients


@dataclass
class ExportAnswer:
    """What a receiver answered: ``ok`` on success; ``status`` is the HTTP status or the gRPC code name."""

    ok: bool
    status: str
    retry_after: str | None = None
    detail: str = ""


async def http_export(session: aiohttp.ClientSession, base_url: str, body: bytes) -> ExportAnswer:
    async with session.post(base_url + "/v1/logs", data=body, headers=PROTOBUF) as resp:
        await resp.read()
        return ExportAnswer(resp.status == 200, str(resp.status), resp.headers.get("Retry-After"))


async def grpc_export(channel: aio.Channel, body: bytes, timeout: float = 10.0) -> ExportAnswer:
    call = channel.unary_unary(GRPC_LOGS_EXPORT, request_serializer=None, response_deserializer=None)
    try:
        await call(body, timeout=timeout)
    except aio.AioRpcError as exc:
        trailers = dict(exc.trailing_metadata() or ())
        ra = trailers.get("retry-after")
        return ExportAnswer(False, exc.code().name, None if ra is None else str(ra), exc.details() or "")
    return ExportAnswer(True, grpc.StatusCode.OK.name)


@dataclass
class LoadStats:
    """What the load clients saw. ``accepted`` holds ids of requests answered with success only."""

    accepted: set[str] = field(default_factory=set)
    accepted_at: dict[str, float] = field(default_factory=dict)  # id -> time.monotonic() of the success answer
    ok: dict[str, int] = field(default_factory=lambda: {"http": 0, "grpc": 0})
    refused: list[tuple[str, ExportAnswer]] = field(default_factory=list)
    errors: int = 0
    last_ok: dict[str, float] = field(default_factory=dict)


class LoadClients:
    """OTLP clients sending continuously to both receivers until :meth:`stop` (or :data:`MAX_LOAD_SECONDS`).

    A refusal with ``Retry-After`` is honoured (the client waits that long, as OTLP SDKs do); a connection error
    (bridge gone) makes the client pause briefly. Every request's outcome is counted in :attr:`stats`.
    """

    def __init__(
        self,
        http_url: str,
        grpc_target: str,
        traffic: Traffic,
        *,
        http_clients: int = 1,
        grpc_clients: int = 1,
        turns: int = 2,
        pause: float = 0.0,
    ) -> None:
        self.http_url = http_url
        self.grpc_target = grpc_target
        self.traffic = traffic
        self.http_clients = http_clients
        self.grpc_clients = grpc_clients
        self.turns = turns
        self.pause = pause
        self.stats = LoadStats()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._channel: aio.Channel | None = None

    async def start(self) -> LoadClients:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._channel = aio.insecure_channel(self.grpc_target)
        for i in range(self.http_clients):
            self._tasks.append(asyncio.create_task(self._run("http"), name=f"load-http-{i}"))
        for i in range(self.grpc_clients):
            self._tasks.append(asyncio.create_task(self._run("grpc"), name=f"load-grpc-{i}"))
        return self

    async def stop(self) -> LoadStats:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        return self.stats

    async def __aenter__(self) -> LoadClients:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_accepted(self, n: int, timeout: float) -> None:
        """Until at least ``n`` records were accepted."""
        deadline = time.monotonic() + timeout
        while len(self.stats.accepted) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.stats.accepted)} of {n} records accepted within {timeout}s")
            await asyncio.sleep(0.02)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self, transport: str) -> None:
        assert self._session is not None and self._channel is not None
        st = self.stats
        ends = time.monotonic() + MAX_LOAD_SECONDS
        while not self._stop.is_set() and time.monotonic() < ends:
            req, ids = self.traffic.request(self.turns)
            body = req.SerializeToString()
            try:
                if transport == "http":
                    ans = await http_export(self._session, self.http_url, body)
                else:
                    ans = await grpc_export(self._channel, body)
            except (aiohttp.ClientError, OSError, TimeoutError):
                st.errors += 1
                await self._sleep(0.05)
                continue
            if ans.ok:
                now = time.monotonic()
                st.ok[transport] += 1
                st.accepted.update(ids)
                for i in ids:
                    st.accepted_at.setdefault(i, now)
                st.last_ok[transport] = now
                if self.pause:
                    await self._sleep(self.pause)
                continue
            st.refused.append((transport, ans))
            wait = float(ans.retry_after) if ans.retry_after and ans.retry_after.isdigit() else 0.05
            await self._sleep(wait)


async def send_once(http_url: str, req: ExportLogsServiceRequest) -> ExportAnswer:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        return await http_export(s, http_url, req.SerializeToString())


async def send_grpc_once(grpc_target: str, req: ExportLogsServiceRequest) -> ExportAnswer:
    async with aio.insecure_channel(grpc_target) as ch:
        return await grpc_export(ch, req.SerializeToString())


# ---------------------------------------------------------------------------------------------------------------
# telemetry


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, s.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def scrape(telemetry_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as ``{(sample name, sorted labels): value}``."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
        s.get(telemetry_url + "/metrics") as resp,
    ):
        text = await resp.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def metric(telemetry_url: str, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return (await scrape(telemetry_url)).get((name, tuple(sorted(labels.items()))), 0.0)


async def metric_is(telemetry_url: str, name: str, expected: float, **labels: str) -> bool:
    return await metric(telemetry_url, name, **labels) == expected


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll an async or plain ``predicate`` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------------------------
# configuration and CLI


def http_destination(
    url: str,
    *,
    max_records: int = 50,
    batch_timeout: str = "100ms",
    concurrency: int = 1,
    retry: dict[str, Any] | None = None,
    backlog: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An ``exporters.http/<name>`` section with test-friendly timing (small batches, short backoff)."""
    section: dict[str, Any] = {
        "url": url,
        "batch": {"max_records": max_records, "timeout": batch_timeout},
        "concurrency": concurrency,
        "retry": {"initial_interval": "100ms", "max_interval": "500ms", **(retry or {})},
        "timeout": "5s",
    }
    if backlog:
        section["backlog"] = backlog
    section.update(extra)
    return section


async def start_bridge_with_exporters(data_dir: Path, overrides: dict[str, Any]) -> tuple[Bridge, Path]:
    """An in-process bridge (``tests.conftest.start_bridge``) plus its config as a file, for ``--config`` CLI commands.

    The caller stops the bridge.
    """
    bridge = await start_bridge(data_dir, overrides)
    ports = {
        "http_port": int(bridge.http_url.rsplit(":", 1)[1]),
        "grpc_port": int(bridge.grpc_target.rsplit(":", 1)[1]),
        "telemetry_port": int(bridge.telemetry_url.rsplit(":", 1)[1]),
    }
    config_path = data_dir.parent / f"{data_dir.name}.yaml"
    config_path.write_text(yaml.safe_dump(bridge_config_dict(data_dir, **ports, overrides=overrides), sort_keys=False))
    return bridge, config_path


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``ccbridge ARGV`` through :func:`collector.cli.main` (blocking; call via ``asyncio.to_thread`` from async code),
    with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
    finally:  # some commands (dlq replay) set up process-wide logging; give the test process its own back
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


def stored_ids(records: Sequence[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in records}


# ---------------------------------------------------------------------------------------------------------------
# one exporter driven by the engine's delivery loop, without a bridge


async def send_through_engine(exp: Any, records: Sequence[Any], state_dir: Path) -> Any:
    """Send ``records`` with ``exp`` through :meth:`DestinationWorker._send` (retry, 413 split, partial success) and
    return the :class:`~collector.delivery.engine.Settled` result: what was confirmed and what was refused."""
    from prometheus_client import CollectorRegistry

    from collector.delivery.engine import DestinationWorker, Settled
    from collector.store.delivery_state import DeliveryState
    from collector.store.reader import ShardReader
    from collector.telemetry.selfmetrics import SelfMetrics

    state = DeliveryState(state_dir / "shard-0.delivery.db")
    worker = DestinationWorker(
        exp,
        0,
        ShardReader(state_dir / "shard-0.db"),
        state,
        SelfMetrics(CollectorRegistry()),
        asyncio.Event(),
        asyncio.Event(),
    )
    settled = Settled()
    try:
        await worker._send(list(records), settled)
    finally:
        state.close()
    return settled
