"""Audit-record export (``ccbridge audit export``): the analyst's filters and the CSV columns.

The store narrows by time, kind and session; :class:`RecordFilter` applies the rest to each decoded record: user
(email or ``user.id``), tool and decision and approval mode (all case-insensitive, exact), and ``text``, a
case-insensitive substring of the command or the file path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

CSV_COLUMNS = (
    ("id", "id"),
    ("time", "time"),
    ("kind", "kind"),
    ("event", "event"),
    ("user_email", "user.email"),
    ("user_id", "user.id"),
    ("user_account_uuid", "user.account_uuid"),
    ("organization_id", "organization.id"),
    ("session_id", "session.id"),
    ("prompt_id", "prompt.id"),
    ("sequence", "sequence"),
    ("tool_name", "tool.name"),
    ("tool_use_id", "tool.use_id"),
    ("decision", "tool.decision"),
    ("decision_source", "tool.decision_source"),
    ("approval_mode", "tool.approval_mode"),
    ("success", "tool.success"),
    ("command", "tool.command"),
    ("file_path", "file.path"),
    ("file_operation", "file.operation"),
    ("model", "model"),
    ("cost_usd", "cost_usd"),
    ("tokens_input", "tokens.input"),
    ("tokens_output", "tokens.output"),
    ("source_identity", "source.identity"),
    ("id_collision", "id_collision.id"),
)


def dig(rec: dict[str, Any], dotted: str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return str(v)


def csv_cell(v: Any) -> Any:
    """A cell of ``audit export --format csv``: numbers stay numbers, the rest as :func:`csv_value` (the safe CSV
    writer neutralizes what a spreadsheet would run as a formula)."""
    return v if isinstance(v, int | float) and not isinstance(v, bool) else csv_value(v)


def csv_row(rec: dict[str, Any]) -> list[Any]:
    return [csv_cell(dig(rec, path)) for _, path in CSV_COLUMNS]


def _fold(v: Any) -> str | None:
    return v.casefold() if isinstance(v, str) else None


@dataclass
class RecordFilter:
    """Per-record filters (None = any). ``seen_users``/``seen_tools`` collect what the scanned records had, so an
    empty result can say that no user or tool matched at all."""

    user: str | None = None
    tool: str | None = None
    decision: str | None = None
    mode: str | None = None
    text: str | None = None
    users_matched: bool = False
    tools_matched: bool = False
    _folded: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._folded = {k: _fold(getattr(self, k)) for k in ("user", "tool", "decision", "mode", "text")}

    @property
    def active(self) -> bool:
        return any(v is not None for v in self._folded.values())

    def admits(self, rec: dict[str, Any]) -> bool:
        f = self._folded
        if f["user"] is not None:
            user = rec.get("user") or {}
            if f["user"] not in (_fold(user.get("email")), _fold(user.get("id"))):
                return False
            self.users_matched = True
        tool = rec.get("tool") or {}
        if f["tool"] is not None:
            if _fold(tool.get("name")) != f["tool"]:
                return False
            self.tools_matched = True
        if f["decision"] is not None and _fold(tool.get("decision")) != f["decision"]:
            return False
        if f["mode"] is not None and _fold(tool.get("approval_mode")) != f["mode"]:
            return False
        if f["text"] is not None:
            hay = [_fold(tool.get("command")), _fold((rec.get("file") or {}).get("path"))]
            if not any(h is not None and f["text"] in h for h in hay):
                return False
        return True

    def explain_empty(self) -> str:
        """Why nothing matched, when a user or tool name matched no record at all ('' otherwise)."""
        reasons = []
        if self.user is not None and not self.users_matched:
            reasons.append(f"no user matches {self.user}")
        if self.tool is not None and not self.tools_matched:
            reasons.append(f"no tool matches {self.tool}")
        return "; ".join(reasons)


def filtered(bodies: Iterable[bytes], flt: RecordFilter) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """``(body, decoded record)`` of the bodies ``flt`` admits; the record is None when no filter needed it."""
    if not flt.active:
        for body in bodies:
            yield body, None
        return
    for body in bodies:
        rec = orjson.loads(body)
        if flt.admits(rec):
            yield body, rec
