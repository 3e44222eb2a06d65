"""``ccbridge audit export`` (filters, formats, errors, bounded memory) and ``ccbridge demo`` against a live bridge."""

from __future__ import annotations

import asyncio
import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import cli
from collector.pipeline import record_row
from collector.processing.decode import LogEvent
from collector.processing.normalize import KINDS, event_time_ns, normalize_log
from collector.store import RecordQuery, iter_records
from collector.store.sqlite import AuditStore

NOW = datetime.now(UTC).replace(microsecond=0)


def ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000


def event(name: str, when: datetime, session: str, seq: int, user: dict[str, str], **attrs: Any) -> LogEvent:
    return LogEvent(
        resource={"service.name": "claude-code", "service.version": "2.1.332"},
        scope_name="com.anthropic.claude_code.events",
        scope_version="2.1.332",
        time_unix_nano=ns(when),
        observed_time_unix_nano=ns(when),
        severity_number=0,
        severity_text="",
        body=f"claude_code.{name}",
        event_name="",
        attributes={"session.id": session, "event.sequence": seq, "event.name": name, **user, **attrs},
        trace_id="",
        span_id="",
        flags=0,
    )


ALICE = {"user.id": "u-alice", "user.email": "alice@example.com"}
BOB = {"user.id": "u-bob", "enduser.id": "bob@example.com"}
CAROL = {"user.id": "u-carol"}
T1 = datetime(2024, 3, 10, 10, 0, tzinfo=UTC)  # fixed dates, far from the relative "now" records
T2 = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


def sample_events() -> list[LogEvent]:
    return [
        event("user_prompt", T1, "s1", 0, ALICE, prompt_length="12", **{"prompt.id": "p1"}),
        event(
            "tool_decision",
            T1 + timedelta(seconds=1),
            "s1",
            1,
            ALICE,
            tool_name="Bash",
            decision="accept",
            source="user_temporary",
            tool_parameters='{"full_command":"ls -la"}',
        ),
        event(
            "tool_result",
            T1 + timedelta(seconds=2),
            "s1",
            2,
            ALICE,
            tool_name="Write",
            success="true",
            tool_input='{"file_path":"/home/dev/project/a.py","content":"x"}',
        ),
        event(
            "api_request",
            T1 + timedelta(seconds=3),
            "s1",
            3,
            ALICE,
            model="claude-opus-5-5",
            cost_usd=0.25,
            input_tokens=100,
            output_tokens=20,
        ),
        event("api_error", T2, "s2", 0, BOB, model="claude-opus-5-5", status_code=500, error="fake failure"),
        event("plugin_loaded", T2 + timedelta(seconds=1), "s2", 1, BOB, **{"plugin.name": "x"}),
        event("user_prompt", NOW - timedelta(hours=2), "s3", 0, CAROL, prompt_length="3"),
        event("user_prompt", NOW - timedelta(hours=48), "s3", 1, CAROL, prompt_length="4"),
    ]


