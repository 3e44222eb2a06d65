"""The telemetry endpoint: /readyz with failing and advisory checks, and the same checks as metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector.telemetry.server import EXTRA_ATTRIBUTE, TelemetryServer


@pytest.fixture
async def server() -> AsyncIterator[TelemetryServer]:
    srv = TelemetryServer("127.0.0.1:0", CollectorRegistry())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def readyz(srv: TelemetryServer) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{srv.port}/readyz") as r:
        return r.status, await r.json()


async def test_ready_degraded_and_not_ready(server: TelemetryServer) -> None:
    state = {"storage": None, "dest": None}
    server.add_readiness_check("storage", lambda: state["storage"])
    server.add_readiness_check("exporter:splunk_hec", lambda: state["dest"], advisory=True)
    assert await readyz(server) == (200, {"status": "ready"})

    state["dest"] = "splunk health: queues full (code 18)"
    assert await readyz(server) == (
        200,
        {"status": "ready", "degraded": {"exporter:splunk_hec": "splunk health: queues full (code 18)"}},
    )
    text = generate_latest(server.registry).decode()
    assert "ccbridge_ready 1.0" in text
    assert 'ccbridge_check_ok{check="exporter:splunk_hec"} 0.0' in text
    assert 'ccbridge_check_ok{check="storage"} 1.0' in text

    state["storage"] = "storage: disk_full"
    status, body = await readyz(server)
    assert status == 503 and body["failing"] == {"storage": "storage: disk_full"} and "degraded" in body
    assert "ccbridge_ready 0.0" in generate_latest(server.registry).decode()


async def test_a_check_that_raises_fails_with_its_message(server: TelemetryServer) -> None:
    def broken() -> str | None:
        raise RuntimeError("boom")

    server.add_readiness_check("receivers", broken)
    assert await readyz(server) == (503, {"status": "not ready", "failing": {"receivers": "check failed: boom"}})


async def test_a_check_added_again_as_failing_stops_being_advisory(server: TelemetryServer) -> None:
    server.add_readiness_check("exporter:x", lambda: "down", advisory=True)
    server.add_readiness_check("exporter:x", lambda: "down")
    assert (await readyz(server))[0] == 503


async def test_the_metrics_collector_is_detached_at_stop() -> None:
    registry = CollectorRegistry()
    srv = TelemetryServer("127.0.0.1:0", registry)
    await srv.start()
    assert len(getattr(registry, EXTRA_ATTRIBUTE)) == 1
    await srv.stop()
    assert getattr(registry, EXTRA_ATTRIBUTE) == []
    assert "ccbridge_ready" not in generate_latest(registry).decode()
