"""``ccbridge status``: the state of delivery and reception, from a running bridge or from its data directory.

A running bridge answers ``GET /status`` on its telemetry endpoint (:meth:`collector.service.Service.status`). When
none answers, :func:`status_from_store` reads the data directory instead: per destination its backlog (records
after its cursor, the oldest one's age) and dead letters; last success, last error and the receivers' counts
exist only in a running bridge and are shown as unknown.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.store import open_reader


class StatusUnavailable(Exception):
    """No bridge answered at the URL."""


def fetch_status(base_url: str, timeout: float = 3.0, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """``GET {base_url}/status`` of a running bridge; :class:`StatusUnavailable` when none answers."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/status", timeout=timeout, context=context) as resp:
            doc = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StatusUnavailable(f"no bridge answers at {base_url}: {getattr(exc, 'reason', exc)}") from None
    if not isinstance(doc, dict):
        raise StatusUnavailable(f"{base_url}/status did not answer a JSON object")
    return doc


def status_from_store(data_dir: str | Path, destinations: list[str] | None = None) -> dict[str, Any]:
    """Backlog and dead letters per destination as recorded in ``data_dir`` (bridge running or not): the
    ``destinations`` named (from the config; one that never delivered has no cursor yet) and every destination
    with a cursor or dead letters."""
    dests: dict[str, dict[str, Any]] = {}
    now = time.time()
    store = open_reader(data_dir)
    with_state = set(store.delivery_state_shards())
    for shard in store.shards():
        if shard not in with_state:
            continue
        state = store.delivery_state(shard)
        reader = store.shard_log(shard)
        try:
            names = set(state.cursors()) | set(destinations or ())
            with contextlib.suppress(Exception):
                names |= {dl.destination for dl in state.dead_letters()}
            last = reader.last_seq()
            for name in sorted(names):
                cursor = state.cursor(name)
                d = dests.setdefault(
                    name,
                    {
                        "backlog_records": 0,
                        "backlog_bytes": None,
                        "oldest_age_seconds": 0.0,
                        "last_success": None,
                        "last_error": None,
                        "last_error_time": None,
                        "dead_letters": 0,
                    },
                )
                d["backlog_records"] += max(0, last - cursor)
                oldest = reader.oldest_received_after(cursor) if last > cursor else None
                if oldest:
                    d["oldest_age_seconds"] = max(d["oldest_age_seconds"], round(now - oldest / 1000, 1))
                d["dead_letters"] += state.dead_letter_count(name)
        finally:
            reader.close()
            state.close()
    return {"source": f"data directory {data_dir} (no running bridge answered)", "destinations": dests}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    age = max(0.0, time.time() - ts)
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"{stamp} ({_age(age)} ago)"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def render_text(doc: dict[str, Any]) -> str:
    """The status as an operator reads it: one block per destination, then the receivers."""
    lines = [f"source: {doc.get('source', '?')}"]
    if doc.get("version"):
        lines.append(f"version: {doc['version']}")
    dests = doc.get("destinations") or {}
    if not dests:
        lines.append("destinations: none")
    for name, d in sorted(dests.items()):
        size = d.get("backlog_bytes")
        size_text = "" if size is None else f", ~{int(size)} bytes"
        lines.append(f"destination {name}:")
        lines.append(
            f"  backlog: {d.get('backlog_records', 0)} records{size_text}, "
            f"oldest {_age(float(d.get('oldest_age_seconds') or 0))}"
        )
        lines.append(f"  last success: {_when(d.get('last_success'))}")
        err = d.get("last_error")
        lines.append(f"  last error: {_when(d.get('last_error_time'))} {err}" if err else "  last error: -")
        lines.append(f"  dead letters: {d.get('dead_letters', 0)}")
    rcv = doc.get("receivers")
    if rcv is None:
        lines.append("receivers: unknown (only a running bridge knows)")
    else:
        accepted = rcv.get("accepted") or {}
        refused = rcv.get("refused") or {}
        lines.append("receivers (since the bridge started):")
        for k, v in sorted(accepted.items()):
            lines.append(f"  accepted {k}: {v}")
        for k, v in sorted(refused.items()):
            lines.append(f"  refused {k}: {v}")
        if not accepted and not refused:
            lines.append("  nothing received yet")
    return "\n".join(lines) + "\n"
