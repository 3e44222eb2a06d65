"""The store's ``decisions`` table: one row per stored tool decision, kept by triggers, backfilled once."""

from __future__ import annotations

import contextlib

from collector.store.sqlite import AuditStore, connect, shard_path
from tests.collector.console.console_support import T0, session_records, write_store

CALLS = [
    {"name": "Bash", "decision": "reject", "source": "user_reject", "command": "rm -rf /"},
    {"name": "Edit", "decision": "accept", "source": "hook", "path": "/a.py"},
]


def decisions(data_dir) -> list[tuple]:
    with contextlib.closing(connect(shard_path(data_dir, 0), readonly=True)) as conn:
        return conn.execute("SELECT time_ms, user, tool, decision, mode FROM decisions ORDER BY seq").fetchall()


def test_rows_follow_inserts_duplicates_and_retention(tmp_path):
    recs = session_records("s1", "a@example.com", T0, CALLS)
    write_store(tmp_path, recs)
    write_store(tmp_path, recs)  # a retried batch: stored once, one decision row each
    assert decisions(tmp_path) == [
        (T0 + 1000, "a@example.com", "Bash", "reject", "manual"),
        (T0 + 2000, "a@example.com", "Edit", "accept", "hook"),
    ]
    with contextlib.closing(connect(shard_path(tmp_path, 0))) as conn:
        conn.execute("DELETE FROM records WHERE kind = 'tool_decision' AND time_ms = ?", (T0 + 1000,))
    assert [d[2] for d in decisions(tmp_path)] == ["Edit"]


def test_a_store_written_before_the_table_is_backfilled_once(tmp_path):
    write_store(tmp_path, session_records("s1", "a@example.com", T0, CALLS))
    with contextlib.closing(connect(shard_path(tmp_path, 0))) as conn:
        conn.executescript(
            "DROP TRIGGER records_decisions_insert; DROP TRIGGER records_decisions_delete; DROP TABLE decisions;"
            "DELETE FROM meta WHERE key = 'decisions_backfilled';"
        )
    AuditStore(tmp_path).open().close()
    assert [d[3] for d in decisions(tmp_path)] == ["reject", "accept"]


def test_a_malformed_body_is_stored_with_empty_decision_fields(tmp_path):
    with AuditStore(tmp_path) as store:
        store.append_sync(records=[("f" * 32, T0, "tool_decision", "u", "u", "s", T0, b"not json")])
        assert store.count() == 1
    assert decisions(tmp_path) == [(T0, "u", None, None, None)]
