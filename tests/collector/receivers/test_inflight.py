"""The in-flight budget: bytes held never exceed the limit (but for one oversize request alone), waiters go in
order, a waiter that gives up takes nothing; and the receivers answer every request under a tiny budget."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from collector.config import ConfigError, load_tree
from collector.receivers.inflight import InflightBudget
from tests.collector.receivers.test_bad_input import LOGS_METHOD, valid_protobuf


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def holder(budget: InflightBudget, size: int, release: asyncio.Event, log: list[str], name: str) -> None:
    async with budget.hold(size):
        log.append(name)
        await release.wait()


async def test_requests_within_the_limit_run_together_and_the_rest_wait_in_order() -> None:
    changes: list[int] = []
    waits: list[None] = []
    budget = InflightBudget(100, changes.append, lambda: waits.append(None))
    gates = {name: asyncio.Event() for name in "abcd"}
    log: list[str] = []
    tasks = [
        asyncio.create_task(holder(budget, size, gates[name], log, name))
        for name, size in (("a", 60), ("b", 40), ("c", 30), ("d", 10))
    ]
    await settle()
    assert log == ["a", "b"] and budget.in_use == 100
    assert budget.waiting == 2 and len(waits) == 2  # d fits in no room either: it queues behind c
    gates["a"].set()
    await settle()
    assert log == ["a", "b", "c", "d"] and budget.in_use == 80
    for gate in gates.values():
        gate.set()
    await asyncio.gather(*tasks)
    assert budget.in_use == 0 and changes[-1] == 0
    assert max(changes) <= 100


async def test_an_oversize_request_runs_alone() -> None:
    budget = InflightBudget(100)
    small_gate, big_gate = asyncio.Event(), asyncio.Event()
    log: list[str] = []
    small = asyncio.create_task(holder(budget, 10, small_gate, log, "small"))
    await settle()
    big = asyncio.create_task(holder(budget, 500, big_gate, log, "big"))
    await settle()
    assert log == ["small"]
    small_gate.set()
    await settle()
    assert log == ["small", "big"] and budget.in_use == 500
    big_gate.set()
    await asyncio.gather(small, big)
    assert budget.in_use == 0


async def test_a_waiter_that_gives_up_takes_nothing_and_lets_the_next_one_in() -> None:
    budget = InflightBudget(100)
    first_gate, other_gate = asyncio.Event(), asyncio.Event()
    log: list[str] = []
    first = asyncio.create_task(holder(budget, 90, first_gate, log, "first"))
    await settle()
    quitter = asyncio.create_task(holder(budget, 50, asyncio.Event(), log, "quitter"))
    await settle()
    behind = asyncio.create_task(holder(budget, 5, other_gate, log, "behind"))
    await settle()
    assert log == ["first"]  # "behind" would fit, but waits its turn behind "quitter"
    quitter.cancel()
    await settle()
    assert log == ["first", "behind"] and budget.in_use == 95
    first_gate.set()
    other_gate.set()
    await asyncio.gather(first, behind)
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert budget.in_use == 0 and budget.waiting == 0


async def test_cancelled_just_as_room_was_granted_gives_the_room_back() -> None:
    budget = InflightBudget(100)
    held = budget.hold(100)
    await held.__aenter__()
    log: list[str] = []
    waiter = asyncio.create_task(holder(budget, 100, asyncio.Event(), log, "waiter"))
    await settle()
    await held.__aexit__(None, None, None)  # grants the waiter its room without yielding to it...
    assert budget.in_use == 100
    waiter.cancel()  # ...and it is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert log == [] and budget.in_use == 0


async def test_what_a_request_turns_out_to_need_is_added_without_waiting_and_holds_back_others() -> None:
    changes: list[int] = []
    budget = InflightBudget(100, changes.append)
    log: list[str] = []
    async with budget.hold(10) as held:
        held.grow_to(90)  # e.g. a chunked body, or a gzip body once inflated: admitted already, so no wait
        held.grow_to(50)  # never shrinks while held
        assert held.size == 90 and budget.in_use == 90
        later = asyncio.create_task(holder(budget, 20, asyncio.Event(), log, "later"))
        await settle()
        assert log == [] and budget.waiting == 1
    await settle()
    assert log == ["later"] and budget.in_use == 20
    later.cancel()
    with pytest.raises(asyncio.CancelledError):
        await later
    assert budget.in_use == 0 and changes[-1] == 0 and 90 in changes


async def test_no_limit_means_no_accounting() -> None:
    budget = InflightBudget(0)
    async with budget.hold(10**12) as held:
        held.grow_to(10**13)
        assert budget.in_use == 0


@pytest.mark.parametrize("value", ["512KiB", "1"])
def test_a_budget_below_one_mib_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"receivers\.max_inflight_bytes"):
        load_tree({"receivers": {"max_inflight_bytes": value}})


async def test_receivers_answer_every_request_under_a_small_budget(bridge_factory: Callable[..., Any]) -> None:
    """Twenty 1-2 MB requests (HTTP, gzip, gRPC) against a 1 MiB budget: they take turns, each is stored."""
    bridge = await bridge_factory(overrides={"receivers": {"max_inflight_bytes": "1MiB"}})
    payloads = [valid_protobuf(2, {"pad": "x" * 1_200_000}) for _ in range(20)]

    async def post(session: aiohttp.ClientSession, i: int) -> int:
        body, headers = payloads[i].body, {"Content-Type": "application/x-protobuf"}
        if i % 2:
            body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
        async with session.post(f"{bridge.http_url}/v1/logs", data=body, headers=headers) as resp:
            return resp.status

    async def export(channel: aio.Channel, i: int) -> grpc.StatusCode:
        call = channel.unary_unary(LOGS_METHOD)
        await call(payloads[i].body, timeout=30)
        return grpc.StatusCode.OK

    options = [("grpc.max_send_message_length", 8 << 20)]
    async with aiohttp.ClientSession() as session, aio.insecure_channel(bridge.grpc_target, options=options) as ch:
        results = await asyncio.gather(*(post(session, i) for i in range(14)), *(export(ch, i) for i in range(14, 20)))
    assert results == [200] * 14 + [grpc.StatusCode.OK] * 6
    stored = {str(r["id"]) for r in bridge.records()}
    assert set().union(*(p.ids for p in payloads)) <= stored
    budget = bridge.service.http.ctx.inflight
    assert budget is bridge.service.grpc.ctx.inflight
    assert budget.in_use == 0 and budget.waits > 0
    metrics = bridge.service.metrics
    assert metrics.registry.get_sample_value("ccbridge_receiver_inflight_bytes") == 0
    assert metrics.registry.get_sample_value("ccbridge_receiver_inflight_waits_total") == budget.waits


async def test_an_http_request_whose_client_left_while_waiting_is_dropped(bridge_factory: Callable[..., Any]) -> None:
    bridge = await bridge_factory(overrides={"receivers": {"max_inflight_bytes": "1MiB"}})
    budget = bridge.service.http.ctx.inflight
    payload = valid_protobuf(2)
    host, port = bridge.http_url.removeprefix("http://").split(":")
    async with budget.hold(2 << 20):  # the whole budget taken: the request below must wait
        _reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST /v1/logs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(payload.body)}\r\n\r\n"
        )
        writer.write(head.encode() + payload.body)
        await writer.drain()
        for _ in range(100):
            if budget.waiting:
                break
            await asyncio.sleep(0.01)
        assert budget.waiting == 1
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.1)
    for _ in range(100):
        refused = bridge.service.metrics.registry.get_sample_value(
            "ccbridge_receiver_refused_requests_total",
            {"signal": "logs", "transport": "http", "reason": "client_gone"},
        )
        if refused:
            break
        await asyncio.sleep(0.01)
    assert refused == 1
    assert budget.in_use == 0
    assert not payload.ids & {str(r["id"]) for r in bridge.records()}


async def test_bytes_are_taken_as_they_arrive_and_an_owner_keeps_to_its_share() -> None:
    budget = InflightBudget(100, share=0.25)
    assert budget.share_limit == 25
    release = asyncio.Event()
    log: list[str] = []

    async def request(owner: str, first: int, grow: int, name: str) -> None:
        async with budget.hold(first, owner) as held:
            log.append(f"{name} admitted")
            if grow:
                await held.take(grow)
                log.append(f"{name} grew")
            await release.wait()

    # a slow sender of owner "a" holds what arrived (10), not what it declared
    a1 = asyncio.create_task(request("a", 10, 20, "a1"))
    await settle()
    assert log == ["a1 admitted", "a1 grew"] and budget.in_use == 20 and budget.held_by("a") == 20
    # a second request of "a" would take it past its share: it waits, while another owner is admitted at once
    a2 = asyncio.create_task(request("a", 10, 0, "a2"))
    b1 = asyncio.create_task(request("b", 10, 0, "b1"))
    await settle()
    assert "a2 admitted" not in log
    assert "b1 admitted" in log and budget.held_by("b") == 10
    release.set()
    await asyncio.gather(a1, a2, b1)
    assert budget.in_use == 0 and budget.held_by("a") == 0


async def test_growth_past_the_share_gives_way_to_waiting_requests_and_never_deadlocks() -> None:
    budget = InflightBudget(100, share=0.25)
    release = asyncio.Event()
    log: list[str] = []
    held_a: list[Any] = []

    async def big(owner: str) -> None:
        async with budget.hold(10, owner) as held:
            held_a.append(held)
            await held.take(90)  # past its share, but nobody waits: it grows
            log.append(f"{owner} at 90")
            await held.take(100)
            log.append(f"{owner} at 100")
            await release.wait()

    t = asyncio.create_task(big("a"))
    await settle()
    assert log == ["a at 90", "a at 100"]  # alone: even the whole budget
    release.set()
    await t
    # two big requests holding everything and both waiting to grow: the oldest goes on
    release.clear()
    log.clear()
    budget2 = InflightBudget(100, share=0.25)

    async def grower(owner: str, first: int, to: int) -> None:
        async with budget2.hold(first, owner) as held:
            await asyncio.sleep(0)
            await held.take(to)
            log.append(f"{owner} grew")
            await release.wait()

    g1 = asyncio.create_task(grower("x", 50, 80))
    g2 = asyncio.create_task(grower("y", 50, 80))
    await settle()
    assert log == ["x grew"]  # no deadlock: the oldest went on, over the budget
    release.set()
    await asyncio.gather(g1, g2)
    assert log == ["x grew", "y grew"] and budget2.in_use == 0


async def test_a_request_waiting_to_grow_that_times_out_gives_everything_back() -> None:
    budget = InflightBudget(100, share=0.25)
    release = asyncio.Event()

    async def hog() -> None:
        async with budget.hold(80, "hog"):
            await release.wait()

    h = asyncio.create_task(hog())
    await settle()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1), budget.hold(10, "slow") as held:
            await held.take(30)  # no room: waits until the deadline
    assert budget.in_use == 80 and budget.held_by("slow") == 0
    release.set()
    await h
    assert budget.in_use == 0
