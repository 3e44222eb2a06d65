"""The service hook: the primary serves the prometheus destination next to its self-metrics; nothing else runs it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from collector.config import load_text
from collector.service import Service
from exporters.prometheus import PrometheusExporter
from exporters.prometheus.collector import PrometheusCollector
from tests.conftest import CLAUDE_CODE_FIXTURES, bridge_config_dict, free_port
from tests.contract.make_golden import Replayer, recorded_requests

RUN = "v2.1.332-http-protobuf-allow"


class Running:
    def __init__(self, service: Service, http_url: str, grpc_target: str, telemetry_url: str) -> None:
        self.service = service
        self.http_url = http_url
        self.grpc_target = grpc_target
        self.telemetry_url = telemetry_url


@contextlib.asynccontextmanager
async def running(data_dir: Path, overrides: dict[str, Any], **service_kw: Any) -> AsyncIterator[Running]:
    """An in-process service whose config goes through the YAML loader (so ``exporters`` sections are built)."""
    last: Exception | None = None
    for _ in range(3):
        hp, gp, tp = free_port(), free_port(), free_port()
        tree = bridge_config_dict(data_dir, http_port=hp, grpc_port=gp, telemetry_port=tp, overrides=overrides)
        service = Service(load_text(yaml.safe_dump(tree)), **service_kw)
        try:
            await service.start()
        except OSError as exc:  # a port raced away
            last = exc
            with contextlib.suppress(Exception):
                await service.stop()
            continue
        try:
            yield Running(service, f"http://127.0.0.1:{hp}", f"127.0.0.1:{gp}", f"http://127.0.0.1:{tp}")
        finally:
            await service.stop()
        return
    raise RuntimeError(f"could not start the bridge: {last}")


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def wait_for(url: str, key: str, expected: float, timeout: float = 15.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        got = await scrape(url)
        if got.get(key) == expected:
            return got
        assert time.monotonic() < deadline, f"{key} never became {expected}: {got.get(key)}"
        await asyncio.sleep(0.05)


async def replay(http_url: str, grpc_target: str, run: str = RUN) -> None:
    async with Replayer(http_url, grpc_target) as rp:
        for req in recorded_requests(CLAUDE_CODE_FIXTURES / run):
            res = await rp.send(req)
            assert getattr(res, "status", 200) == 200


async def test_primary_serves_claude_code_metrics_next_to_self_metrics(tmp_path: Path) -> None:
    overrides = {"exporters": {"prometheus": {"poll_interval": "50ms"}}}
    async with running(tmp_path / "d", overrides) as b:
        svc = b.service
        assert svc.delivery is not None
        assert not any(isinstance(e, PrometheusExporter) for e in svc.delivery.exporters)  # not a push destination
        assert [type(e) for e in svc.sinks] == [PrometheusExporter]
        await replay(b.http_url, b.grpc_target)
        got = await wait_for(b.telemetry_url, "claude_code_session_count_total[]", 1.0)
        assert got["claude_code_cost_usage_usd_total[('model', 'claude-opus-5-5'), ('query_source', 'main')]"] > 0
        assert any(k.startswith("ccbridge_receiver_accepted_items_total") for k in got)
        assert got["ccbridge_prometheus_tail_errors_total[]"] == 0
        counted = got["ccbridge_prometheus_counted_records_total[]"]
        assert got["ccbridge_prometheus_tail_read_records_total[]"] >= counted > 0
        registry = svc.metrics.registry
    assert getattr(registry, "_ccbridge_extra", []) == []  # detached at stop


async def test_counters_restart_at_zero_after_a_restart(tmp_path: Path) -> None:
    overrides = {"exporters": {"prometheus": {"poll_interval": "50ms"}}}
    async with running(tmp_path / "d", overrides) as b:
        await replay(b.http_url, b.grpc_target)
        await wait_for(b.telemetry_url, "claude_code_session_count_total[]", 1.0)
    async with running(tmp_path / "d", overrides) as b:
        got = await scrape(b.telemetry_url)
        assert "claude_code_session_count_total[]" not in got  # stored before the start: not counted again
        await replay(b.http_url, b.grpc_target, "v2.1.197-http-protobuf-deny")
        await wait_for(b.telemetry_url, "claude_code_session_count_total[]", 1.0)


@pytest.mark.parametrize(
    ("overrides", "service_kw"),
    [
        ({"exporters": {"prometheus": {"enabled": False}}}, {}),
        ({"exporters": {"prometheus": {}}}, {"worker_index": 1, "serve_telemetry": False}),
    ],
    ids=["disabled", "secondary-worker"],
)
async def test_not_served_when_disabled_or_in_a_secondary_worker(
    tmp_path: Path, overrides: dict[str, Any], service_kw: dict[str, Any]
) -> None:
    async with running(tmp_path / "d", overrides, **service_kw) as b:
        assert b.service.sinks == []
        extra = getattr(b.service.metrics.registry, "_ccbridge_extra", [])
        assert not any(isinstance(c, PrometheusCollector) for c in extra)
        assert b.service.delivery is not None and b.service.delivery.exporters == []
