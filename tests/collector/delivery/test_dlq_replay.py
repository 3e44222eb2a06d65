"""Dead-letter replay (by command and automatic) goes through the engine's delivery loop and deletes exactly the
entries the destination confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from collector.configtypes import Duration
from collector.delivery.dlq import _replay_group
from collector.delivery.engine import DestinationWorker
from collector.delivery.outcome import Outcome, Partial, Refused, Retry, Success
from collector.delivery.retry import RetrySettings
from collector.delivery.settings import DeadLetterSettings, DestinationSettings
from collector.store.delivery_state import DeliveryState
from collector.store.reader import ShardReader
from collector.telemetry.selfmetrics import SelfMetrics
from exporters.base import DeliveryRecord, Exporter, Payload


class ScriptedExporter(Exporter):
    """Two records per payload; the first push answers Partial(1), everything after succeeds."""

    type_name: ClassVar[str] = "scripted"
    config_class: ClassVar[type[DestinationSettings]] = DestinationSettings

    def __init__(self) -> None:
        super().__init__("scripted/x", DestinationSettings())
        self.pushed: list[list[str]] = []

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(records[i : i + 2], b"") for i in range(0, len(records), 2)]

    async def push(self, payload: Payload) -> Outcome:
        self.pushed.append([r.id for r in payload.records])
        if len(self.pushed) == 1:
            return Partial(payload.records[:1], [Refused(payload.records[1], "record 1 refused")], reason="refused")
        return Success()


async def test_partial_then_several_payloads_deletes_only_confirmed_entries(tmp_path):
    state = DeliveryState(tmp_path / "shard-0.delivery.db")
    rows = [(i, f"r{i}", 1000 + i, b'{"id": "r%d"}' % i) for i in range(1, 8)]
    state.dead_letter("scripted/x", rows, "400", 400, 1)
    exp = ScriptedExporter()
    delivered, failed = await _replay_group(exp, state, state.dead_letters("scripted/x"), data_dir=tmp_path)
    assert (delivered, failed) == (6, 1)
    assert [dl.record_id for dl in state.dead_letters("scripted/x")] == ["r2"]
    sent = [rid for p in exp.pushed for rid in p]
    assert sorted(set(sent) - {"r2"}) == ["r1", "r3", "r4", "r5", "r6", "r7"]
    state.close()


class FlakyExporter(Exporter):
    """Answers Retry to its first ``failures`` pushes, then accepts everything; remembers what it accepted."""

    type_name: ClassVar[str] = "flaky"
    config_class: ClassVar[type[DestinationSettings]] = DestinationSettings

    def __init__(self, failures: int, **settings: object) -> None:
        cfg = DestinationSettings(
            retry=RetrySettings(initial_interval=Duration(0.01), max_interval=Duration(0.02)),
            **settings,  # type: ignore[arg-type]
        )
        super().__init__("flaky/x", cfg)
        self.failures = failures
        self.accepted: list[str] = []

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(records, b"")]

    async def push(self, payload: Payload) -> Outcome:
        if self.failures > 0:
            self.failures -= 1
            return Retry("HTTP 503", None, 503)
        self.accepted += [r.id for r in payload.records]
        return Success()


def _worker(exp: Exporter, state: DeliveryState, tmp_path) -> DestinationWorker:
    return DestinationWorker(
        exp, 0, ShardReader(tmp_path / "none.db", 0), state, SelfMetrics(), asyncio.Event(), asyncio.Event()
    )


def _batch(first: int, n: int) -> list[DeliveryRecord]:
    return [DeliveryRecord(s, f"n{s}", b"{}", s) for s in range(first, first + n)]


async def test_recovery_after_retryable_failures_replays_dead_letters_through_the_engine(tmp_path):
    state = DeliveryState(tmp_path / "shard-0.delivery.db")
    state.dead_letter("flaky/x", [(1, "r1", 1, b"{}"), (2, "r2", 2, b"{}")], "HTTP 400", 400, 1)
    exp = FlakyExporter(failures=3)
    w = _worker(exp, state, tmp_path)
    await w._deliver(_batch(10, 2))  # retried through the outage, never dead-lettered
    assert w._replay_task is not None
    assert await asyncio.wait_for(w._replay_task, 5) == (2, 0)
    assert exp.accepted == ["n10", "n11", "r1", "r2"]
    assert state.dead_letters() == []
    state.close()


async def test_no_replay_without_an_outage_or_with_auto_replay_off(tmp_path):
    state = DeliveryState(tmp_path / "shard-0.delivery.db")
    state.dead_letter("flaky/x", [(1, "r1", 1, b"{}")], "HTTP 400", 400, 1)
    healthy = _worker(FlakyExporter(failures=0), state, tmp_path)
    await healthy._deliver(_batch(10, 1))
    assert healthy._replay_task is None
    off = _worker(FlakyExporter(failures=2, dead_letter=DeadLetterSettings(auto_replay=False)), state, tmp_path)
    await off._deliver(_batch(20, 1))
    assert off._replay_task is None
    assert len(state.dead_letters()) == 1
    state.close()


async def test_a_refused_replay_keeps_the_entry_with_its_new_reason_and_one_more_attempt(tmp_path):
    state = DeliveryState(tmp_path / "shard-0.delivery.db")
    state.dead_letter("scripted/x", [(1, "r1", 1, b"{}"), (2, "r2", 2, b"{}")], "HTTP 400: old", 400, 1)
    exp = ScriptedExporter()
    w = _worker(exp, state, tmp_path)
    assert await w.replay_entries(state.dead_letters()) == (1, 1)
    (left,) = state.dead_letters()
    assert (left.record_id, left.reason, left.attempts) == ("r2", "record 1 refused", 2)
    state.close()


class ForgetfulExporter(Exporter):
    """Answers a Partial that accounts for only some records (accepts the first, refuses the second, forgets the
    rest) on its first push; accepts everything afterwards."""

    type_name: ClassVar[str] = "forgetful"
    config_class: ClassVar[type[DestinationSettings]] = DestinationSettings

    def __init__(self) -> None:
        super().__init__("forgetful/x", DestinationSettings())
        self.pushed: list[list[str]] = []

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(records, b"")]

    async def push(self, payload: Payload) -> Outcome:
        self.pushed.append([r.id for r in payload.records])
        if len(self.pushed) == 1:
            return Partial(payload.records[:1], [Refused(payload.records[1], "bad", 400)], reason="partly")
        return Success()


async def test_partial_outcome_records_the_exporter_did_not_account_for_are_sent_again(tmp_path):
    from collector.delivery.engine import Settled

    state = DeliveryState(tmp_path / "shard-0.delivery.db")
    exp = ForgetfulExporter()
    w = _worker(exp, state, tmp_path)
    batch = _batch(1, 4)
    settled = Settled()
    await w._send(batch, settled)
    assert exp.pushed == [["n1", "n2", "n3", "n4"], ["n3", "n4"]]
    assert settled.delivered == [batch[0], batch[2], batch[3]]
    assert settled.refused == [([batch[1]], "bad", 400, 1)]
    state.close()
