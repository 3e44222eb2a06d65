"""What an SRE sees of a running bridge (a real process): the start line, JSON log fields per destination attempt,
debug lines per request and batch, what ``stopped`` says is pending, SIGHUP, ``ccbridge_build_info`` and the
``process_*`` metrics without ``*_created`` families, and ``ccbridge status`` from the bridge and from the store."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.request
from typing import Any

import orjson
import pytest

from tests.collector.cli.cli_support import ccbridge
from tests.conftest import free_port

DEAD = "http/dead"


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(line))
    return out


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_logs_metrics_and_status_of_a_running_bridge(spawn_bridge):
    dead_port = free_port()  # nothing listens there: every push fails and is retried
    bp = spawn_bridge(
        overrides={
            "telemetry": {"log_level": "debug", "log_format": "json"},
            "exporters": {
                DEAD: {
                    "url": f"http://127.0.0.1:{dead_port}/in",
                    "batch": {"timeout": "50ms"},
                    "retry": {"initial_interval": "100ms", "max_interval": "200ms"},
                }
            },
        }
    )
    lines = json_lines(bp.output())
    start = next(d for d in lines if "starting" in d["message"])
    assert start["config"] == str(bp.config_path) and start["data_dir"] == str(bp.data_dir)
    assert DEAD in start["destinations"] and any("otlp_http" in r for r in start["receivers"])
    assert start["version"] and start["python"]

    r = ccbridge("demo", "--endpoint", bp.http_url, "--sessions", "1", "--prompts", "1")
    assert r.code == 0, r.err

    def retried() -> bool:
        return any(d.get("destination") == DEAD and d.get("attempt", 0) >= 2 for d in json_lines(bp.output()))

    wait_for(retried)
    lines = json_lines(bp.output())
    attempt = next(d for d in lines if d.get("destination") == DEAD and "attempt" in d)
    assert attempt["records"] >= 1 and attempt["error"] and attempt["level"] == "warning"
    assert any(d.get("transport") == "http" and d.get("signal") == "logs" and d["level"] == "debug" for d in lines)

    metrics = urllib.request.urlopen(bp.telemetry_url + "/metrics", timeout=10).read().decode()
    assert 'ccbridge_build_info{python="' in metrics and 'version="' in metrics
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"):
        assert name in metrics
    assert "_created" not in metrics

    status = json.loads(urllib.request.urlopen(bp.telemetry_url + "/status", timeout=10).read())
    dest = status["destinations"][DEAD]
    assert dest["last_error"] and dest["last_success"] is None
    assert status["receivers"]["accepted"]["http/logs"] > 0

    r = ccbridge("status", "--url", bp.telemetry_url)
    assert r.code == 0, r.err
    assert f"destination {DEAD}:" in r.out and "last error: 20" in r.out and "accepted http/logs" in r.out
    r = ccbridge("status", "--url", bp.telemetry_url, "--format", "json")
    assert json.loads(r.out)["destinations"][DEAD]["last_error"]

    bp.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP" in bp.output())

    bp.terminate(timeout=30)
    stopped = [d for d in json_lines(bp.output()) if d["message"].startswith("stopped")]
    assert stopped and stopped[-1]["pending"].get(DEAD, 0) > 0, stopped
    assert DEAD in stopped[-1]["message"]

    # the bridge is gone: status reads the data directory
    r = ccbridge("status", "--config", str(bp.config_path), "--url", f"http://127.0.0.1:{free_port()}")
    assert r.code == 0, r.err
    assert "no running bridge answered" in r.out and f"destination {DEAD}:" in r.out
    doc = json.loads(ccbridge("status", "--store", "--config", str(bp.config_path), "--format", "json").out)
    assert doc["destinations"][DEAD]["backlog_records"] == stopped[-1]["pending"][DEAD]
