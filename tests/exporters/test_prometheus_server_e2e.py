"""End to end with the real Prometheus server: recorded Claude Code traffic in, PromQL answers out.

A ``ccbridge run`` process (one worker, then two) with the ``prometheus`` destination receives the recorded Claude
Code runs exactly as the CLI sent them; a Prometheus server started by the test scrapes the telemetry endpoint every
second, and PromQL over its HTTP API must give the figures computed here from the fixtures themselves
(``datapoints.jsonl``, ``log_records.jsonl``, ``claude.stdout.json``), never from the code under test. Every PromQL
query of ``docs/destinations/prometheus.md`` must run, and ``promtool check metrics`` must accept the exposition.

Needs the Debian ``prometheus`` package (``scripts/install-system-deps``; CI installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.store.sqlite import connect, shard_path
from tests.conftest import BridgeProcess, free_port
from tests.contract.make_golden import FIXTURES, RecordedRequest, Replayer, jsonl_rows, recorded_requests, stdout_json

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
DOC = Path(__file__).resolve().parents[2] / "docs" / "destinations" / "prometheus.md"
ALLOW = "v2.1.332-http-protobuf-allow"
DENY = "v2.1.197-http-protobuf-deny"
DETAILS = "v2.1.332-http-json-details-traces"  # the only CUMULATIVE run
SCRAPE_TIMEOUT = 60.0
PROMETHEUS_OVERRIDES = {"exporters": {"prometheus": {"poll_interval": "200ms"}}}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="the prometheus server / promtool binaries are not installed (run scripts/install-system-deps)",
    ),
]


# ---------------------------------------------------------------------------------------------------------------
# what the recordings say (independent of the code under test)


@dataclass
class Expected:
    cost: float = 0.0
    cost_by_model: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    sessions: float = 0.0
    active_seconds: float = 0.0
    lines: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    decisions_by_tool: Counter[tuple[str, str]] = field(default_factory=Counter)
    api_requests: int = 0
    api_cost: float = 0.0
    api_tokens: Counter[str] = field(default_factory=Counter)
    file_changes: Counter[str] = field(default_factory=Counter)

    def add(self, other: Expected, times: int = 1) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, Counter):
                for k, v in value.items():
                    mine[k] += v * times
            else:
                setattr(self, name, mine + value * times)


def strip_context_suffix(model: str) -> str:
    return re.sub(r"\[[^\]]*\]$", "", model)


def expected_for(run: str) -> Expected:
    run_dir = FIXTURES / run
    e = Expected()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for dp in jsonl_rows(run_dir, "datapoints.jsonl"):
        assert dp["isMonotonic"] is True and dp["type"] == "sum"
        if dp["temporality"].endswith("CUMULATIVE"):  # a cumulative stream's total is its latest point
            key = (dp["name"], json.dumps(dp["attributes"], sort_keys=True))
            if key not in latest or int(dp["timeUnixNano"]) > int(latest[key]["timeUnixNano"]):
                latest[key] = dp
            continue
        latest[(dp["name"], str(len(latest)) + json.dumps(dp, sort_keys=True))] = dp  # deltas all add up
    for dp in latest.values():
        a, v = dp["attributes"], float(dp["value"])
        if dp["name"] == "claude_code.cost.usage":
            e.cost += v
            e.cost_by_model[strip_context_suffix(a["model"])] += v
        elif dp["name"] == "claude_code.token.usage":
            e.tokens[a["type"]] += v
        elif dp["name"] == "claude_code.session.count":
            e.sessions += v
        elif dp["name"] == "claude_code.active_time.total":
            e.active_seconds += v
        elif dp["name"] == "claude_code.lines_of_code.count":
            e.lines[a["type"]] += v
    assert e.cost == pytest.approx(stdout_json(run_dir)["total_cost_usd"])  # the README's cross-check
    for rec in jsonl_rows(run_dir, "log_records.jsonl"):
        a = rec["attributes"]
        if rec["body"] == "claude_code.tool_decision":
            e.decisions[a["decision"]] += 1
            e.decisions_by_tool[(a["tool_name"], a["decision"])] += 1
        elif rec["body"] == "claude_code.api_request":
            e.api_requests += 1
            e.api_cost += float(a["cost_usd"])
            for t in ("input", "output", "cache_read", "cache_creation"):
                e.api_tokens[t] += int(a[f"{t}_tokens"])
        elif rec["body"] == "claude_code.tool_result" and a["tool_name"] in ("Write", "Edit"):
            tool_input = json.loads(a.get("tool_input", "{}"))
            if "file_path" in tool_input:
                e.file_changes[a["tool_name"].lower()] += 1
    return e


def with_session_copy(requests: list[RecordedRequest], n: int) -> list[RecordedRequest]:
    """The same recorded requests as another session: the session id's last 4 hex digits replaced (same length,
    so protobuf bodies stay valid byte for byte otherwise), and so are the API request ids (``req_fake_`` + 24 hex):
    another session's requests are other requests, which the bridge counts once each by request id."""
    session = stdout_json(FIXTURES / requests[0].run)["session_id"]
    new = session[:-4] + f"{n:04x}"
    assert new != session and len(new) == len(session)
    out = []
    for r in requests:
        assert session.encode() in r.body
        body = r.body.replace(session.encode(), new.encode())
        body = re.sub(rb"(req_fake_[0-9a-f]{20})[0-9a-f]{4}", lambda m: m.group(1) + f"{n:04x}".encode(), body)
        out.append(RecordedRequest(**{**vars(r), "body": body}))
    return out


