"""``ccbridge approvals export`` from the local store: rows equal hand-built rows of the recorded Claude Code sessions,
filters, the span join, the join's edge cases, bad input, and bounded memory on 200k decisions."""

from __future__ import annotations

import csv
import io
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.approvals_export import generate_store
from collector import cli
from collector.compliance.approvals import (
    COLUMNS,
    ApprovalFilter,
    JoinStats,
    csv_cell,
    grouped_by_session,
    join,
    store_rows,
    write_rows,
)
from tests.collector.compliance.approvals_support import (
    EXPECTED_ROWS,
    HELLO,
    P_332_DETAILS,
    PERIOD,
    S_197_DENY,
    S_332_DETAILS,
    UID_332_DETAILS,
    replay_runs,
    row,
)


def export(capsys: pytest.CaptureFixture[str], data_dir: Path, *extra: str, fmt: str = "jsonl") -> tuple[int, str, str]:
    code = cli.main(
        ["approvals", "export", "--since", PERIOD[0], "--until", PERIOD[1], "--data-dir", str(data_dir),
         "--format", fmt, *extra]
    )  # fmt: skip
    out = capsys.readouterr()
    return code, out.out, out.err


def jsonl(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line]


def without_chain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "chain_hash"} for r in rows]


async def test_rows_equal_the_hand_built_rows_of_the_recorded_sessions(
    bridge: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    await replay_runs(bridge.http_url, bridge.grpc_target)
    code, out, err = export(capsys, bridge.data_dir)
    assert code == 0, err
    rows = jsonl(out)
    assert without_chain(rows) == EXPECTED_ROWS
    assert list(rows[0]) == list(COLUMNS)
    assert err.strip() == (
        "exported 17 decision(s) from 6 session(s): 16 succeeded, 0 failed, 1 rejected (not executed), "
        "0 without a recorded result"
    )
    chains = {r["id"]: (r.get("chain") or {}).get("hash") for r in bridge.records(kinds=("tool_decision",))}
    assert [r["chain_hash"] for r in rows] == [chains[r["record_id"]] for r in rows]

    code, out, _ = export(capsys, bridge.data_dir, fmt="csv")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [list(p) for p in parsed[:1]] == [list(COLUMNS)]
    as_csv = [{k: "" if v is None else v for k, v in r.items()} for r in rows]
    assert parsed == as_csv

    def only(**match: Any) -> list[dict[str, Any]]:
        return [r for r in EXPECTED_ROWS if all(r[k] == v for k, v in match.items())]

    cases: list[tuple[list[str], list[dict[str, Any]]]] = [
        (["--decision", "reject"], only(decision="reject")),
        (["--decision", "accept", "--tool", "Bash"], only(decision="accept", tool_name="Bash")),
        (["--tool", "Edit"], only(tool_name="Edit")),
        (["--user", "jdoe@example.com"], only(session_id=S_332_DETAILS)),
        (["--user", UID_332_DETAILS], only(session_id=S_332_DETAILS)),
        (["--mode", "automatic"], EXPECTED_ROWS),
        (["--mode", "manual"], []),
        (["--mode", "hook", "--user", "nobody@example.com"], []),
    ]
    for args, expected in cases:
        code, out, err = export(capsys, bridge.data_dir, *args)
        assert code == 0, (args, err)
        assert without_chain(jsonl(out)) == expected, args
        sessions = len({r["session_id"] for r in expected})
        assert f"exported {len(expected)} decision(s) from {sessions} session(s)" in err, args

    # a narrower period: only the deny run's decisions (21:58:03.653 and .817), the rm's bound exclusive
    code = cli.main(
        ["approvals", "export", "--since", "2026-11-25T21:58:03.653Z", "--until", "2026-11-25T21:58:03.817Z",
         "--data-dir", str(bridge.data_dir), "--format", "jsonl"]
    )  # fmt: skip
    rows = jsonl(capsys.readouterr().out)
    assert code == 0 and without_chain(rows) == only(session_id=S_197_DENY)[:1]


async def test_span_supplies_the_file_path_when_the_result_is_missing(
    bridge: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Details run without its third request: the Write's tool_result is missing; its claude_code.tool span is not."""
    await replay_runs(bridge.http_url, bridge.grpc_target, ["v2.1.332-http-json-details-traces"], lambda r: r.seq < 3)
    code, out, err = export(capsys, bridge.data_dir)
    assert code == 0, err
    expected = [
        row("2026-11-25T21:57:26.254Z", UID_332_DETAILS, S_332_DETAILS, P_332_DETAILS, "Bash",
            "toolu_fake_6223f58903ad448e9aa5", "840f736d0cd5e437c0f553042cbf25c8", email="jdoe@example.com",
            command="echo hi"),
        row("2026-11-25T21:57:26.422Z", UID_332_DETAILS, S_332_DETAILS, P_332_DETAILS, "Write",
            "toolu_fake_0e10689e60ca4987aec2", "51b450e4815dd55dff3bf3ef918c8f63", email="jdoe@example.com",
            path=HELLO, outcome="unknown"),
    ]  # fmt: skip
    assert without_chain(jsonl(out)) == expected
    assert "1 without a recorded result" in err


# ---------------------------------------------------------------------------------------------------------------
# the join itself


def rec(kind: str, t: int, use_id: str | None, session: str | None = "s1", **tool: Any) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"id": f"{kind}-{t}", "kind": kind, "time": f"t{t}", "tool": {"name": "Bash", **tool}}
    if use_id is not None:
        body["tool"]["use_id"] = use_id
    if session is not None:
        body["session"] = {"id": session}
    return t, body


ALL = ApprovalFilter(0, 10**15)


def outcomes(rows: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(r["tool_use_id"], r["outcome"]) for r in rows]


def test_join_edge_cases() -> None:
    records = [
        rec("tool_result", 10, "a", success=True),  # same millisecond as its decision, sorted before it
        rec("tool_decision", 10, "a", decision="accept"),
        rec("tool_decision", 11, "b", decision="accept"),
        rec("tool_result", 12, "b", success=False, error="exit 1"),
        rec("tool_decision", 13, None, decision="accept"),
        rec("tool_decision", 14, "c", decision="reject"),
        rec("tool_result", 15, "c", success=True),  # a result after a reject: the data says it ran
        rec("tool_decision", 16, "d", decision="reject"),
        rec("tool_result", 17, "zzz", success=True),  # a result without a decision
        rec("tool_decision", 18, "e", decision="accept"),
    ]
    stats = JoinStats()
    rows = list(join(grouped_by_session(records), ALL, stats=stats))
    assert outcomes(rows) == [
        ("a", "success"), ("b", "failure"), (None, "unknown"), ("c", "success"), ("d", "not_executed"),
        ("e", "unknown"),
    ]  # fmt: skip
    assert stats.outcomes == {"success": 2, "failure": 1, "not_executed": 1, "unknown": 2}
    assert stats.rows == 6 and stats.sessions == 1 and stats.evicted == 0


def test_a_huge_session_is_joined_within_max_pending_rows() -> None:
    """Decisions beyond max_pending are written early; results that follow closely are still joined."""
    records = []
    for i in range(50):
        records.append(rec("tool_decision", 2 * i, f"u{i}", decision="accept"))
        records.append(rec("tool_result", 2 * i + 1, f"u{i}", success=True))
    stats = JoinStats()
    rows = list(join(grouped_by_session(records), ALL, max_pending=4, stats=stats))
    assert [r["tool_use_id"] for r in rows] == [f"u{i}" for i in range(50)]
    assert {r["outcome"] for r in rows} == {"success"}
    assert stats.evicted == 46
    late = [rec("tool_decision", i, f"v{i}", decision="accept") for i in range(6)]
    late += [rec("tool_result", 10 + i, f"v{i}", success=True) for i in range(6)]
    rows = list(join(grouped_by_session(late), ALL, max_pending=4))
    assert outcomes(rows) == [("v0", "unknown"), ("v1", "unknown")] + [(f"v{i}", "success") for i in range(2, 6)]


def test_filters_and_ungrouped_input() -> None:
    records = [
        rec("tool_decision", 5, "a", decision="accept", approval_mode="manual"),
        rec("tool_decision", 6, "b", decision="accept", approval_mode="hook"),
        rec("tool_decision", 20, "c", decision="accept", approval_mode="manual"),
    ]
    flt = ApprovalFilter(0, 20, mode="manual")
    assert [r["tool_use_id"] for r in join(grouped_by_session(records), flt)] == ["a"]
    mixed = [rec("tool_decision", 1, "a", "s2"), rec("tool_decision", 2, "b", "s1"), rec("tool_decision", 3, "c", "s2")]
    with pytest.raises(ValueError, match="not grouped by session"):
        list(join(grouped_by_session(mixed), ALL))


def test_csv_neutralizes_spreadsheet_formulas() -> None:
    assert csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert csv_cell("+1") == "'+1"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("echo hi") == "echo hi"
    assert csv_cell(None) == ""
    buf = io.StringIO()
    r = dict.fromkeys(COLUMNS, None) | {"command": "printf 'a\nb' | wc -l", "outcome": "success"}
    assert write_rows([r], buf, "csv") == 1
    parsed = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert parsed[0]["command"] == "printf 'a\nb' | wc -l"


# ---------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> tuple[int, str]:
        try:
            code = cli.main(["approvals", "export", *args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    base = ["--since", PERIOD[0], "--until", PERIOD[1]]
    code, err = run(*base, "--data-dir", str(tmp_path / "none"))
    assert code == 1 and f"no store under {tmp_path / 'none'}" in err
    code, err = run("--since", PERIOD[1], "--until", PERIOD[0], "--data-dir", str(tmp_path))
    assert code == 2 and f"--since {PERIOD[1]}" in err and f"is not before --until {PERIOD[0]}" in err
    code, err = run(*base, "--decision", "maybe")
    assert code == 2 and "invalid choice: 'maybe'" in err
    code, err = run(*base, "--mode", "auto")
    assert code == 2 and "invalid choice: 'auto'" in err
    code, err = run(*base, "--format", "xml")
    assert code == 2 and "invalid choice: 'xml'" in err
    code, err = run("--until", PERIOD[1])
    assert code == 2 and "--since" in err
    code, err = run("--since", "yesterday-ish", "--until", PERIOD[1])
    assert code == 2 and "invalid time 'yesterday-ish'" in err
    code, err = run(*base, "--splunk-token-env", "X")
    assert code == 2 and "--splunk-* options need --from-splunk URL" in err


# ---------------------------------------------------------------------------------------------------------------
# bounded memory


def test_export_of_200k_decisions_stays_in_bounded_memory(tmp_path: Path) -> None:
    """200k decisions in 2000 sessions: the Python heap peak of the export is a few MiB, not the ~300 MiB the rows
    would take if held (bench/approvals_export.py measures 1M: see the README's compliance section)."""
    counts = generate_store(tmp_path, 200_000, per_session=100, lean=True)
    assert counts == {"decisions": 200_000, "results": 180_000, "rejects": 20_000, "sessions": 2000}
    stats = JoinStats()
    tracemalloc.start()
    try:
        n = 0
        for r in store_rows(tmp_path, ALL, stats=stats):
            n += 1
            assert r["outcome"] in ("success", "not_executed")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 200_000
    assert stats.outcomes == {"success": 180_000, "failure": 0, "not_executed": 20_000, "unknown": 0}
    assert stats.evicted == 0
    assert peak < 8 * 2**20, f"export heap peak {peak / 2**20:.1f} MiB"
