"""The strict HTTP sink (:mod:`tests.fakes.http_sink`) does what the delivery tests rely on: it refuses what a real
destination would refuse, records deliveries by id, and its programmed failures happen exactly as asked."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import PROJECT_ROOT
from tests.fakes.http_sink import HttpSink

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(*ids: str) -> bytes:
    return b"".join(orjson.dumps({"id": i, "kind": "event"}) + b"\n" for i in ids)


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as s:
        yield s


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as c:
        yield c


async def post(
    client: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async with client.post(url, data=body, headers=NDJSON if headers is None else headers) as resp:
        return resp.status, dict(resp.headers), orjson.loads(await resp.read())


async def test_accepts_ndjson_json_array_and_gzip_and_records_by_id(sink, client):
    assert (await post(client, sink.url, ndjson("a", "b")))[0] == 200
    body = orjson.dumps([{"id": "c"}, {"id": "a"}])
    assert (await post(client, sink.url, body, {"Content-Type": "application/json; charset=utf-8"}))[0] == 200
    packed = gzip.compress(ndjson("d"))
    assert (await post(client, sink.url, packed, {**NDJSON, "Content-Encoding": "gzip"}))[0] == 200
    assert sink.ids() == {"a", "b", "c", "d"}
    assert sink.count("a") == 2
    assert sink.duplicates() == 1
    assert [r.ids for r in sink.requests] == [["a", "b"], ["c", "a"], ["d"]]
    assert sink.records["b"] == {"id": "b", "kind": "event"}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (ndjson("a"), {"Content-Type": "text/plain"}, 415),
        (ndjson("a"), {"Content-Type": "application/x-ndjson", "Content-Encoding": "br"}, 415),
        (b"not gzip", {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}, 400),
        (b"", NDJSON, 400),
        (b'{"id":"a"}', NDJSON, 400),  # no final newline
        (b'{"id":"a"}\n\n{"id":"b"}\n', NDJSON, 400),  # blank line
        (b'{"kind":"event"}\n', NDJSON, 400),  # no id
        (b'{"id":""}\n', NDJSON, 400),
        (b"[1]\n", NDJSON, 400),
        (b'{"id":"a"}', {"Content-Type": "application/json"}, 400),  # not an array
        (b"[]", {"Content-Type": "application/json"}, 400),
    ],
)
async def test_refuses_malformed_requests_and_keeps_nothing_of_them(sink, client, body, headers, status):
    got, _, _ = await post(client, sink.url, body, headers)
    assert got == status
    assert sink.ids() == set()
    assert sink.requests[-1].status == status


async def test_wrong_path_and_method(sink, client):
    async with client.post(sink.url + "x", data=ndjson("a"), headers=NDJSON) as resp:
        assert resp.status == 404
    async with client.get(sink.url) as resp:
        assert resp.status == 405


async def test_fail_for_answers_503_with_retry_after_until_the_window_ends(sink, client):
    sink.fail_for(0.5, status=503, retry_after="2")
    status, headers, _ = await post(client, sink.url, ndjson("a"))
    assert (status, headers.get("Retry-After")) == (503, "2")
    assert sink.ids() == set()
    assert sink.requests[0].ids == ["a"]  # refused requests are logged with what they carried
    await asyncio.sleep(0.6)
    assert (await post(client, sink.url, ndjson("a")))[0] == 200
    assert sink.ids() == {"a"}


async def test_reject_records_and_fail_requests(sink, client):
    sink.reject_records(["bad"], status=400, body="bad record")
    status, _, body = await post(client, sink.url, ndjson("ok1", "bad"))
    assert (status, body) == (400, {"error": "bad record"})
    assert (await post(client, sink.url, ndjson("ok2")))[0] == 200
    sink.fail_requests([4], status=500)
    assert (await post(client, sink.url, ndjson("ok3")))[0] == 200  # request 3
    assert (await post(client, sink.url, ndjson("ok4")))[0] == 500  # request 4
    assert (await post(client, sink.url, ndjson("ok4")))[0] == 200
    assert sink.ids() == {"ok2", "ok3", "ok4"}
    sink.clear()
    assert (await post(client, sink.url, ndjson("bad")))[0] == 200


async def test_throttle_with_an_http_date(sink, client):
    sink.throttle_with_date(60, retry_in=30)
    status, headers, _ = await post(client, sink.url, ndjson("a"))
    assert status == 429
    when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert 28 <= when - time.time() <= 31


async def test_delay_slows_answers(sink, client):
    sink.set_delay(0.3)
    started = time.monotonic()
    assert (await post(client, sink.url, ndjson("a")))[0] == 200
    assert time.monotonic() - started >= 0.3


async def test_stop_refuses_connections_and_start_listens_on_the_same_port(sink, client):
    url = sink.url
    await sink.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(client, url, ndjson("a"))
    await sink.start()
    assert sink.url == url
    assert (await post(client, url, ndjson("a")))[0] == 200


async def test_wait_for_ids_times_out_naming_what_is_missing(sink, client):
    await post(client, sink.url, ndjson("a"))
    await sink.wait_for_ids(["a"], timeout=1)
    with pytest.raises(TimeoutError, match="1 of 2 ids"):
        await sink.wait_for_ids(["a", "b"], timeout=0.2)


# ---------------------------------------------------------------------------------------------------------------
# as a process, with the control API


@pytest.fixture
def sink_process() -> Iterator[tuple[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.http_sink", "--port", "0"],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url, control = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url, control
    finally:
        proc.terminate()  # this test's own process, by its pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


async def test_process_mode_control_api(sink_process, client):
    url, control = sink_process
    assert (await post(client, url, ndjson("a")))[0] == 200
    async with client.post(control + "/rules", json={"status": 503, "retry_after": "2", "seconds": 30}) as r:
        assert r.status == 200
    status, headers, _ = await post(client, url, ndjson("b"))
    assert (status, headers["Retry-After"]) == (503, "2")
    async with client.post(control + "/clear") as r:
        assert r.status == 200
    async with client.post(control + "/down") as r:
        assert r.status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(client, url, ndjson("c"))
    async with client.post(control + "/up") as r:
        assert (await r.json())["url"] == url
    assert (await post(client, url, ndjson("c")))[0] == 200
    async with client.get(control + "/state") as r:
        state = await r.json()
    assert set(state["received"]) == {"a", "c"}
    assert [q["status"] for q in state["requests"]] == [200, 503, 200]
    assert all(isinstance(t, float) for t in state["received"]["a"])
