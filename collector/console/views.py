"""Page bodies of the session, user and integrity pages (HTML built only through :mod:`collector.console.html`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from collector.console.html import Markup, esc, link, path_part, render, table, tag, url
from collector.console.integrity import IntegrityState
from collector.store.trail import MAX_TIMELINE, UserSummary

TOKEN_KINDS = ("input", "output", "cache_read", "cache_creation")


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _get(rec: dict[str, Any], *path: str) -> Any:
    cur: Any = rec
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def summary_of(rec: dict[str, Any]) -> tuple[str, str]:
    """A timeline line of a record: what happened, and the detail (command, path, error, prompt...)."""
    kind = rec.get("kind")
    tool = rec.get("tool") or {}
    name = tool.get("name") or ""
    if kind == "user_prompt":
        text = _get(rec, "prompt", "text")
        if isinstance(text, str):
            return "Prompt", text
        length = _get(rec, "prompt", "length")
        return "Prompt", f"(text not sent by the CLI; {length} characters)" if length is not None else "(text not sent)"
    if kind == "tool_decision":
        mode, source = tool.get("approval_mode", "?"), tool.get("decision_source", "?")
        what = f"{name}: {tool.get('decision', '?')} ({mode}, {source})"
        return what, str(tool.get("command") or _get(rec, "file", "path") or "")
    if kind == "tool_result":
        ok = tool.get("success")
        state = "succeeded" if ok is True else "failed" if ok is False else "finished"
        dur = tool.get("duration_ms")
        what = f"{name}: {state}" + (f" in {dur:g} ms" if isinstance(dur, int | float) else "")
        detail = tool.get("error") or tool.get("command") or _get(rec, "file", "path") or ""
        return what, str(detail)
    if kind == "file_change":
        return f"File {_get(rec, 'file', 'operation') or 'change'}", str(_get(rec, "file", "path") or "")
    if kind == "api_request":
        tokens = rec.get("tokens") or {}
        what = f"Model request: {rec.get('model', '?')}"
        detail = f"${_num(rec.get('cost_usd')):.4f}; tokens in {tokens.get('input', 0)}, out {tokens.get('output', 0)}"
        return what, detail
    if kind == "api_error":
        return (
            f"Model error: {rec.get('model', '?')}",
            f"{_get(rec, 'api', 'error') or ''} (status {_get(rec, 'api', 'status_code')})",
        )
    return str(rec.get("event") or kind), ""


def _days_around(first: str, last: str) -> dict[str, str]:
    """The whole UTC days a session spans, as a user-page period (``since`` and ``until`` dates)."""
    try:
        start = datetime.fromisoformat(first.replace("Z", "+00:00")).date()
        end = datetime.fromisoformat(last.replace("Z", "+00:00")).date() + timedelta(days=1)
    except ValueError:
        return {}
    return {"since": start.isoformat(), "until": end.isoformat()}


def session_content(session_id: str, records: list[dict[str, Any]]) -> Markup:
    cost = 0.0
    tokens = dict.fromkeys(TOKEN_KINDS, 0)
    requests = errors = 0
    user = host = version = ""
    rows = []
    for rec in records:
        kind = rec.get("kind")
        if kind == "api_request":
            requests += 1
            cost += _num(rec.get("cost_usd"))
            for k in TOKEN_KINDS:
                tokens[k] += int(_num((rec.get("tokens") or {}).get(k)))
        elif kind == "api_error":
            errors += 1
        user = user or str(_get(rec, "user", "email") or _get(rec, "user", "id") or "")
        host = host or str((rec.get("resource") or {}).get("host.name") or "")
        version = version or str(_get(rec, "app", "version") or "")
        what, detail = summary_of(rec)
        rows.append(
            Markup(
                f'<tr data-kind="{esc(kind)}" data-id="{esc(rec.get("id"))}">'
                f'<td class="mono">{esc(rec.get("time"))}</td><td>{esc(kind)}</td><td>{esc(what)}</td>'
                f'<td class="mono">{esc(detail)}</td></tr>'
            )
        )
    head = "".join(f"<th>{h}</th>" for h in ("Time", "Kind", "What", "Detail"))
    timeline = Markup(f'<table id="timeline"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    if len(records) >= MAX_TIMELINE:
        note = (
            f"Only the first {MAX_TIMELINE} records of this session are shown; "
            "ccbridge audit export --session has them all."
        )
        timeline = Markup(timeline + tag("p", note, "note"))
    period = _days_around(str(records[0].get("time", "")), str(records[-1].get("time", ""))) if records else {}
    user_html = link(url("/users/" + path_part(user), period), user) if user else esc("unknown")
    tok = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in tokens.items())
    return render(
        "session.html",
        session_id=session_id,
        user=user_html,
        host=host or "unknown",
        cli_version=version or "unknown",
        first=records[0].get("time", "") if records else "",
        last=records[-1].get("time", "") if records else "",
        cost=f"${cost:.4f}",
        tokens=tok,
        requests=requests,
        errors=errors,
        timeline=timeline,
    )


def user_content(summary: UserSummary, given: dict[str, str], resolved: dict[str, str]) -> Markup:
    rows = [
        (
            link(url("/sessions/" + path_part(s.session_id)), s.session_id) if s.session_id else esc("(no session)"),
            s.first,
            s.last,
            s.decisions,
            s.rejected,
            f"${s.cost_usd:.4f}",
        )
        for s in summary.sessions
    ]
    sessions = table(("Session", "First", "Last", "Decisions", "Rejected", "Cost"), rows, "sessions")
    if summary.truncated:
        sessions = Markup(sessions + esc(f"Only the {len(summary.sessions)} most recent sessions are listed."))
    trail = link(
        url("/approvals", {"user": summary.user, **{k: resolved[k] for k in ("since", "until")}}),
        "This user's approval trail",
    )
    return render(
        "user.html",
        since=given.get("since", ""),
        until=given.get("until", ""),
        period_since=resolved["since"],
        period_until=resolved["until"],
        trail_link=trail,
        n_sessions=len(summary.sessions),
        n_decisions=summary.decisions,
        n_rejected=summary.rejected,
        n_prompts=summary.prompts,
        cost=f"${summary.cost_usd:.4f}",
        sessions=sessions,
    )


def _when(ts: float | None) -> str:
    if ts is None:
        return "not yet"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def integrity_content(state: IntegrityState, heads: list[dict[str, Any]]) -> Markup:
    if state.verified_at is None:
        result, cls = ("running" if state.running else "not verified yet"), ""
    elif state.ok is True:
        result, cls = f"intact: {state.records} records in {state.shards} shard(s)", "ok"
    elif state.ok is False:
        result, cls = "BROKEN", "bad"
    else:
        result, cls = state.error or "unknown", ""
    b = state.broken
    broken = (
        f"shard {b.shard}, seq {b.seq}, record {b.record_id} at {_when(b.time_ms / 1000)}: {b.reason}"
        if b is not None
        else "none"
    )
    chains = table(
        ("Shard", "Verified up to seq", "Head hash"),
        [(shard, seq, h) for shard, (seq, h) in sorted(state.heads.items())],
        "chains",
    )
    head_rows = [
        (
            r.get("time"),
            _get(r, "chain_head", "host"),
            _get(r, "chain_head", "shard"),
            _get(r, "chain_head", "seq"),
            _get(r, "chain_head", "hash"),
        )
        for r in heads
    ]
    return render(
        "integrity.html",
        verified_at=_when(state.verified_at) + (f" (took {state.duration_s:.1f} s)" if state.verified_at else ""),
        result=result,
        result_class=cls,
        records=state.records,
        broken=broken,
        next=_when(state.next_at),
        chains=chains,
        heads=table(("Published", "Host", "Shard", "Seq", "Hash"), head_rows, "heads")
        if head_rows
        else esc("No chain head has been published yet (storage.chain_head_interval)."),
    )
