"""TLS and mutual TLS on the real listeners: OTLP/HTTP, OTLP/gRPC and the telemetry endpoint.

A throw-away PKI is made per module with the ``openssl`` CLI: a CA, a server certificate for ``localhost`` /
``127.0.0.1``, a client certificate from the same CA and one from an unrelated CA. Each test starts the bridge with
the certificates in its config and connects as a client would: a trusted client certificate gets its data stored;
no client certificate, or one the bridge's CA did not sign, fails in the TLS handshake and stores nothing.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from tests.conftest import CLAUDE_CODE_FIXTURES

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

HTTP_LOGS = CLAUDE_CODE_FIXTURES / "v2.1.332-http-protobuf-allow" / "otlp" / "raw" / "0002-logs.bin"
GRPC_LOGS = CLAUDE_CODE_FIXTURES / "v2.1.332-grpc-allow" / "otlp" / "raw" / "0002-logs.bin"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TOKEN = "tls-test-token-5b7c1e9a"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key_and_csr(name: str, cn: str, cwd: Path) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd,
    )  # fmt: skip


def _ca(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _sign(name: str, ca: str, extensions: str, cwd: Path) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _ca("ca", d)
    _ca("rogue-ca", d)
    _key_and_csr("server", "localhost", d)
    _sign("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", d)
    _key_and_csr("client", "dev-laptop-17", d)
    _sign("client", "ca", "extendedKeyUsage=clientAuth\n", d)
    _key_and_csr("rogue", "dev-laptop-17", d)
    _sign("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n", d)
    return Pki(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key", d / "rogue.crt",
        d / "rogue.key",
    )  # fmt: skip


def tls_overrides(pki: Pki, *, mutual: bool, auth: bool = False) -> dict[str, Any]:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    if mutual:
        tls["client_ca_file"] = str(pki.ca)
    tree: dict[str, Any] = {"receivers": {"otlp": {"http": {"tls": tls}, "grpc": {"tls": tls}}}}
    if auth:
        tree["receivers"]["auth"] = {"tokens": [{"token": TOKEN, "identity": "laptop-fleet"}]}
    return tree


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def https(url: str) -> str:
    return url.replace("http://", "https://", 1)


async def post_logs(url: str, ctx: ssl.SSLContext | bool, headers: dict[str, str] | None = None) -> int:
    hdrs = {"Content-Type": "application/x-protobuf", **(headers or {})}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.post(url + "/v1/logs", data=HTTP_LOGS.read_bytes(), headers=hdrs, ssl=ctx) as resp,
    ):
        await resp.read()
        return resp.status


async def post_fails(url: str, ctx: ssl.SSLContext | bool) -> BaseException:
    try:
        await post_logs(url, ctx)
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
        return exc
    raise AssertionError("the request succeeded; the TLS handshake should have failed")


async def grpc_export(target: str, creds: grpc.ChannelCredentials, metadata: Any = None) -> grpc.StatusCode:
    async with aio.secure_channel(target, creds) as ch:
        call = ch.unary_unary(LOGS_METHOD, request_serializer=None, response_deserializer=None)
        try:
            await call(GRPC_LOGS.read_bytes(), timeout=10, metadata=metadata)
        except aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_http_tls_server_authentication(bridge_factory: Any, pki: Pki) -> None:
    b = await bridge_factory(overrides=tls_overrides(pki, mutual=False))
    url = https(b.http_url)
    assert await post_logs(url, client_context(pki)) == 200
    untrusting = ssl.create_default_context()  # system CAs do not know our test CA
    exc = await post_fails(url, untrusting)
    assert isinstance(exc, aiohttp.ClientConnectorCertificateError) or "CERTIFICATE_VERIFY_FAILED" in str(exc)
    with pytest.raises(aiohttp.ClientError):
        await post_logs(b.http_url, False)  # plain HTTP to a TLS port
    assert b.count() == 6


async def test_http_mutual_tls(bridge_factory: Any, pki: Pki) -> None:
    b = await bridge_factory(overrides=tls_overrides(pki, mutual=True))
    url = https(b.http_url)
    await post_fails(url, client_context(pki))
    await post_fails(url, client_context(pki, pki.rogue_cert, pki.rogue_key))
    assert b.count() == 0
    assert await post_logs(url, client_context(pki, pki.client_cert, pki.client_key)) == 200
    assert b.count() == 6


async def test_grpc_tls_and_mutual_tls(bridge_factory: Any, pki: Pki) -> None:
    ca = pki.ca.read_bytes()
    b = await bridge_factory(overrides=tls_overrides(pki, mutual=False))
    assert await grpc_export(b.grpc_target, grpc.ssl_channel_credentials(root_certificates=ca)) == grpc.StatusCode.OK
    assert await grpc_export(b.grpc_target, grpc.ssl_channel_credentials()) == grpc.StatusCode.UNAVAILABLE
    assert b.count() == 3

    m = await bridge_factory(overrides=tls_overrides(pki, mutual=True))
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    rogue = grpc.ssl_channel_credentials(ca, pki.rogue_key.read_bytes(), pki.rogue_cert.read_bytes())
    good = grpc.ssl_channel_credentials(ca, pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    assert await grpc_export(m.grpc_target, no_cert) == grpc.StatusCode.UNAVAILABLE
    assert await grpc_export(m.grpc_target, rogue) == grpc.StatusCode.UNAVAILABLE
    assert m.count() == 0
    assert await grpc_export(m.grpc_target, good) == grpc.StatusCode.OK
    assert m.count() == 3


async def test_mutual_tls_and_bearer_tokens_together(bridge_factory: Any, pki: Pki) -> None:
    b = await bridge_factory(overrides=tls_overrides(pki, mutual=True, auth=True))
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    assert await post_logs(https(b.http_url), ctx) == 401, "a client certificate does not replace the token"
    assert await post_logs(https(b.http_url), ctx, {"Authorization": f"Bearer {TOKEN}"}) == 200
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    assert await grpc_export(b.grpc_target, creds) == grpc.StatusCode.UNAUTHENTICATED
    assert await grpc_export(b.grpc_target, creds, (("authorization", f"Bearer {TOKEN}"),)) == grpc.StatusCode.OK
    assert {(r["source"]["transport"], r["source"]["identity"]) for r in b.records()} == {
        ("http", "laptop-fleet"),
        ("grpc", "laptop-fleet"),
    }


async def test_telemetry_endpoint_over_tls(bridge_factory: Any, pki: Pki) -> None:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "client_ca_file": str(pki.ca)}
    b = await bridge_factory(overrides={"telemetry": {"tls": tls}})
    url = https(b.telemetry_url)
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/healthz", ssl=ctx) as resp:
            assert resp.status == 200
        async with s.get(url + "/metrics", ssl=ctx) as resp:
            assert resp.status == 200
            assert "ccbridge_" in await resp.text()
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            async with s.get(url + "/healthz", ssl=client_context(pki)) as resp:
                await resp.read()
        with pytest.raises(aiohttp.ClientError):
            async with s.get(b.telemetry_url + "/healthz") as resp:
                await resp.read()
