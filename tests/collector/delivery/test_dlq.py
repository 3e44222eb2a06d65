"""Dead letters: grouping by batch and reason, purge by destination and age (module and CLI), replay giving up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import orjson
import pytest

from collector.delivery import dlq
from collector.delivery.engine import GaveUp
from collector.delivery.outcome import Outcome, Retry
from collector.delivery.settings import DestinationSettings
from collector.store import delivery_state as state_mod
from collector.store.delivery_state import DeliveryState, state_path
from collector.store.sqlite import AuditStore
from exporters.base import DeliveryRecord, Exporter, Payload
from tests.collector.delivery.delivery_support import run_cli

DAY = 86400.0


def rows(first: int, n: int) -> list[tuple[int, str, int, bytes]]:
    return [(s, f"r{s}", 1000 + s, b'{"id": "r%d"}' % s) for s in range(first, first + n)]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shard 0: http/a has a batch of 3 refused 10 days ago and a batch of 2 refused now; http/b one entry now."""
    clock = {"now": 1_800_000_000.0 - 10 * DAY}
    monkeypatch.setattr(state_mod.time, "time", lambda: clock["now"])
    AuditStore(tmp_path, shard=0).open().close()  # the store the dead letters belong to
    st = DeliveryState(state_path(tmp_path, 0))
    st.dead_letter("http/a", rows(1, 3), "HTTP 400: bad", 400, 1)
    clock["now"] = 1_800_000_000.0
    st.dead_letter("http/a", rows(10, 2), "HTTP 400: bad", 400, 1)
    st.dead_letter("http/b", rows(20, 1), "dropped (backlog limit, policy drop_oldest)", None, 0)
    st.close()
    monkeypatch.setattr(dlq.time, "time", lambda: clock["now"])
    return tmp_path


def test_groups_are_per_batch_and_reason(data_dir):
    groups = [(g.destination, g.batch, g.count, g.reason) for _, g in dlq.list_groups(data_dir)]
    assert groups == [
        ("http/a", "seq 1-3", 3, "HTTP 400: bad"),
        ("http/a", "seq 10-11", 2, "HTTP 400: bad"),
        ("http/b", "seq 20-20", 1, "dropped (backlog limit, policy drop_oldest)"),
    ]
    assert [g.count for _, g in dlq.list_groups(data_dir, "http/a")] == [3, 2]


def test_purge_by_destination_removes_only_that_destination(data_dir):
    result = dlq.purge(data_dir, destination="http/b")
    assert result.removed == 1
    assert [(g.destination, g.count) for _, g in result.groups] == [("http/b", 1)]
    assert {dl.destination for _, dl in dlq.list_entries(data_dir)} == {"http/a"}


def test_purge_by_age_removes_only_older_entries(data_dir):
    result = dlq.purge(data_dir, older_than=7 * DAY)
    assert [(g.destination, g.batch, g.count) for _, g in result.groups] == [("http/a", "seq 1-3", 3)]
    assert sorted(dl.record_id for _, dl in dlq.list_entries(data_dir)) == ["r10", "r11", "r20"]
    assert dlq.purge(data_dir, destination="http/a", older_than=7 * DAY).removed == 0


def test_cli_purge_prints_what_it_removed_and_list_groups(data_dir):
    code, out, err = run_cli(["dlq", "list", "--data-dir", str(data_dir)])
    assert code == 0, err
    lines = out.splitlines()[1:]
    assert len(lines) == 3
    assert "0-1..3" in lines[0] and " 3 " in lines[0] and "shard 0 seq 1-3" in lines[0]
    assert "6 dead letter(s) in 3 group(s)" in err

    code, out, err = run_cli(["dlq", "list", "--data-dir", str(data_dir), "--format", "jsonl"])
    docs = [orjson.loads(line) for line in out.splitlines()]
    assert [d["batch"] for d in docs[:3]] == ["shard 0 seq 1-3"] * 3

    code, out, err = run_cli(
        ["dlq", "purge", "--data-dir", str(data_dir), "--destination", "http/a", "--older-than", "7d"]
    )
    assert code == 0, err
    assert "removed 3 from http/a (shard 0 seq 1-3" in out
    assert "purged: 3 dead letter(s)" in out
    assert len(dlq.list_entries(data_dir)) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "name what to remove: --destination, --older-than, or --all"),
        (["--older-than", "a week"], "--older-than: invalid duration 'a week'"),
    ],
)
def test_cli_purge_refuses_without_a_filter_or_with_a_bad_age(data_dir, argv, message):
    code, _out, err = run_cli(["dlq", "purge", "--data-dir", str(data_dir), *argv])
    assert code == 2
    assert message in err
    assert len(dlq.list_entries(data_dir)) == 6


def test_cli_purge_all(data_dir):
    code, out, _err = run_cli(["dlq", "purge", "--data-dir", str(data_dir), "--all"])
    assert code == 0
    assert "purged: 6 dead letter(s)" in out
    assert dlq.list_entries(data_dir) == []


def test_state_written_before_batches_were_recorded_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "shard-0.delivery.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE dead_letters (dlq_id INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL, "
            "record_seq INTEGER NOT NULL, record_id TEXT NOT NULL, time_ms INTEGER NOT NULL, failed_ms INTEGER NOT "
            "NULL, reason TEXT NOT NULL, status INTEGER, attempts INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        conn.execute("INSERT INTO dead_letters VALUES (1, 'http/a', 1, 'r1', 1, 1, 'old', 400, 1, x'7b7d')")
    st = DeliveryState(path)
    assert [(dl.record_id, dl.batch) for dl in st.dead_letters()] == [("r1", "")]
    st.dead_letter("http/a", rows(5, 1), "new", 400, 1)
    assert [dl.batch for dl in st.dead_letters()] == ["", "seq 5-5"]
    st.close()


class DownExporter(Exporter):
    type_name: ClassVar[str] = "down"
    config_class: ClassVar[type[DestinationSettings]] = DestinationSettings

    def __init__(self) -> None:
        super().__init__("down/x", DestinationSettings())
        self.pushes = 0

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        return [Payload(records, b"")]

    async def push(self, payload: Payload) -> Outcome:
        self.pushes += 1
        return Retry("HTTP 503", 0.05, 503)


async def test_replay_gives_up_on_a_destination_that_keeps_failing_and_keeps_the_entries(tmp_path):
    st = DeliveryState(state_path(tmp_path, 0))
    st.dead_letter("down/x", rows(1, 3), "HTTP 400", 400, 1)
    exp = DownExporter()
    with pytest.raises(GaveUp, match="HTTP 503"):
        await asyncio.wait_for(dlq._replay_group(exp, st, st.dead_letters(), data_dir=tmp_path, wait=0.3), 5)
    assert exp.pushes >= 3
    assert len(st.dead_letters()) == 3
    st.close()
