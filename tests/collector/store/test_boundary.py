"""Only ``collector/store/`` knows the store's tables and file names: a scan of the source outside it.

Fails on any string literal (docstrings aside) in ``collector/`` or ``exporters/`` outside ``collector/store/`` that
holds an SQL statement (``SELECT ... FROM``, ``INSERT INTO``, ``UPDATE ... SET``, ``DELETE FROM``, ``CREATE
TABLE/INDEX``, ``PRAGMA``) or builds/parses a shard file name (``"shard-"``, ``shard-*.db``, ``shard-{n}.db``,
``.delivery.db``). On the code before the storage interface (commit 427618e) it reports 53 violations in
collector/compliance/approvals.py, collector/delivery/engine.py, collector/delivery/state.py, collector/delivery/dlq.py,
collector/enrich/usage_store.py, collector/reports/sources.py and both exporters' tailers; checked once by running
:func:`violations` on a checkout of that commit.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("collector", "exporters")
OWNER = Path("collector") / "store"

SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bUPDATE\b(?:\s+\w+)?\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:TABLE|(?:UNIQUE\s+)?INDEX)\b"
    r"|\bPRAGMA\b"
)
SHARD_NAME = re.compile(r"shard-(?:$|\*|\{|\d)|\.delivery\.db|shard-[^\s\"']*\.db")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def violations(root: Path) -> list[str]:
    """``path:line: text`` for every offending literal under ``root``'s scanned packages."""
    found = []
    for package in SCANNED:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel.is_relative_to(OWNER):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(rel))
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Constant) or id(node) in skip:
                    continue
                value = node.value
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if not isinstance(value, str):
                    continue
                if SQL.search(value) or SHARD_NAME.search(value):
                    found.append(f"{rel}:{node.lineno}: {value.strip()[:80]!r}")
    return found


def test_no_sql_or_shard_file_names_outside_the_store() -> None:
    found = violations(PROJECT_ROOT)
    assert not found, "store internals outside collector/store/:\n" + "\n".join(found)


def test_the_scan_catches_what_it_is_meant_to(tmp_path: Path) -> None:
    """The patterns flag the shapes the old code had, and leave ordinary prose and log messages alone."""
    pkg = tmp_path / "collector" / "reports"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text(
        '"""Module docstring may say SELECT x FROM y."""\n'
        'A = "SELECT body FROM metric_points WHERE seq > ?"\n'
        'B = "INSERT OR IGNORE INTO records(id) VALUES (?)"\n'
        'C = "ON CONFLICT(destination) DO UPDATE SET seq = excluded.seq"\n'
        'D = "DELETE FROM dead_letters WHERE dlq_id = ?"\n'
        'E = "CREATE INDEX IF NOT EXISTS x ON t(a)"\n'
        'F = "PRAGMA table_info(records)"\n'
        'G = p.stem.removeprefix("shard-")\n'
        'H = base.glob("shard-*.delivery.db")\n'
        'I = f"shard-{n}.db"\n'
        'ok1 = "select the records from the store"\n'
        'ok2 = "delivery worker %s/shard-%d crashed"\n'
    )
    (tmp_path / "exporters").mkdir()
    (tmp_path / "collector" / "store").mkdir()
    (tmp_path / "collector" / "store" / "ok.py").write_text('Q = "SELECT 1 FROM records"\n')
    lines = sorted(int(v.split(":")[1]) for v in violations(tmp_path))
    assert lines == [2, 3, 4, 5, 6, 7, 8, 9, 10]
