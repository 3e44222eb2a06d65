"""Receiver authentication: bearer tokens -> identities, on both real receivers, reloads, and no secret in any log.

The end-to-end tests run the real bridge (in process, or as a subprocess for SIGHUP) and send recorded Claude Code
OTLP bodies over HTTP and gRPC. They check the answer (401 with ``WWW-Authenticate: Bearer`` and a
``google.rpc.Status`` that does not echo the token; ``UNAUTHENTICATED`` on gRPC), that nothing of a refused request
is stored, and that accepted records carry the token's identity as ``source.identity``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from google.rpc import status_pb2
from grpc import aio

from collector.config import ConfigError, load_text
from collector.receivers import auth as auth_mod
from collector.receivers.auth import (
    BearerRequired,
    InvalidToken,
    ReceiverAuthConfig,
    TokenAuthenticator,
    parse_bearer,
    parse_tokens_file,
)
from collector.service import Service
from tests.conftest import CLAUDE_CODE_FIXTURES, config_from_dict

TOKEN_A = "tok-A-7f3c9e2b5d1a4c8e0b6f"
TOKEN_B = "tok-B-1d9a0c7e3f5b2a8c4e6d"
TOKEN_C = "tok-C-5e2f8a1b9c3d7e0f6a4b"
WRONG = "tok-X-0000000000000000wrong"
HTTP_LOGS = CLAUDE_CODE_FIXTURES / "v2.1.332-http-protobuf-allow" / "otlp" / "raw" / "0002-logs.bin"
GRPC_LOGS = CLAUDE_CODE_FIXTURES / "v2.1.332-grpc-allow" / "otlp" / "raw" / "0002-logs.bin"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
GRPC_METRICS = CLAUDE_CODE_FIXTURES / "v2.1.332-grpc-allow" / "otlp" / "raw" / "0003-metrics.bin"


def sha(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def auth_overrides(**auth: Any) -> dict[str, Any]:
    return {"receivers": {"auth": auth}}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    content_type: str
    body: bytes


async def post_logs(base: str, token: str | None, *, header: str | None = None, json: bool = False) -> Answer:
    headers = {"Content-Type": "application/json" if json else "application/x-protobuf"}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = b'{"resourceLogs":[]}' if json else HTTP_LOGS.read_bytes()
    async with aiohttp.ClientSession() as s, s.post(base + "/v1/logs", data=body, headers=headers) as resp:
        return Answer(resp.status, dict(resp.headers), resp.content_type, await resp.read())


async def http_status(base: str, token: str | None) -> int:
    return (await post_logs(base, token)).status


async def grpc_export(target: str, token: str | None, method: str = LOGS_METHOD, body: bytes | None = None) -> Any:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    async with aio.insecure_channel(target) as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            await call(body if body is not None else GRPC_LOGS.read_bytes(), metadata=metadata, timeout=10)
        except aio.AioRpcError as exc:
            return exc
    return grpc.StatusCode.OK


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


# ---------------------------------------------------------------------------------------------------------------
# parsing and configuration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"Bearer {TOKEN_A}", TOKEN_A),
        (f"bearer {TOKEN_A}", TOKEN_A),
        (f"  BEARER   {TOKEN_A}  ", TOKEN_A),
    ],
)
def test_parse_bearer_accepts_the_scheme_case_insensitively(value: str, expected: str) -> None:
    assert parse_bearer(value) == expected


@pytest.mark.parametrize(
    "value", [None, "", "   ", "Bearer", "Bearer   ", f"Basic {TOKEN_A}", TOKEN_A, f"Token {TOKEN_A}"]
)
def test_parse_bearer_refuses_anything_else_without_echoing_it(value: str | None) -> None:
    with pytest.raises(BearerRequired) as info:
        parse_bearer(value)
    assert TOKEN_A not in str(info.value)
    assert "Bearer" in info.value.challenge


def test_tokens_file_plain_hashed_comments_and_shared_identities() -> None:
    text = f"""
# platform team, rotating
team-platform: {TOKEN_A}
team-platform : {sha(TOKEN_B)}