def store_events(data_dir: Path, events: list[LogEvent]) -> list[dict[str, Any]]:
    received = ns(NOW)
    rows = []
    for ev in events:
        for rec in normalize_log(ev, received, "http"):
            rows.append(record_row(rec, event_time_ns(ev, received), received // 1_000_000))
    with AuditStore(data_dir) as store:
        store.append_sync(records=rows)
    return [orjson.loads(b) for b in iter_records(data_dir, RecordQuery())]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    store_events(d, sample_events())
    return d


def export(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["audit", "export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def export_ids(capsys, data_dir: Path, *args: str) -> list[tuple[str, str]]:
    code, out, err = export(capsys, "--data-dir", str(data_dir), *args)
    assert code == 0, err
    recs = [orjson.loads(line) for line in out.splitlines()]
    assert f"exported {len(recs)} records" in err
    return [(r["kind"], r["session"]["id"]) for r in recs]


# ---------------------------------------------------------------------------------------------------------------
# formats


def test_jsonl_lines_equal_the_stored_records(capsys, data_dir):
    stored = [orjson.loads(b) for b in iter_records(data_dir, RecordQuery())]
    code, out, err = export(capsys, "--data-dir", str(data_dir))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(stored) == 9  # 8 events + 1 derived file_change
    assert [orjson.loads(line) for line in lines] == stored
    assert "exported 9 records" in err


def test_jsonl_is_the_default_and_explicit_format_is_the_same(capsys, data_dir):
    _, default, _ = export(capsys, "--data-dir", str(data_dir))
    _, explicit, _ = export(capsys, "--data-dir", str(data_dir), "--format", "jsonl")
    assert default == explicit


def test_csv_header_and_rows(capsys, data_dir):
    code, out, err = export(capsys, "--data-dir", str(data_dir), "--format", "csv")
    assert code == 0, err
    reader = csv.reader(io.StringIO(out))
    header = next(reader)
    assert header == [c for c, _ in cli.CSV_COLUMNS]
    rows = [dict(zip(header, r, strict=True)) for r in reader]
    assert len(rows) == 9
    stored = [orjson.loads(b) for b in iter_records(data_dir, RecordQuery())]
    assert [r["id"] for r in rows] == [s["id"] for s in stored]
    by_kind = {r["kind"]: r for r in rows if r["session_id"] != "s3"}
    decision = by_kind["tool_decision"]
    assert decision["user_email"] == "alice@example.com"
    assert decision["user_id"] == "u-alice"
    assert decision["tool_name"] == "Bash"
    assert decision["decision"] == "accept"
    assert decision["decision_source"] == "user_temporary"
    assert decision["approval_mode"] == "manual"
    assert decision["command"] == "ls -la"
    assert decision["sequence"] == "1"
    assert decision["time"] == "2024-03-10T10:00:01.000Z"
    change = by_kind["file_change"]
    assert change["file_path"] == "/home/dev/project/a.py"
    assert change["file_operation"] == "write"
    assert by_kind["tool_result"]["success"] == "true"
    api = by_kind["api_request"]
    assert (api["model"], api["cost_usd"], api["tokens_input"], api["tokens_output"]) == (
        "claude-opus-5-5",
        "0.25",
        "100",
        "20",
    )
    assert by_kind["api_error"]["user_email"] == "bob@example.com"
    assert by_kind["event"]["tool_name"] == ""


def test_csv_quotes_awkward_values(capsys, tmp_path):
    d = tmp_path / "d"
    cmd = 'echo "a,b"\nrm -rf x'
    store_events(
        d,
        [
            event(
                "tool_decision",
                T1,
                "s9",
                0,
                ALICE,
                tool_name="Bash",
                tool_parameters=orjson.dumps({"full_command": cmd}).decode(),
            )
        ],
    )
    code, out, _ = export(capsys, "--data-dir", str(d), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["command"] == cmd


def test_empty_store_exports_nothing(capsys, tmp_path):
    d = tmp_path / "d"
    AuditStore(d).open().close()
    code, out, err = export(capsys, "--data-dir", str(d))
    assert (code, out) == (0, "")
    assert "exported 0 records" in err
    code, out, _ = export(capsys, "--data-dir", str(d), "--format", "csv")
    assert out.splitlines() == [",".join(c for c, _ in cli.CSV_COLUMNS)]


# ---------------------------------------------------------------------------------------------------------------
# filters


def test_since_and_until_as_dates(capsys, data_dir):
    got = export_ids(capsys, data_dir, "--since", "2024-03-10", "--until", "2024-03-11")
    assert sorted(got) == sorted(
        [
            ("user_prompt", "s1"),
            ("tool_decision", "s1"),
            ("tool_result", "s1"),
            ("file_change", "s1"),
            ("api_request", "s1"),
        ]
    )
    got = export_ids(capsys, data_dir, "--since", "2024-03-11", "--until", "2024-03-16")
    assert sorted(got) == [("api_error", "s2"), ("event", "s2")]


def test_since_and_until_as_rfc3339(capsys, data_dir):
    got = export_ids(capsys, data_dir, "--since", "2024-03-10T10:00:01Z", "--until", "2024-03-10T10:00:03Z")
    assert sorted(got) == [("file_change", "s1"), ("tool_decision", "s1"), ("tool_result", "s1")]
    # with an offset: 11:00:02+01:00 is 10:00:02Z; since is inclusive, until exclusive
    got = export_ids(capsys, data_dir, "--since", "2024-03-10T11:00:02+01:00", "--until", "2024-03-10T10:00:03.001Z")
    assert sorted(got) == [("api_request", "s1"), ("file_change", "s1"), ("tool_result", "s1")]
    got = export_ids(capsys, data_dir, "--since", "2024-03-10T10:00:00.001Z", "--until", "2024-03-10T10:00:01Z")
    assert got == []


def test_since_as_an_age(capsys, data_dir):
    assert export_ids(capsys, data_dir, "--since", "24h") == [("user_prompt", "s3")]
    assert export_ids(capsys, data_dir, "--since", "3d", "--session", "s3") == [
        ("user_prompt", "s3"),
        ("user_prompt", "s3"),
    ]
    assert export_ids(capsys, data_dir, "--until", "24h", "--session", "s3") == [("user_prompt", "s3")]


def test_kind_is_repeatable(capsys, data_dir):
    assert export_ids(capsys, data_dir, "--kind", "api_request") == [("api_request", "s1")]
    got = export_ids(capsys, data_dir, "--kind", "file_change", "--kind", "api_error", "--kind", "event")
    assert got == [("file_change", "s1"), ("api_error", "s2"), ("event", "s2")]  # time order


@pytest.mark.parametrize(
    ("user", "sessions"),
    [
        ("alice@example.com", {"s1"}),
        ("u-alice", {"s1"}),
        ("bob@example.com", {"s2"}),  # email from enduser.id
        ("u-bob", {"s2"}),
        ("u-carol", {"s3"}),  # no email: user.id only
        ("nobody@example.com", set()),
    ],
)
def test_user_by_email_or_user_id(capsys, data_dir, user, sessions):
    got = export_ids(capsys, data_dir, "--user", user)
    assert {s for _, s in got} == sessions


def test_session_filter_combined_with_kind(capsys, data_dir):
    assert export_ids(capsys, data_dir, "--session", "s1", "--kind", "user_prompt") == [("user_prompt", "s1")]
    assert export_ids(capsys, data_dir, "--session", "nope") == []


def test_config_file_supplies_the_data_dir(capsys, data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  directory: {data_dir}\n")
    code, out, _ = export(capsys, "--config", str(cfg), "--kind", "api_error")
    assert code == 0
    assert [orjson.loads(line)["kind"] for line in out.splitlines()] == ["api_error"]


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_unknown_kind_is_a_usage_error(capsys, data_dir):
    with pytest.raises(SystemExit) as exc:
        cli.main(["audit", "export", "--data-dir", str(data_dir), "--kind", "tool_decision", "--kind", "bogus"])
    assert exc.value.code == 2
    _, err = capsys.readouterr()
    assert "invalid choice: 'bogus'" in err
    for kind in KINDS:
        assert kind in err
    assert err.count("usage:") == 1  # the sub-command's usage, once


@pytest.mark.parametrize("value", ["tomorrow", "2026-13-01", "24x", "20260301", ""])
def test_bad_time_is_a_usage_error(capsys, data_dir, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(["audit", "export", "--data-dir", str(data_dir), "--since", value])
    assert exc.value.code == 2
    _, err = capsys.readouterr()
    assert "invalid time" in err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_missing_data_dir_is_a_clear_error(capsys, tmp_path, fmt):
    missing = tmp_path / "does-not-exist"
    code, _, err = export(capsys, "--data-dir", str(missing), "--format", fmt)
    assert code == 1
    assert f"no store under {missing}" in err
    assert "Traceback" not in err
    assert not missing.exists()  # export never creates a store


def test_unreadable_config_is_reported(capsys, tmp_path):
    code, _, err = export(capsys, "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "invalid configuration" in err


# ---------------------------------------------------------------------------------------------------------------
# streaming


class _CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self.bytes += len(data)
        self.lines += data.count(b"\n")
        return len(data)


@pytest.mark.slow
def test_export_streams_in_bounded_memory(tmp_path, monkeypatch):
    n, pad = 50_000, 1000
    d = tmp_path / "big"
    base = ns(T1) // 1_000_000
    with AuditStore(d) as store:
        for start in range(0, n, 5000):
            rows = []
            for i in range(start, start + 5000):
                body = orjson.dumps({"id": f"{i:032x}", "kind": "event", "time": "x", "pad": "p" * pad})
                rows.append((f"{i:032x}", base + i, "event", "u", "u", "s", base, body))
            store.append_sync(records=rows)
    total_bytes = n * pad
    sink = _CountingSink()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BufferedWriter(sink), encoding="utf-8"))
    tracemalloc.start()
    try:
        code = cli.main(["audit", "export", "--data-dir", str(d), "--format", "jsonl"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0
    assert sink.lines == n
    assert sink.bytes > total_bytes
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {total_bytes / 2**20:.0f} MiB export"


# ---------------------------------------------------------------------------------------------------------------
# demo


async def test_demo_against_a_running_bridge_produces_every_kind_it_simulates(bridge, capsys):
    code = await asyncio.to_thread(
        cli.main, ["demo", "--endpoint", bridge.http_url, "--sessions", "2", "--prompts", "2"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "sent" in out
    records = bridge.records()
    kinds = {r["kind"] for r in records}
    assert {"user_prompt", "tool_decision", "tool_result", "api_request", "file_change"} <= kinds
    emails = {r["user"]["email"] for r in records}
    assert emails == {"demo.user1@example.com", "demo.user2@example.com"}
    assert len({r["session"]["id"] for r in records}) == 2
    assert all(r["source"]["transport"] == "http" for r in records)
    assert bridge.count("metric_points") > 0
    # the demo's suggested next step works on what it sent
    code = await asyncio.to_thread(cli.main, ["audit", "export", "--data-dir", str(bridge.data_dir), "--format", "csv"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert len(out.splitlines()) == len(records) + 1


async def test_demo_reports_an_unreachable_bridge(capsys):
    from tests.conftest import free_port

    code = await asyncio.to_thread(cli.main, ["demo", "--endpoint", f"http://127.0.0.1:{free_port()}"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "cannot reach the bridge" in err
