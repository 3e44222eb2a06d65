"""The shared HTTP client of the exporters: answers, outcomes for no answer, and the request timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from collector.configtypes import Duration
from collector.delivery.outcome import Retry
from exporters.httpclient import HttpAnswer, TLSClientConfig, new_session, post
from tests.conftest import serve_app


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(float(request.query.get("delay", "0")))
        return web.Response(status=202, text="ok", headers={"Retry-After": "3"})

    app = web.Application()
    app.router.add_post("/in", handle)
    runner, port = await serve_app(app)
    try:
        yield f"http://127.0.0.1:{port}/in"
    finally:
        await runner.cleanup()


async def test_requests_queued_for_a_connection_do_not_time_out_while_waiting(slow_server: str) -> None:
    session = new_session(TLSClientConfig(), Duration(0.5), limit=1)
    try:
        answers = await asyncio.gather(*(post(session, slow_server + "?delay=0.3", b"x", {}) for _ in range(3)))
    finally:
        await session.close()
    # one connection, 0.3 s each: the third waits 0.6 s for the pool, longer than the 0.5 s timeout of a request
    assert all(isinstance(a, HttpAnswer) and a.status == 202 and a.retry_after == 3 for a in answers), answers


async def test_a_request_slower_than_the_timeout_is_a_retry(slow_server: str) -> None:
    session = new_session(TLSClientConfig(), Duration(0.2), limit=1)
    try:
        answer = await post(session, slow_server + "?delay=1", b"x", {})
    finally:
        await session.close()
    assert isinstance(answer, Retry) and "timeout" in answer.reason


async def test_no_listener_is_a_retry_naming_the_connection_error() -> None:
    session = new_session(TLSClientConfig(), Duration(1))
    try:
        answer = await post(session, "http://127.0.0.1:9/in", b"x", {})
    finally:
        await session.close()
    assert isinstance(answer, Retry) and "connection error" in answer.reason