ci-runner-07:{TOKEN_C}
"""
    entries = parse_tokens_file(text, "tokens.txt")
    assert [e.identity for e in entries] == ["team-platform", "team-platform", "ci-runner-07"]
    assert entries[0].digest == hashlib.sha256(TOKEN_A.encode()).digest()
    assert entries[1].digest == hashlib.sha256(TOKEN_B.encode()).digest()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"{TOKEN_A}", "tokens.txt:2: expected 'identity: token'"),
        (f"bad identity: {TOKEN_A}", "tokens.txt:2: identity must be"),
        (f": {TOKEN_A}", "tokens.txt:2: identity must be"),
        ("team: short", "tokens.txt:2: token must be at least 8 characters"),
        ("team: sha256:abc", "tokens.txt:2: a hashed token is 'sha256:' followed by 64 hexadecimal digits"),
        (f"team: {TOKEN_A} {TOKEN_B}", "tokens.txt:2: token must not contain whitespace"),
        (f"other: {TOKEN_C}", "tokens.txt:2: the same token is also given to identity 'team'"),
    ],
)
def test_tokens_file_errors_name_the_line_never_the_token(line: str, message: str) -> None:
    text = f"team: {TOKEN_C}\n{line}\n"
    with pytest.raises(ConfigError) as info:
        parse_tokens_file(text, "tokens.txt")
    assert str(info.value).startswith(message), str(info.value)
    for secret in (TOKEN_A, TOKEN_B, TOKEN_C):
        assert secret not in str(info.value)


def test_config_section_is_validated_without_showing_tokens() -> None:
    cfg = load_text(f"receivers: {{auth: {{tokens: [{{token: '{TOKEN_A}', identity: team-a}}]}}}}")
    assert cfg.receivers.auth.enabled
    assert TOKEN_A not in repr(cfg)
    assert not load_text("{}").receivers.auth.enabled
    bad = [
        ("[{token: 'short', identity: team-a}]", "receivers.auth.tokens[0].token: token must be at least 8"),
        (f"[{{token: '{TOKEN_A}', identity: 'has space'}}]", "receivers.auth.tokens[0].identity: identity must be"),
        (f"[{{token: '{TOKEN_A}'}}]", "receivers.auth.tokens[0].identity: identity must be"),
        (
            f"[{{token: '{TOKEN_A}', identity: a}}, {{token: '{sha(TOKEN_A)}', identity: b}}]",
            "receivers.auth.tokens[1].token: the same token is also given to identity 'a'",
        ),
        (f"[{{token: '{TOKEN_A}', identity: a, extra: 1}}]", "receivers.auth.tokens[0].extra: unknown key"),
    ]
    for tokens, message in bad:
        with pytest.raises(ConfigError) as info:
            load_text(f"receivers: {{auth: {{tokens: {tokens}}}}}")
        assert str(info.value).startswith(message), str(info.value)
        assert TOKEN_A not in str(info.value)


def test_missing_or_bad_tokens_file_refuses_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    cfg = config_from_dict({"storage": {"directory": str(tmp_path / "d")}, **auth_overrides(tokens_file=str(missing))})
    with pytest.raises(ConfigError, match="cannot read tokens file"):
        Service(cfg)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"team-a {TOKEN_A}\n")
    cfg = config_from_dict({"storage": {"directory": str(tmp_path / "d")}, **auth_overrides(tokens_file=str(bad))})
    with pytest.raises(ConfigError) as info:
        Service(cfg)
    assert str(info.value) == f"{bad}:1: expected 'identity: token'"


def test_identify_compares_every_known_digest_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the number of comparisons is the same for the first, the last and no match."""
    cfg = ReceiverAuthConfig(
        tokens=[
            auth_mod.AuthTokenConfig(auth_mod.Secret(TOKEN_A), "a"),
            auth_mod.AuthTokenConfig(auth_mod.Secret(TOKEN_B), "b"),
            auth_mod.AuthTokenConfig(auth_mod.Secret(sha(TOKEN_C)), "c"),
        ]
    )
    authn = TokenAuthenticator(cfg)
    calls: list[tuple[bytes, bytes]] = []
    real = auth_mod.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_mod.hmac, "compare_digest", counting)
    counts = []
    for token, identity in ((TOKEN_A, "a"), (TOKEN_C, "c"), (WRONG, None)):
        calls.clear()
        if identity is None:
            with pytest.raises(InvalidToken):
                authn.identify(token)
        else:
            assert authn.identify(token) == identity
        counts.append(len(calls))
        assert all(len(a) == len(b) == 32 for a, b in calls), "compares digests, not raw tokens"
    assert counts == [3, 3, 3]


