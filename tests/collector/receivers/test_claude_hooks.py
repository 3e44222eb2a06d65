"""Claude Code HTTP hooks at POST /v1/claude-code/hooks: stored as hook_event records, joined to the session's
OTel records, answered {} within the deadline whatever the store does."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from collector.receivers.claude_hooks import input_digest, join_keys
from tests.conftest import CLAUDE_CODE_FIXTURES
from tests.contract.make_golden import Replayer, recorded_requests

RUN = CLAUDE_CODE_FIXTURES / "v2.1.337-httphooks"
PATH = "/v1/claude-code/hooks"
TOKEN = "hook-token-123"  # what the recording's CLI sent (Authorization: Bearer $HOOK_TOKEN)
SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "audit_record.v1.json").read_text())


def recorded_hooks(run: Path = RUN) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run / "hooks").glob("0*.json"))]


def token_overrides(tmp_path: Path) -> dict[str, Any]:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"dev-laptop: {TOKEN}\n")
    tokens.chmod(0o600)
    return {"receivers": {"auth": {"tokens_file": str(tokens)}}}


async def post(
    session: aiohttp.ClientSession, base: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(base + PATH, data=body, headers=hdrs) as resp:
        return resp.status, await resp.read(), time.perf_counter() - started


def as_sent(hook: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The recorded POST: its JSON body and its headers (Authorization, User-Agent, the custom ones)."""
    skip = {"content-length", "host", "connection", "accept-encoding"}
    headers = {k: v for k, v in hook["headers"].items() if k.lower() not in skip}
    return json.dumps(hook["body"]).encode(), headers


async def test_every_recorded_payload_becomes_a_hook_event_joined_to_its_session(bridge_factory, tmp_path) -> None:
    bridge = await bridge_factory(overrides=token_overrides(tmp_path))
    reqs = recorded_requests(RUN)
    async with Replayer(bridge.http_url, bridge.grpc_target) as rp:
        for req in reqs:
            headers = {**req.headers, "Authorization": f"Bearer {TOKEN}"}
            res = await rp.post(req.path or "", req.body, content_type=req.content_type or "", headers=headers)
            assert res.status == 200
    hooks = recorded_hooks()
    assert len(hooks) == 50
    async with aiohttp.ClientSession() as s:
        for hook in hooks:
            body, headers = as_sent(hook)
            status, answer, _ = await post(s, bridge.http_url, body, headers)
            assert (status, json.loads(answer)) == (200, {}), hook["path"]
    records = bridge.records()
    events = [r for r in records if r["kind"] == "hook_event"]
    otel = [r for r in records if r["kind"] != "hook_event"]
    assert len(events) == 50
    assert sorted(r["hook_event"]["name"] for r in events) == sorted(h["body"]["hook_event_name"] for h in hooks)
    assert len({r["hook_event"]["name"] for r in events}) == 20
    sessions = {r["session"]["id"] for r in otel}
    by_use_id = {r["tool"]["use_id"]: r for r in otel if r["kind"] == "tool_decision"}
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for r in events:
        assert not list(validator.iter_errors(r)), r["event"]
        assert r["source"] == {"transport": "http-hooks", "identity": "dev-laptop"}
        keys = join_keys(r)
        assert keys["session_id"] in sessions
        if "tool_use_id" in keys:  # PreToolUse, PostToolUse, PostToolUseFailure: the decision of the same call
            assert by_use_id[keys["tool_use_id"]]["tool"]["name"] == r["tool"]["name"]
            assert by_use_id[keys["tool_use_id"]]["prompt"]["id"] == r["prompt"]["id"]
    # PermissionRequest has no tool_use_id: prompt, tool and input lead to the PreToolUse of the same call
    (perm,) = [r for r in events if r["hook_event"]["name"] == "PermissionRequest"]
    keys = join_keys(perm)
    assert "tool_use_id" not in keys and keys["input_digest"] == input_digest(perm["tool"]["input"])
    pre = [
        r
        for r in events
        if r["hook_event"]["name"] == "PreToolUse"
        and (r["prompt"]["id"], r["tool"]["name"], r["tool"]["input_digest"])
        == (keys["prompt_id"], keys["tool_name"], keys["input_digest"])
    ]
    assert len(pre) == 1 and by_use_id[pre[0]["tool"]["use_id"]]["tool"]["decision"] == "reject"
    assert perm["hook_event"]["permission_suggestions"] == [
        {"type": "setMode", "mode": "acceptEdits", "destination": "session"}
    ]
    (config,) = [r for r in events if r["hook_event"]["name"] == "ConfigChange"]
    assert (config["hook_event"]["source"], config["hook_event"]["file_path"]) == (
        "user_settings",
        "/home/dev/.claude/settings.json",
    )
    # posted again: the same record id (a reader sees the repeat), stored at its own receive time
    async with aiohttp.ClientSession() as s:
        body, headers = as_sent(hooks[0])
        assert (await post(s, bridge.http_url, body, headers))[0] == 200
    again = [r for r in bridge.records() if r["kind"] == "hook_event"]
    assert len({r["id"] for r in again}) == 50


