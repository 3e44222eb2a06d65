"""Approval-trail export benchmark: generate N tool decisions (and their results) in a store, export them, measure.

Usage::

    .venv/bin/python bench/approvals_export.py --decisions 1000000 [--per-session 100] [--data-dir DIR] [--keep]

The store is filled through :class:`collector.store.sqlite.AuditStore` (so records get their chain links like real
ones) with records shaped like the normalizer's output: sessions of ``--per-session`` decisions, one every 2 s, each
accepted call followed 50 ms later by its ``tool_result`` (every tenth call is rejected and has none). Then:

1. ``ccbridge approvals export --format csv`` runs as a child process writing to ``/dev/null``; its wall time and
   peak resident set size (``ru_maxrss`` of that child from ``wait4``: Python heap, SQLite page cache and sorter,
   everything) are reported. The store is generated in another child first, so this process stays small and the
   export child does not inherit a large address space when it is forked;
2. with ``--trace``, the same export runs again in this process under ``tracemalloc`` to report the peak Python heap
   it allocated (slow: tracing roughly triples the export time).

:func:`generate_store` is also used by the bounded-memory test of the export.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from collector.store.sqlite import AuditStore

BASE_MS = 1_793_000_000_000  # 2026-10-27T08:53:20Z
SESSION_GAP_MS = 10_000
DECISION_GAP_MS = 2_000
RESULT_DELAY_MS = 50
CHUNK = 20_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _record(
    kind: str, session: str, seq: int, t_ms: int, user: dict[str, str], tool: dict[str, Any], lean: bool = False
) -> dict[str, Any]:
    rid = f"{kind[5]}{session[-12:]}{seq:08d}".ljust(32, "0")[:32]
    if lean:
        return {"id": rid, "kind": kind, "time": iso(t_ms), "session": {"id": session}, "user": user, "tool": tool}
    return {
        "schema_version": "1.0",
        "id": rid,
        "kind": kind,
        "event": f"claude_code.{kind}",
        "time": iso(t_ms),
        "observed_time": iso(t_ms),
        "received_time": iso(t_ms + 400),
        "sequence": seq,
        "session": {"id": session},
        "prompt": {"id": f"prompt-{session[-8:]}-{seq // 10:04d}"},
        "user": user,
        "organization": {"id": "3f0c5b8e-9a43-4c55-9d0c-2a7f0e4c1b11"},
        "app": {"version": "2.1.332"},
        "tool": tool,
        "source": {"transport": "grpc"},
        "scope": {"name": "com.anthropic.claude_code.events", "version": "2.1.332"},
        "attributes": {"session.id": session, "event.sequence": seq, "tool_name": tool["name"]},
        "resource": {"service.name": "claude-code", "service.version": "2.1.332"},
    }


def generate_store(
    data_dir: str | Path, decisions: int, per_session: int = 100, reject_every: int = 10, lean: bool = False
) -> dict[str, int]:
    """Fill a store with ``decisions`` tool decisions and the results of the accepted ones; returns the counts.

    ``lean`` records carry only what the approval export reads (faster to generate, for tests).
    """
    counts = {"decisions": 0, "results": 0, "rejects": 0, "sessions": 0}
    rows: list[tuple[str, int, str, str | None, str | None, str | None, int, bytes]] = []
    tools = (("Bash", "echo hi"), ("Edit", None), ("Read", None), ("Write", None))
    with AuditStore(data_dir, synchronous="normal", writer="thread") as store:
        n = 0
        session_no = 0
        while n < decisions:
            session = f"5e55{session_no:08x}-0000-4000-8000-{session_no:012x}"
            user = {"id": f"{session_no % 500:064x}", "email": f"dev{session_no % 500}@example.com"}
            start = BASE_MS + session_no * SESSION_GAP_MS
            counts["sessions"] += 1
            for j in range(min(per_session, decisions - n)):
                name, command = tools[j % len(tools)]
                reject = reject_every > 0 and (n % reject_every) == reject_every - 1
                use_id = f"toolu_{session_no:08x}{j:06d}"
                t = start + j * DECISION_GAP_MS
                tool = {
                    "name": name,
                    "use_id": use_id,
                    "decision": "reject" if reject else "accept",
                    "decision_source": "user_reject" if reject else "config",
                    "approval_mode": "manual" if reject else "automatic",
                }
                if command:
                    tool["command"] = command
                rec = _record("tool_decision", session, 2 * j, t, user, tool, lean)
                rows.append(_row(rec, t))
                counts["decisions"] += 1
                if reject:
                    counts["rejects"] += 1
                else:
                    result_tool = {"name": name, "use_id": use_id, "success": True, "duration_ms": 12}
                    res = _record("tool_result", session, 2 * j + 1, t + RESULT_DELAY_MS, user, result_tool, lean)
                    if name in ("Edit", "Write"):
                        res["file"] = {"path": f"/home/dev/project/src/file{j}.py", "operation": name.lower()}
                    rows.append(_row(res, t + RESULT_DELAY_MS))
                    counts["results"] += 1
                n += 1
                if len(rows) >= CHUNK:
                    store.append_sync(records=rows)
                    rows = []
            session_no += 1
        if rows:
            store.append_sync(records=rows)
    return counts


def _row(rec: dict[str, Any], t_ms: int) -> tuple[str, int, str, str | None, str | None, str | None, int, bytes]:
    user = rec["user"]
    return (
        rec["id"],
        t_ms,
        rec["kind"],
        user["email"],
        user["id"],
        rec["session"]["id"],
        t_ms + 400,
        orjson.dumps(rec),
    )


def export_window() -> tuple[str, str]:
    """``--since`` / ``--until`` covering every generated decision."""
    return iso(BASE_MS - 1000), "2030-01-01T00:00:00Z"


def measure_child(data_dir: Path) -> dict[str, Any]:
    since, until = export_window()
    cmd = [sys.executable, "-m", "collector.cli", "approvals", "export", "--since", since, "--until", until]
    cmd += ["--data-dir", str(data_dir), "--format", "csv"]
    started = time.perf_counter()
    with open(os.devnull, "w") as sink, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        err.seek(0)
        summary = err.read().strip()
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({proc.returncode}): {summary}")
    return {
        "export_seconds": round(elapsed, 2),
        "export_max_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "summary": summary,
    }


def measure_tracemalloc(data_dir: Path) -> dict[str, float]:
    from collector.compliance.approvals import ApprovalFilter, JoinStats, store_rows

    _, until = export_window()
    flt = ApprovalFilter(BASE_MS - 1000, int(datetime.fromisoformat(until[:-1] + "+00:00").timestamp() * 1000))
    stats = JoinStats()
    tracemalloc.start()
    started = time.perf_counter()
    n = sum(1 for _ in store_rows(data_dir, flt, stats=stats))
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"rows": n, "seconds_traced": round(elapsed, 2), "python_heap_peak_mib": round(peak / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=1_000_000)
    ap.add_argument("--per-session", type=int, default=100)
    ap.add_argument("--data-dir", help="where to build the store (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated store")
    ap.add_argument("--trace", action="store_true", help="also measure the Python heap peak with tracemalloc")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="ccbridge-approvals-bench-"))
    if args.generate_only:
        print(json.dumps(generate_store(data_dir, args.decisions, args.per_session)))
        return 0
    try:
        started = time.perf_counter()
        gen = [sys.executable, __file__, "--generate-only", "--data-dir", str(data_dir)]
        gen += ["--decisions", str(args.decisions), "--per-session", str(args.per_session)]
        out = subprocess.run(gen, check=True, capture_output=True, text=True).stdout
        counts = json.loads(out)
        gen_s = time.perf_counter() - started
        db_bytes = sum(p.stat().st_size for p in (data_dir / "store").glob("shard-*"))
        result: dict[str, Any] = {
            "decisions": counts["decisions"],
            "results": counts["results"],
            "sessions": counts["sessions"],
            "generate_seconds": round(gen_s, 1),
            "store_mib": round(db_bytes / 2**20, 1),
            "bench_process_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        result.update(measure_child(data_dir))
        if args.trace:
            result.update(measure_tracemalloc(data_dir))
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