def test_file_reload_on_change_keeps_old_tokens_when_the_new_file_is_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    path = tmp_path / "tokens.txt"
    path.write_text(f"team-a: {TOKEN_A}\n")
    authn = TokenAuthenticator(ReceiverAuthConfig(tokens_file=str(path), reload_interval=5.0), clock=lambda: now[0])
    assert authn.identify(TOKEN_A) == "team-a"
    path.write_text(f"team-a: {TOKEN_A}\nteam-b: {sha(TOKEN_B)}\n")
    with pytest.raises(InvalidToken):
        authn.identify(TOKEN_B)  # not yet: checked at most every reload_interval
    now[0] = 6.0
    assert authn.identify(TOKEN_B) == "team-b"
    assert authn.reloads == 1
    caplog.set_level(logging.DEBUG)
    path.write_text(f"team-b {TOKEN_B}\nteam-c: {TOKEN_C}\n")
    now[0] = 12.0
    assert authn.identify(TOKEN_A) == "team-a"  # the broken file left the previous tokens in force
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"tokens file not reloaded, previous tokens stay in force: {path}:1: expected 'identity: token'"]
    now[0] = 18.0
    authn.identify(TOKEN_A)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, "a broken file is reported once"
    path.unlink()
    now[0] = 24.0
    assert authn.identify(TOKEN_B) == "team-b"
    path.write_text(f"team-c: {TOKEN_C}\n")
    assert authn.reload()  # SIGHUP path: immediate
    assert authn.identify(TOKEN_C) == "team-c"
    with pytest.raises(InvalidToken):
        authn.identify(TOKEN_A)
    for secret in (TOKEN_A, TOKEN_B, TOKEN_C):
        assert secret not in caplog.text


def test_plain_tokens_in_a_readable_file_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"team-a: {TOKEN_A}\n")
    path.chmod(0o644)
    caplog.set_level(logging.WARNING)
    TokenAuthenticator(ReceiverAuthConfig(tokens_file=str(path)))
    assert "readable by group or others" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    TokenAuthenticator(ReceiverAuthConfig(tokens_file=str(path)))
    path.write_text(f"team-a: {sha(TOKEN_A)}\n")
    path.chmod(0o644)
    TokenAuthenticator(ReceiverAuthConfig(tokens_file=str(path)))
    assert "readable" not in caplog.text
    assert TOKEN_A not in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# end to end


async def test_http_refuses_without_a_valid_token_and_stamps_the_identity(bridge_factory: Any) -> None:
    b = await bridge_factory(overrides=auth_overrides(tokens=[{"token": TOKEN_A, "identity": "team-platform"}]))
    cases = [
        (None, None, 'Bearer realm="ccbridge"', "missing bearer token"),
        (None, f"Basic {TOKEN_A}", 'Bearer realm="ccbridge"', "unsupported authorization scheme"),
        (WRONG, None, 'Bearer realm="ccbridge", error="invalid_token"', "invalid bearer token"),
    ]
    for token, header, challenge, message in cases:
        resp = await post_logs(b.http_url, token, header=header)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == challenge
        assert resp.content_type == "application/x-protobuf"
        status = status_pb2.Status.FromString(resp.body)
        assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert status.message.startswith(message)
        assert TOKEN_A not in status.message and WRONG not in status.message
        json_resp = await post_logs(b.http_url, token, header=header, json=True)
        assert json_resp.status == 401
        assert json_resp.headers["WWW-Authenticate"] == challenge
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            b.http_url + "/v1/logs",
            data=b"{}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {WRONG}"},
        ) as r,
    ):
        doc = orjson.loads(await r.read())
    assert doc == {"code": 16, "message": "invalid bearer token"}
    assert b.count() == 0, "nothing of a refused request is stored"
    ok = await post_logs(b.http_url, TOKEN_A)
    assert ok.status == 200
    records = b.records()
    assert len(records) == 6
    assert {r["source"]["identity"] for r in records} == {"team-platform"}
    assert {r["source"]["transport"] for r in records} == {"http"}