# ---------------------------------------------------------------------------------------------------------------
# the Prometheus server


class PrometheusServer:
    """A ``prometheus`` process owned by the test, scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.workdir = workdir
        self.target = target
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = workdir / "prometheus.log"

    def start(self) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ccbridge\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 900ms\n"
            f"    static_configs: [{{targets: ['{self.target}']}}]\n"
        )
        last = ""
        for attempt in range(3):
            port = free_port()
            tsdb = self.workdir / f"tsdb-{attempt}"
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        str(PROMETHEUS),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tsdb}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with contextlib.closing(urllib_get(self.url + "/-/ready")) as resp:
                        if resp.status == 200:
                            return
                except OSError:
                    pass
                time.sleep(0.1)
            last = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
        raise RuntimeError(f"prometheus did not become ready:\n{last}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with contextlib.closing(urllib_get(url)) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}


def urllib_get(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=5)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], PrometheusServer]]:
    servers: list[PrometheusServer] = []

    def start(telemetry_url: str) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(servers)}"
        workdir.mkdir()
        server = PrometheusServer(workdir, telemetry_url.removeprefix("http://"))
        servers.append(server)
        server.start()
        return server

    yield start
    for s in servers:
        s.stop()


# ---------------------------------------------------------------------------------------------------------------
# helpers


async def send(bridge: BridgeProcess, requests: list[RecordedRequest]) -> None:
    """One client connection per call, like one CLI process."""
    async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
        for req in requests:
            res = await rp.send(req)
            assert getattr(res, "status", 200) == 200, res


async def wait_until(prom: PrometheusServer, checks: dict[str, float], timeout: float = SCRAPE_TIMEOUT) -> None:
    """Poll PromQL until every query equals its expected value (a scrape after the tailer read everything)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {q: await asyncio.to_thread(prom.scalar, q) for q in checks}
        bad = {q: (got[q], want) for q, want in checks.items() if got[q] is None or not close(got[q], want)}
        if not bad:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"PromQL never gave the recorded figures (got, expected): {bad}")
        await asyncio.sleep(0.25)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def doc_queries() -> list[str]:
    blocks = re.findall(r"```promql\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 10
    return [b.strip() for b in blocks]


async def promtool_accepts(telemetry_url: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(telemetry_url + "/metrics") as resp:
        assert resp.status == 200
        body = await resp.read()
    assert b"claude_code_" in body
    proc = await asyncio.to_thread(
        subprocess.run, [str(PROMTOOL), "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


def assert_scrape_healthy(prom: PrometheusServer) -> None:
    targets = prom.api("targets")["activeTargets"]
    assert len(targets) == 1
    assert targets[0]["health"] == "up", targets[0]
    assert targets[0]["lastError"] == ""
    labels = set(prom.api("labels"))
    leaked = labels & {"session_id", "user_id", "user_email", "prompt_id", "enduser_id", "user", "email"}
    assert not leaked, f"identity labels exposed: {leaked}"


# ---------------------------------------------------------------------------------------------------------------
# tests


async def test_single_worker_promql_matches_the_recordings(
    spawn_bridge: Callable[..., BridgeProcess], prometheus_for: Callable[[str], PrometheusServer]
) -> None:
    bridge = spawn_bridge(overrides=PROMETHEUS_OVERRIDES)
    prom = await asyncio.to_thread(prometheus_for, bridge.telemetry_url)
    runs = [ALLOW, DENY, DETAILS]
    e = Expected()
    for run in runs:
        e.add(expected_for(run))
        await send(bridge, recorded_requests(FIXTURES / run))
    assert e.decisions["reject"] == 1 and sum(e.decisions.values()) == 8  # what the README describes
    assert e.file_changes == {"write": 1, "edit": 1}

    rejects = 'sum(claude_code_tool_decisions_total{decision="reject"})'
    await wait_until(
        prom,
        {
            "sum(claude_code_session_count_total)": e.sessions,
            "sum(claude_code_cost_usage_usd_total)": e.cost,
            "sum(claude_code_active_time_seconds_total)": e.active_seconds,
            rejects: e.decisions["reject"],
            "sum(claude_code_tool_decisions_total)": sum(e.decisions.values()),
            "sum(claude_code_api_requests_total)": e.api_requests,
            "sum(claude_code_api_cost_usd_total)": e.api_cost,
            "sum(claude_code_file_changes_total)": sum(e.file_changes.values()),
        },
    )
    assert e.cost == pytest.approx(sum(stdout_json(FIXTURES / r)["total_cost_usd"] for r in runs))
    assert e.api_cost == pytest.approx(e.cost)  # events and metrics count the same spend

    rate = await asyncio.to_thread(prom.scalar, f"{rejects} / sum(claude_code_tool_decisions_total)")
    assert rate == pytest.approx(1 / 8)
    by_tool = await asyncio.to_thread(
        prom.by,
        'sum by (tool) (claude_code_tool_decisions_total{decision="reject"})'
        " / sum by (tool) (claude_code_tool_decisions_total)",
        "tool",
    )
    rejected_tools = {t for (t, d), n in e.decisions_by_tool.items() if d == "reject" and n}
    want = {
        t: e.decisions_by_tool[(t, "reject")] / sum(v for (tt, _), v in e.decisions_by_tool.items() if tt == t)
        for t in rejected_tools  # PromQL: tools without a rejection have no numerator series
    }
    assert by_tool == pytest.approx(want)
    assert await asyncio.to_thread(prom.by, "sum by (type) (claude_code_token_usage_tokens_total)", "type") == (
        pytest.approx(dict(e.tokens))
    )
    assert await asyncio.to_thread(prom.by, "sum by (type) (claude_code_api_tokens_total)", "type") == pytest.approx(
        dict(e.api_tokens)
    )
    assert await asyncio.to_thread(prom.by, "sum by (type) (claude_code_lines_of_code_count_total)", "type") == (
        pytest.approx(dict(e.lines))
    )
    by_model = await asyncio.to_thread(prom.by, "sum by (model) (claude_code_cost_usage_usd_total)", "model")
    assert by_model == pytest.approx(dict(e.cost_by_model))
    assert "claude-opus-4-8" in by_model  # 2.1.197 sent "claude-opus-4-8[1m]" on its metrics
    api_by_model = await asyncio.to_thread(prom.by, "sum by (model) (claude_code_api_cost_usd_total)", "model")
    assert api_by_model == pytest.approx(dict(e.cost_by_model))  # metric and event series join on model
    assert await asyncio.to_thread(prom.query, 'claude_code_cost_usage_usd_total{model=~".*\\\\[.*"}') == []
    assert await asyncio.to_thread(prom.scalar, "sum(ccbridge_prometheus_tail_errors_total)") == 0
    assert await asyncio.to_thread(prom.scalar, "sum(ccbridge_receiver_accepted_items_total)") is not None

    for q in doc_queries():
        await asyncio.to_thread(prom.query, q)  # every documented query is valid PromQL that Prometheus runs
    assert_scrape_healthy(prom)
    await promtool_accepts(bridge.telemetry_url)


def records_in_shard(data_dir: Path, shard: int) -> int:
    path = shard_path(data_dir, shard)
    if not path.exists():
        return 0
    try:
        with contextlib.closing(connect(path, readonly=True)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.OperationalError:  # the worker is creating it right now
        return 0


async def test_two_workers_one_scrape_sees_every_shard(
    spawn_bridge: Callable[..., BridgeProcess], prometheus_for: Callable[[str], PrometheusServer]
) -> None:
    bridge = spawn_bridge(overrides={**PROMETHEUS_OVERRIDES, "server": {"workers": 2}})
    prom = await asyncio.to_thread(prometheus_for, bridge.telemetry_url)
    allow, deny = recorded_requests(FIXTURES / ALLOW), recorded_requests(FIXTURES / DENY)
    copies = 0
    # SO_REUSEPORT spreads connections over the workers; send sessions (one connection each) until both shards
    # hold data, so the test proves the primary reads the other worker's shard. The second worker starts after the
    # primary is ready: until its shard exists, connections can only reach the primary, so pace the sending.
    deadline = time.monotonic() + 60
    while copies < 4 or not all(records_in_shard(bridge.data_dir, i) for i in (0, 1)):
        assert time.monotonic() < deadline and copies < 300, "the second worker never received a connection"
        copies += 1
        await send(bridge, with_session_copy(allow, copies))
        await send(bridge, with_session_copy(deny, copies))
        if not shard_path(bridge.data_dir, 1).exists():
            await asyncio.sleep(0.2)
    e = Expected()
    e.add(expected_for(ALLOW), copies)
    e.add(expected_for(DENY), copies)
    await wait_until(
        prom,
        {
            "sum(claude_code_session_count_total)": 2 * copies,
            "sum(claude_code_cost_usage_usd_total)": e.cost,
            'sum(claude_code_tool_decisions_total{decision="reject"})': copies,
            "sum(claude_code_tool_decisions_total)": sum(e.decisions.values()),
            "sum(claude_code_api_cost_usd_total)": e.api_cost,
        },
    )
    assert await asyncio.to_thread(prom.by, "sum by (type) (claude_code_token_usage_tokens_total)", "type") == (
        pytest.approx(dict(e.tokens))
    )
    assert await asyncio.to_thread(prom.scalar, "sum(ccbridge_prometheus_tail_errors_total)") == 0
    assert_scrape_healthy(prom)
    await promtool_accepts(bridge.telemetry_url)