async def test_a_secret_in_tool_input_is_not_stored(bridge) -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    payload = {
        "session_id": "s-1",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_use_id": "toolu_1",
        "tool_input": {"command": f"AWS_ACCESS_KEY_ID={secret} aws s3 ls"},
    }
    async with aiohttp.ClientSession() as s:
        status, _, _ = await post(s, bridge.http_url, json.dumps(payload).encode())
    assert status == 200
    (rec,) = bridge.records()
    assert secret not in json.dumps(rec)
    assert "[REDACTED:" in rec["tool"]["input"]["command"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"session_id": "s"}', "hook_event_name is missing"),
        (b'{"hook_event_name": "Stop", "session_id": 7}', "session_id is missing"),
    ],
)
async def test_bad_payloads_get_400_and_store_nothing(bridge, body: bytes, message: str) -> None:
    async with aiohttp.ClientSession() as s:
        status, answer, _ = await post(s, bridge.http_url, body)
    assert status == 400
    assert message in json.loads(answer)["message"]
    assert bridge.count() == 0


async def test_wrong_or_missing_token_gets_401(bridge_factory, tmp_path) -> None:
    bridge = await bridge_factory(overrides=token_overrides(tmp_path))
    body = json.dumps({"session_id": "s", "hook_event_name": "Stop"}).encode()
    async with aiohttp.ClientSession() as s:
        assert (await post(s, bridge.http_url, body))[0] == 401
        assert (await post(s, bridge.http_url, body, {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await post(s, bridge.http_url, body, {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
    assert bridge.count() == 1


async def test_stalled_store_answers_within_the_deadline_and_commits_later(bridge) -> None:
    """The store's commit is held: every hook is still answered within the deadline; once the store is back, every
    payload is stored, and the late ones are counted."""
    store = bridge.service.pipeline.store
    real_append = store.append
    released = asyncio.Event()

    async def held_append(*args: Any, **kwargs: Any) -> Any:
        await released.wait()
        return await real_append(*args, **kwargs)

    store.append = held_append  # type: ignore[method-assign]
    metrics = bridge.service.metrics
    before = metrics.hooks_answered_before_commit._value.get()
    latencies: list[float] = []
    n = 100
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10)) as s:

        async def one(i: int) -> None:
            body = json.dumps({"session_id": "s-stall", "hook_event_name": "PostToolUse", "tool_use_id": f"t{i}"})
            status, answer, took = await post(s, bridge.http_url, body.encode())
            assert (status, answer) == (200, b"{}")
            latencies.append(took)

        for i in range(0, n, 10):  # paced, about 500 per second
            await asyncio.gather(*(one(j) for j in range(i, i + 10)))
            await asyncio.sleep(0.02)
    assert bridge.count() == 0  # nothing committed while the store is held
    assert metrics.hooks_answered_before_commit._value.get() - before == n
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 <= 0.05, f"p99 {p99 * 1000:.1f} ms; {sorted(round(x * 1000) for x in latencies)}"
    released.set()
    deadline = time.monotonic() + 10
    while bridge.count() < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert bridge.count() == n
    store.append = real_append  # type: ignore[method-assign]
