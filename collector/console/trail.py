"""The access trail: a ``trail_access`` audit record for every page view and export by a reviewer."""

from __future__ import annotations

import hashlib
import secrets
import socket
from typing import Any

from collector.processing.normalize import SCHEMA_VERSION, rfc3339_ms


def trail_access_record(
    *,
    reviewer: str,
    source_address: str,
    page: str,
    filter: dict[str, str],
    rows: int,
    now_ns: int,
    method: str = "",
    status: int = 200,
    export_format: str | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """The audit record of one look at the trail (who, from where, which page and filter, how many rows)."""
    stamp = rfc3339_ms(now_ns)
    host = host or socket.gethostname()
    access: dict[str, Any] = {
        "reviewer": reviewer,
        "source_address": source_address,
        "page": page,
        "filter": filter,
        "rows": rows,
        "status": status,
    }
    if method:
        access["method"] = method
    if export_format is not None:
        access["format"] = export_format
    nonce = secrets.token_hex(8)
    rid = hashlib.sha256(f"trail_access\x1f{host}\x1f{now_ns}\x1f{nonce}".encode()).hexdigest()[:32]
    return {
        "schema_version": SCHEMA_VERSION,
        "id": rid,
        "kind": "trail_access",
        "event": "ccbridge.trail_access",
        "time": stamp,
        "observed_time": stamp,
        "received_time": stamp,
        "trail_access": access,
        "scope": {"name": "ccbridge.console", "version": ""},
        "attributes": {},
        "resource": {"service.name": "ccbridge", "host.name": host},
    }