async def test_grpc_refuses_without_a_valid_token_and_stamps_the_identity(bridge_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# hashed only\nmachine-ci-07: {sha(TOKEN_B)}\n")
    path.chmod(0o600)
    b = await bridge_factory(overrides=auth_overrides(tokens_file=str(path)))
    for token, message in ((None, "missing bearer token"), (WRONG, "invalid bearer token")):
        err = await grpc_export(b.grpc_target, token)
        assert isinstance(err, aio.AioRpcError)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (err.details() or "").startswith(message)
        assert WRONG not in (err.details() or "")
    assert b.count() == 0
    assert await grpc_export(b.grpc_target, TOKEN_B) == grpc.StatusCode.OK
    assert await grpc_export(b.grpc_target, TOKEN_B, METRICS_METHOD, GRPC_METRICS.read_bytes()) == grpc.StatusCode.OK
    records = b.records()
    assert len(records) == 3
    assert {r["source"]["identity"] for r in records} == {"machine-ci-07"}
    points = b.metric_points()
    assert points and {p["source"]["identity"] for p in points} == {"machine-ci-07"}


async def test_recorded_claude_code_authorization_header_is_accepted(bridge_factory: Any) -> None:
    """The details run was recorded with OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer test-token."""
    from tests.contract.make_golden import Replayer, recorded_requests

    run = CLAUDE_CODE_FIXTURES / "v2.1.332-http-json-details-traces"
    reqs = recorded_requests(run)
    assert all(r.headers.get("Authorization") == "Bearer test-token" for r in reqs)
    b = await bridge_factory(overrides=auth_overrides(tokens=[{"token": "test-token", "identity": "acme"}]))
    async with Replayer(b.http_url, b.grpc_target) as rp:
        for req in reqs:
            res = await rp.send(req)
            assert res.status == 200, res
    records = b.records()
    assert len(records) == 21
    assert {r["source"]["identity"] for r in records} == {"acme"}
    assert {s["source"]["identity"] for s in b.spans()} == {"acme"}


async def test_token_file_changes_are_picked_up_while_running(bridge_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"team-a: {TOKEN_A}\n")
    path.chmod(0o600)
    b = await bridge_factory(overrides=auth_overrides(tokens_file=str(path), reload_interval="100ms"))
    assert await http_status(b.http_url, TOKEN_A) == 200
    assert await http_status(b.http_url, TOKEN_B) == 401
    path.write_text(f"team-b: {sha(TOKEN_B)}\n")  # rotate: B in, A out

    async def b_accepted() -> bool:
        return await http_status(b.http_url, TOKEN_B) == 200

    await poll(b_accepted)
    assert await http_status(b.http_url, TOKEN_A) == 401
    err = await grpc_export(b.grpc_target, TOKEN_A)
    assert isinstance(err, aio.AioRpcError) and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await grpc_export(b.grpc_target, TOKEN_B) == grpc.StatusCode.OK
    by_transport = {(r["source"]["transport"], r["source"]["identity"]) for r in b.records()}
    # the identity is part of the record id: team-b's copy of team-a's events is its own record, not a duplicate
    assert by_transport == {("http", "team-a"), ("http", "team-b"), ("grpc", "team-b")}


def test_sighup_reloads_the_tokens_file_of_a_running_bridge(spawn_bridge: Any, tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"team-a: {TOKEN_A}\n")
    path.chmod(0o600)
    bp = spawn_bridge(overrides=auth_overrides(tokens_file=str(path), reload_interval="1h"))
    assert asyncio.run(http_status(bp.http_url, TOKEN_A)) == 200
    path.write_text(f"team-c: {TOKEN_C}\n")
    assert asyncio.run(http_status(bp.http_url, TOKEN_C)) == 401, "reload_interval 1h: only SIGHUP reloads"
    bp.proc.send_signal(signal.SIGHUP)

    async def c_accepted() -> bool:
        return await http_status(bp.http_url, TOKEN_C) == 200

    asyncio.run(poll(c_accepted))
    assert asyncio.run(http_status(bp.http_url, TOKEN_A)) == 401
    assert bp.proc.poll() is None, "SIGHUP must not stop the bridge"
    assert bp.terminate() == 0
    out = bp.output()
    for secret in (TOKEN_A, TOKEN_C):
        assert secret not in out


async def test_no_secret_in_any_log_line_through_failed_and_good_auth(
    bridge_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = await bridge_factory(overrides=auth_overrides(tokens=[{"token": TOKEN_A, "identity": "team-a"}]))
    presented = [TOKEN_B, WRONG, TOKEN_A[:-1], TOKEN_A + "x"]
    for token in presented:
        assert await http_status(b.http_url, token) == 401
        err = await grpc_export(b.grpc_target, token)
        assert isinstance(err, aio.AioRpcError) and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await post_logs(b.http_url, None, header=f"Basic {TOKEN_B}")).status == 401
    assert (await post_logs(b.http_url, None, header=f"Token {WRONG}")).status == 401
    assert await http_status(b.http_url, TOKEN_A) == 200
    assert await grpc_export(b.grpc_target, TOKEN_A) == grpc.StatusCode.OK
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) >= 2 * len(presented), "the refusals are logged (so this test sees the log lines)"
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TOKEN_A, TOKEN_B, WRONG, TOKEN_A[:-1]):
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
