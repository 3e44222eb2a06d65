"""Dead-letter replay deletes exactly the entries the destination confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from collector.delivery.dlq import _replay_group
from collector.delivery.outcome import Outcome, Partial, Success
from collector.delivery.settings import DestinationSettings
from collector.store.delivery_state import DeliveryState
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
            return Partial(1, "record 1 refused")
        return Success()


async def test_partial_then_several_payloads_deletes_only_confirmed_entries(tmp_path):
    state = DeliveryState(tmp_path / "shard-0.delivery.db")
    rows = [(i, f"r{i}", 1000 + i, b'{"id": "r%d"}' % i) for i in range(1, 8)]
    state.dead_letter("scripted/x", rows, "400", 400, 1)
    exp = ScriptedExporter()
    delivered, failed = await _replay_group(exp, state, state.dead_letters("scripted/x"))
    assert (delivered, failed) == (6, 1)
    assert [dl.record_id for dl in state.dead_letters("scripted/x")] == ["r2"]
    sent = [rid for p in exp.pushed for rid in p]
    assert sorted(set(sent) - {"r2"}) == ["r1", "r3", "r4", "r5", "r6", "r7"]
    state.close()
