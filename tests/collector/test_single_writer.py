"""One writer per data directory: a second ``ccbridge run`` is refused, read-only commands work beside a live bridge.

Runs the installed ``ccbridge`` console script as separate processes against a bridge process delivering to the
strict HTTP sink fake (in this test's event loop).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from tests.collector.delivery.delivery_support import Traffic, http_destination, send_once, wait_until
from tests.conftest import PROJECT_ROOT, bridge_config_dict, free_port
from tests.fakes.http_sink import HttpSink

pytestmark = pytest.mark.slow

CCBRIDGE = str(Path(sys.executable).with_name("ccbridge"))


def ccbridge(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """The installed console script, as its own process (stopped by its own timeout)."""
    return subprocess.run(
        [CCBRIDGE, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def second_config(tmp_path: Path, data_dir: Path, overrides: dict[str, object]) -> Path:
    """Another bridge's config (its own ports) on the same ``storage.directory``."""
    tree = bridge_config_dict(
        data_dir, http_port=free_port(), grpc_port=free_port(), telemetry_port=free_port(), overrides=overrides
    )
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


async def deliver(bridge_url: str, traffic: Traffic, sink: HttpSink, requests: int) -> set[str]:
    sent: set[str] = set()
    for _ in range(requests):
        req, ids = traffic.request(turns=1)
        answer = await send_once(bridge_url, req)
        assert answer.ok, answer
        sent.update(ids)
    await sink.wait_for_ids(sent, timeout=20)
    return sent


async def test_second_run_is_refused_and_the_first_bridge_is_untouched(spawn_bridge, tmp_path):
    async with HttpSink() as sink:
        overrides = {"exporters": {"http/x": http_destination(sink.url, max_records=20)}}
        first = await asyncio.to_thread(spawn_bridge, overrides=overrides)
        traffic = Traffic(12)
        accepted = await deliver(first.http_url, traffic, sink, 5)

        result = await asyncio.to_thread(
            ccbridge, "run", "--config", str(second_config(tmp_path, first.data_dir, overrides)), timeout=30
        )
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(first.data_dir) in lines[0] and f"pid {first.proc.pid}" in lines[0], lines[0]
        assert "delivering" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr

        # the first keeps serving and delivering, every record exactly once
        assert first.proc.poll() is None
        accepted |= await deliver(first.http_url, traffic, sink, 5)
        await asyncio.sleep(0.5)
        assert sink.duplicates() == 0
        assert accepted <= sink.ids()
        assert sink.ids() <= {r["id"] for r in first.records()}

        verify = await asyncio.to_thread(ccbridge, "audit", "verify", "--data-dir", str(first.data_dir))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert verify.stdout.startswith("chain intact"), verify.stdout
        assert "shard(s)" in verify.stdout and "1 shard(s)" in verify.stdout


async def test_read_only_commands_run_beside_a_live_bridge_and_writers_are_refused(spawn_bridge, tmp_path):
    async with HttpSink() as sink:
        overrides = {"exporters": {"http/x": http_destination(sink.url, max_records=5)}}
        first = await asyncio.to_thread(spawn_bridge, overrides=overrides)
        traffic = Traffic(7)
        req, refused = traffic.request(turns=1)
        sink.reject_records(refused[:1])
        assert (await send_once(first.http_url, req)).ok
        accepted = await deliver(first.http_url, traffic, sink, 3)
        data_dir = str(first.data_dir)
        config = str(first.config_path)

        async def dead_letters() -> list[dict[str, object]]:
            out = await asyncio.to_thread(ccbridge, "dlq", "list", "--format", "jsonl", "--data-dir", data_dir)
            assert out.returncode == 0, out.stderr
            return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]

        await wait_until(dead_letters, 20, "a dead letter for the refused batch", interval=0.3)
        entries = await dead_letters()

        show = await asyncio.to_thread(ccbridge, "dlq", "show", str(entries[0]["id"]), "--data-dir", data_dir)
        assert show.returncode == 0, show.stderr
        assert orjson.loads(show.stdout)["destination"] == "http/x"

        export = await asyncio.to_thread(ccbridge, "audit", "export", "--data-dir", data_dir)
        assert export.returncode == 0, export.stderr
        assert accepted <= {orjson.loads(line)["id"] for line in export.stdout.splitlines()}

        verify = await asyncio.to_thread(ccbridge, "audit", "verify", "--data-dir", data_dir)
        assert verify.returncode == 0 and verify.stdout.startswith("chain intact"), verify.stdout + verify.stderr

        approvals = await asyncio.to_thread(
            ccbridge, "approvals", "export", "--since", "1d", "--until", "2100-01-01", "--data-dir", data_dir
        )
        assert approvals.returncode == 0, approvals.stderr
        assert approvals.stdout.splitlines()[0].startswith("time"), approvals.stdout[:200]
        assert len(approvals.stdout.splitlines()) > 1

        report = await asyncio.to_thread(ccbridge, "report", "--data-dir", data_dir, "--format", "json")
        assert report.returncode == 0, report.stderr

        for argv in (["dlq", "replay", "--config", config], ["analytics", "sync", "--config", config]):
            refused_cmd = await asyncio.to_thread(ccbridge, *argv)
            assert refused_cmd.returncode != 0, argv
            lines = refused_cmd.stderr.strip().splitlines()
            assert len(lines) == 1, refused_cmd.stderr
            assert data_dir in lines[0] and f"pid {first.proc.pid}" in lines[0], lines[0]
        assert len(await dead_letters()) == len(entries)  # the refused replay changed nothing

        assert first.proc.poll() is None
        assert sink.duplicates() == 0
