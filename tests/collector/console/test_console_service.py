"""The console served by a running bridge: wiring, ingest tokens refused, trail_access stored and delivered."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from tests.collector.console.console_support import corpus, write_store
from tests.collector.delivery.delivery_support import http_destination
from tests.conftest import PROJECT_ROOT, free_port
from tests.fakes.http_sink import HttpSink

REVIEWER_TOKEN = "reviewer-token-for-e2e-0001"
INGEST_TOKEN = "ingest-token-for-e2e-00001"
SINCE, UNTIL = "2025-11-24T00:00:00Z", "2025-11-25T00:00:00Z"
SCHEMA = json.loads((PROJECT_ROOT / "schemas" / "audit_record.v1.json").read_text())


async def test_views_and_exports_are_stored_and_delivered_and_ingest_tokens_do_not_open_the_console(
    bridge_factory, tmp_path: Path
):
    data = tmp_path / "data"
    write_store(data, corpus())
    port = free_port()
    async with HttpSink() as sink:
        b = await bridge_factory(
            data,
            {
                "receivers": {"auth": {"tokens": [{"token": INGEST_TOKEN, "identity": "team-a"}]}},
                "console": {
                    "enabled": True,
                    "endpoint": f"127.0.0.1:{port}",
                    "auth": {"tokens": [{"token": REVIEWER_TOKEN, "reviewer": "carol"}]},
                },
                "exporters": {"http/siem": http_destination(sink.url)},
            },
        )
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            # the ingest token is good for OTLP ...
            async with http.post(
                b.http_url + "/v1/logs",
                data=b"{}",
                headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
            ) as r:
                assert r.status == 200
            # ... and opens no page of the console
            for path in ("/approvals", "/approvals/export?format=csv", "/integrity"):
                async with http.get(base + path, headers={"Authorization": f"Bearer {INGEST_TOKEN}"}) as r:
                    assert r.status == 401, path
            bearer = {"Authorization": f"Bearer {REVIEWER_TOKEN}"}
            async with http.get(f"{base}/approvals?since={SINCE}&until={UNTIL}&decision=reject", headers=bearer) as r:
                assert r.status == 200
            async with http.get(f"{base}/approvals/export?format=csv&since={SINCE}&until={UNTIL}", headers=bearer) as r:
                assert r.status == 200
                body = await r.read()
        stored = [r for r in b.records() if r["kind"] == "trail_access"]
        assert [(r["trail_access"]["page"], r["trail_access"]["rows"]) for r in stored] == [
            ("/approvals", 10),
            ("/approvals/export", body.count(b"\n") - 1),
        ]
        for r in stored:
            jsonschema.validate(r, SCHEMA)
            assert r["trail_access"]["reviewer"] == "carol" and r["chain"]["hash"]
        await sink.wait_for_ids([r["id"] for r in stored], timeout=20)
        delivered = sink.records[stored[1]["id"]]
        assert delivered["trail_access"]["format"] == "csv"
        assert REVIEWER_TOKEN not in json.dumps(delivered) and INGEST_TOKEN not in json.dumps(delivered)


async def test_loopback_console_without_credentials_logs_a_one_time_login_url(bridge_factory, tmp_path, caplog):
    port = free_port()
    caplog.set_level(logging.INFO)
    await bridge_factory(tmp_path / "d", {"console": {"enabled": True, "endpoint": f"127.0.0.1:{port}"}})
    lines = [r.getMessage() for r in caplog.records if "console" in r.getMessage()]
    url = next(m for line in lines if (m := re.search(r"http://127\.0\.0\.1:\d+/login\?token=\S+", line)))
    url = url.group(0)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 303 and "token" not in r.headers["Location"]
        async with http.get(f"http://127.0.0.1:{port}/integrity") as r:
            assert r.status == 200  # signed in by the cookie
    async with aiohttp.ClientSession() as other, other.get(url, allow_redirects=False) as r:
        assert r.status == 401  # works once


@pytest.mark.parametrize(
    ("console", "message"),
    [
        ({"endpoint": "0.0.0.0:18081"}, "without reviewer authentication"),
        (
            {"endpoint": "0.0.0.0:18081", "auth": {"tokens": [{"token": REVIEWER_TOKEN, "reviewer": "c"}]}},
            "without TLS",
        ),
    ],
)
async def test_bridge_refuses_to_start_with_an_exposed_console(bridge_factory, tmp_path, console, message):
    from collector.configtypes import ConfigError

    with pytest.raises(ConfigError, match=message):
        await bridge_factory(tmp_path / "d", {"console": {"enabled": True, **console}})


async def test_console_under_tls_sets_a_secure_cookie(tmp_path, bridge_factory):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    await bridge_factory(
        tmp_path / "d",
        {
            "console": {
                "enabled": True,
                "endpoint": f"127.0.0.1:{port}",
                "tls": {"cert_file": str(cert), "key_file": str(key)},
                "auth": {"tokens": [{"token": REVIEWER_TOKEN, "reviewer": "carol"}]},
            }
        },
    )
    ctx = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(base + "/login", ssl=ctx) as r:
            html = await r.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
        async with http.post(
            base + "/login", data={"token": REVIEWER_TOKEN, "csrf": csrf}, ssl=ctx, allow_redirects=False
        ) as r:
            assert r.status == 303
            session = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("ccbridge_console="))
            assert "Secure" in session and "HttpOnly" in session and "SameSite=Strict" in session
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{port}/login") as r:
                await r.read()
