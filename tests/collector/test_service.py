"""The service wires destinations by the signals they declare (``collector.delivery.api``), not by probing them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import load_text
from collector.service import Service
from exporters.datadog import DatadogExporter
from exporters.prometheus import PrometheusExporter
from tests.conftest import bridge_config_dict, free_port

KEY = "0123456789abcdef0123456789abcdef"


@contextlib.asynccontextmanager
async def running(data_dir: Path, exporters: dict[str, Any], **service_kw: Any) -> AsyncIterator[Service]:
    for _ in range(3):
        ports = {"http_port": free_port(), "grpc_port": free_port(), "telemetry_port": free_port()}
        tree = bridge_config_dict(data_dir, **ports, overrides={"exporters": exporters})
        svc = Service(load_text(yaml.safe_dump(tree)), **service_kw)
        try:
            await svc.start()
        except OSError:
            with contextlib.suppress(Exception):
                await svc.stop()
            continue
        try:
            yield svc
        finally:
            await svc.stop()
        return
    pytest.fail("could not start the bridge")


def destinations(dead: str) -> dict[str, Any]:
    return {
        "prometheus": {"poll_interval": "50ms"},
        "datadog/m": {"api_key": KEY, "logs_endpoint": dead, "metrics_endpoint": dead},
        "datadog/logs": {"api_key": KEY, "logs_endpoint": dead, "send_metrics": False},
        "http": {"url": dead},
    }


async def test_records_go_to_the_engine_and_metrics_to_the_sinks_by_declared_signals(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running(tmp_path / "d", destinations(dead)) as svc:
        assert svc.delivery is not None
        assert sorted(e.name for e in svc.delivery.exporters) == ["datadog/logs", "datadog/m", "http"]
        assert sorted(e.name for e in svc.sinks) == ["datadog/m", "prometheus"]
        (series,) = [e for e in svc.sinks if isinstance(e, DatadogExporter)]
        assert series.tailer is not None and [s.index for s in series.tailer.shards] == [0]
        (logs_only,) = [e for e in svc.delivery.exporters if e.name == "datadog/logs"]
        assert isinstance(logs_only, DatadogExporter) and logs_only.tailer is None
        prometheus = next(e for e in svc.sinks if isinstance(e, PrometheusExporter))
        assert prometheus.tailer is not None  # served: this is the primary, serving the telemetry endpoint
    assert svc.sinks == [] and series._tailer_task is None and prometheus.tailer is None


async def test_a_secondary_worker_runs_the_push_sinks_of_its_own_shard_but_serves_no_pull_destination(
    tmp_path: Path,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running(tmp_path / "d", destinations(dead), worker_index=1, serve_telemetry=False) as svc:
        assert [e.name for e in svc.sinks] == ["datadog/m"]
        (series,) = svc.sinks
        assert isinstance(series, DatadogExporter) and series.tailer is not None
        assert [s.index for s in series.tailer.shards] == [1]
