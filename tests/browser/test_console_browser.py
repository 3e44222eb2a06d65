"""The compliance console in a real browser: Debian's Chromium driven by Playwright, headless.

The browser is the one installed at /usr/bin/chromium (scripts/install-system-deps); nothing is downloaded.
Screenshots of every page are taken here; with ``CCBRIDGE_UPDATE_SCREENSHOTS=1`` they are written to
docs/console/ (the images docs/console.md shows), otherwise under the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.collector.console.console_support import PAYLOADS, corpus, write_store
from tests.collector.delivery.delivery_support import http_destination
from tests.conftest import PROJECT_ROOT, Bridge, free_port
from tests.fakes.http_sink import HttpSink

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REVIEWER_TOKEN = "reviewer-token-browser-0001"
INGEST_TOKEN = "ingest-token-browser-00001"
SINCE, UNTIL = "2025-11-24T00:00:00Z", "2025-11-25T00:00:00Z"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (install-system-deps)"),
]


@dataclass
class Console:
    bridge: Bridge
    base: str
    sink: HttpSink
    shots: Path


@pytest.fixture
async def console(bridge_factory, tmp_path: Path) -> AsyncIterator[Console]:
    data = tmp_path / "data"
    write_store(data, corpus())
    port = free_port()
    shots = PROJECT_ROOT / "docs" / "console" if os.environ.get("CCBRIDGE_UPDATE_SCREENSHOTS") else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
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
        yield Console(b, f"http://127.0.0.1:{port}", sink, shots)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Any, *, downloads: bool = False) -> tuple[Any, Any, list[str]]:
    context = await browser.new_context(accept_downloads=downloads, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    dialogs: list[str] = []

    async def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        await d.dismiss()

    page.on("dialog", on_dialog)
    return context, page, dialogs


async def sign_in(page: Any, base: str, token: str) -> Any:
    await page.goto(base + "/login")
    await page.fill("input[name=token]", token)
    async with page.expect_navigation() as nav:
        await page.click("#login button[type=submit]")
    return await nav.value


def trail_records(b: Bridge) -> list[dict[str, Any]]:
    return b.records(kinds=("trail_access",))


async def test_review_a_user_open_a_session_and_export_what_the_cli_exports(console: Console, browser: Any, tmp_path):
    context, page, dialogs = await new_page(browser, downloads=True)
    await page.goto(console.base + "/login")
    await page.screenshot(path=str(console.shots / "login.png"))
    resp = await sign_in(page, console.base, REVIEWER_TOKEN)
    assert resp.status == 200 and page.url == console.base + "/approvals"
    cookies = await context.cookies()
    session = next(c for c in cookies if c["name"] == "ccbridge_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0
    assert REVIEWER_TOKEN not in page.url and REVIEWER_TOKEN not in await page.content()

    # filter to one user's rejected calls (the decision drop-down submits the form by itself: console.js)
    await page.fill("input[name=since]", SINCE)
    await page.fill("input[name=until]", UNTIL)
    await page.fill("input[name=user]", "alice@example.com")
    async with page.expect_navigation():
        await page.select_option("select[name=decision]", "reject")
    assert "decision=reject" in page.url and "user=alice%40example.com" in page.url
    rows = await page.locator("#trail tbody tr").all_inner_texts()
    assert len(rows) == 2
    assert all("alice@example.com" in r and "reject" in r and "not_executed" in r for r in rows)
    assert await page.inner_text("#count-decisions") == "2"
    assert await page.inner_text("#count-rejected") == "2"
    await page.screenshot(path=str(console.shots / "approvals.png"), full_page=True)

    # export CSV of this filter: byte for byte what `ccbridge approvals export` writes for it
    async with page.expect_download() as dl_info:
        await page.click("a.export-csv")
    download = await dl_info.value
    got = Path(await download.path()).read_bytes()
    cli = shutil.which("ccbridge", path=str(Path(sys.executable).parent)) or "ccbridge"
    want = subprocess.run(
        [
            cli,
            "approvals",
            "export",
            "--data-dir",
            str(console.bridge.data_dir),
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--user",
            "alice@example.com",
            "--decision",
            "reject",
            "--format",
            "csv",
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    ).stdout
    assert got == want
    assert got.count(b"\n") == 3

    # open a session and check its timeline against the stored records
    async with page.expect_navigation():
        await page.click("#trail tbody tr:last-child td:first-child a")
    assert page.url.startswith(console.base + "/sessions/")
    sid = page.url.rsplit("/", 1)[1]
    stored = console.bridge.records(session=sid)
    shown = await page.eval_on_selector_all(
        "#timeline tbody tr", "rows => rows.map(r => [r.dataset.kind, r.dataset.id, r.cells[0].innerText])"
    )
    assert shown == [[r["kind"], r["id"], r["time"]] for r in stored]
    assert await page.inner_text("#session-cost") == "$0.0125"
    facts = await page.inner_text("#session-facts")
    assert "host-alice" in facts and "2.1.332" in facts and "alice@example.com" in facts
    await page.screenshot(path=str(console.shots / "session.png"), full_page=True)

    async with page.expect_navigation():
        await page.click("#session-facts a")  # the user
    assert "/users/alice%40example.com?since=2025-11-24&until=2025-11-25" in page.url
    assert await page.inner_text("#user-sessions") == "2" and await page.inner_text("#user-rejected") == "2"
    await page.screenshot(path=str(console.shots / "user.png"), full_page=True)

    await page.goto(console.base + "/integrity")
    await page.wait_for_function("document.getElementById('verify-result') !== null")
    await page.screenshot(path=str(console.shots / "integrity.png"), full_page=True)

    # sign out: the session ends
    async with page.expect_navigation():
        await page.click("#logout button")
    assert page.url == console.base + "/login"
    assert (await page.goto(console.base + "/approvals")).status == 401
    assert dialogs == []

    # every view and the export are trail_access records, stored and delivered
    trail = trail_records(console.bridge)
    pages = [r["trail_access"]["page"] for r in trail]
    assert pages == ["/approvals", "/approvals", "/approvals/export", "/sessions", "/users", "/integrity"]
    export = trail[2]["trail_access"]
    assert export["rows"] == 2 and export["format"] == "csv" and export["reviewer"] == "carol"
    assert export["filter"]["user"] == "alice@example.com" and export["filter"]["decision"] == "reject"
    await console.sink.wait_for_ids([r["id"] for r in trail], timeout=20)
    await context.close()


async def test_wrong_and_ingest_tokens_get_401(console: Console, browser: Any):
    context, page, _dialogs = await new_page(browser)
    for token in ("not-a-reviewer-token", INGEST_TOKEN):
        resp = await sign_in(page, console.base, token)
        assert resp.status == 401
        assert "does not open the console" in await page.inner_text(".error")
        api = await context.request.get(console.base + "/approvals", headers={"Authorization": f"Bearer {token}"})
        assert api.status == 401
        assert "Unauthorized" in await api.text()
    assert (await page.goto(console.base + "/approvals")).status == 401
    await page.screenshot(path=str(console.shots / "unauthorized.png"))
    assert trail_records(console.bridge) == []
    await context.close()


async def test_script_and_html_in_commands_prompts_and_paths_render_as_text(console: Console, browser: Any):
    context, page, dialogs = await new_page(browser)
    await context.add_init_script("window.__pwned = undefined;")
    await sign_in(page, console.base, REVIEWER_TOKEN)
    urls = [
        f"{console.base}/approvals?since={SINCE}&until={UNTIL}&user=mallory%3Cscript%3E@example.com",
        f"{console.base}/sessions/s-mallory-%3Cb%3E1%3C%2Fb%3E",
        f"{console.base}/users/mallory%3Cscript%3E@example.com?since={SINCE}&until={UNTIL}",
    ]
    for url in urls:
        resp = await page.goto(url)
        assert resp.status == 200, url
        await page.wait_for_load_state("load")
        assert await page.evaluate("window.__pwned") is None, url
        assert (
            await page.evaluate("document.querySelectorAll('main script, main img, main svg, main iframe').length") == 0
        )
        text = await page.inner_text("main")
        if "/sessions/" in url:
            for p in PAYLOADS:
                assert p in text  # shown literally: commands and paths
            assert "overloaded <b>now</b>" in text
    await page.goto(urls[0])
    trail_text = await page.inner_text("#trail")
    for p in PAYLOADS:
        assert p in trail_text and f"/x/{p}" in trail_text
    await page.goto(urls[1])
    await page.screenshot(path=str(console.shots / "payloads.png"), full_page=True)
    assert dialogs == []
    assert await page.evaluate("window.__pwned") is None
    await context.close()
