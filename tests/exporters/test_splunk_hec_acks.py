"""The acknowledgement poller: one poll for every outstanding ackId, read-once results, per-id timeouts, errors that
pass versus fatal ones, and closing with waiters outstanding. The query is a scripted stand-in for ``/ack``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from exporters.splunk_hec.acks import AckPoller, AckQueryError, AckState


class ScriptedAcks:
    """Acknowledges ids in ``ready`` (once, like Splunk), records every poll, can raise a queued error."""

    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.polls: list[list[int]] = []
        self.errors: list[Exception] = []

    async def __call__(self, ids: list[int]) -> dict[int, bool]:
        self.polls.append(list(ids))
        if self.errors:
            raise self.errors.pop(0)
        out = {i: i in self.ready for i in ids}
        self.ready -= {i for i, ok in out.items() if ok}
        return out


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_outstanding_ids_share_one_poll_and_each_waiter_gets_its_own_ack():
    q = ScriptedAcks()
    poller = AckPoller(q, interval=0.02, timeout=5)
    waits = [asyncio.create_task(poller.wait(i)) for i in range(5)]
    await until(lambda: len(q.polls) >= 2)
    assert q.polls[0] == [0, 1, 2, 3, 4]  # one request for all of them
    q.ready |= {1, 3}
    await until(lambda: waits[1].done() and waits[3].done())
    assert not any(w.done() for i, w in enumerate(waits) if i not in (1, 3))
    assert (await waits[1]).state is AckState.ACKED
    await until(lambda: q.polls[-1] == [0, 2, 4])  # acknowledged ids are forgotten (read-once)
    q.ready |= {0, 2, 4}
    assert [r.state for r in await asyncio.gather(*waits)] == [AckState.ACKED] * 5
    await poller.close()


async def test_an_id_never_acknowledged_times_out_while_others_succeed():
    q = ScriptedAcks()
    poller = AckPoller(q, interval=0.02, timeout=0.3)
    q.ready.add(1)
    started = time.monotonic()
    stuck, fine = await asyncio.gather(poller.wait(0), poller.wait(1))
    assert fine.state is AckState.ACKED
    assert stuck.state is AckState.TIMEOUT
    assert "ackId 0" in stuck.reason and "0.3s" in stuck.reason
    assert 0.3 <= time.monotonic() - started < 2.0
    assert poller.outstanding == []
    await poller.close()


async def test_poll_errors_that_may_pass_keep_polling():
    q = ScriptedAcks()
    q.errors = [AckQueryError("HTTP 503, HEC code 9: Server is busy"), AckQueryError("connection error")]
    poller = AckPoller(q, interval=0.02, timeout=5)
    q.ready.add(7)
    assert (await poller.wait(7)).state is AckState.ACKED
    assert len(q.polls) == 3
    await poller.close()


async def test_a_query_that_raises_unexpectedly_does_not_stop_polling():
    q = ScriptedAcks()
    q.errors = [RuntimeError("bug")]
    poller = AckPoller(q, interval=0.02, timeout=5)
    q.ready.add(1)
    assert (await poller.wait(1)).state is AckState.ACKED
    await poller.close()


async def test_a_fatal_poll_error_fails_every_waiter_at_once():
    q = ScriptedAcks()
    q.errors = [AckQueryError("HTTP 403, HEC code 4: Invalid token", fatal=True)]
    poller = AckPoller(q, interval=0.02, timeout=30)
    results = await asyncio.gather(poller.wait(0), poller.wait(1))
    assert [r.state for r in results] == [AckState.FAILED, AckState.FAILED]
    assert "Invalid token" in results[0].reason
    await poller.close()


async def test_close_resolves_waiters_and_a_new_wait_restarts_polling():
    q = ScriptedAcks()
    poller = AckPoller(q, interval=0.02, timeout=30)
    w = asyncio.create_task(poller.wait(0))
    await until(lambda: len(q.polls) >= 1)
    await poller.close()
    result = await w
    assert result.state is AckState.FAILED and "closed" in result.reason
    q.ready.add(1)
    assert (await poller.wait(1)).state is AckState.ACKED
    await poller.close()


async def test_a_cancelled_waiter_is_no_longer_polled():
    q = ScriptedAcks()
    poller = AckPoller(q, interval=0.02, timeout=30)
    w0 = asyncio.create_task(poller.wait(0))
    w1 = asyncio.create_task(poller.wait(1))
    await until(lambda: len(q.polls) >= 1)
    w0.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w0
    polls_before = len(q.polls)
    await until(lambda: len(q.polls) > polls_before)
    assert q.polls[-1] == [1]
    q.ready.add(1)
    assert (await w1).state is AckState.ACKED
    await poller.close()
