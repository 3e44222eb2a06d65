"""The repository stands on its own: no source, test or document points at files outside it, and the schema page
lists every record kind the bridge writes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from collector.processing.normalize import KINDS

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"/work/|shared/specs|\.\./shared")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / n.decode() for n in out.split(b"\0") if n]


def test_nothing_points_outside_the_repository() -> None:
    offenders = []
    me = Path(__file__).resolve()
    for path in tracked_files():
        if path.resolve() == me or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


def test_schema_lists_every_kind() -> None:
    text = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `kind` |"))
    missing = [k for k in KINDS if f"`{k}`" not in row]
    assert not missing, f"docs/schema.md's kind row lacks {missing}"
