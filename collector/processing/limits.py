"""Size caps of one attribute value and of one record, applied before redaction and normalization.

A request within the body limits can still carry one enormous value (58 KB of gzip inflates to a 60 MB attribute)
or a record of many large values; stored, redacted, encoded and handed to every destination, such a record costs
its size many times over. :func:`cap_strings` cuts every string (values and keys, at any depth) to at most
``max_value`` characters and all strings of one record to ``max_record`` characters in all; what it cut is counted in
a :class:`Truncation`, which the pipeline records on the audit record as ``attributes_truncated`` (``{"values": n,
"bytes": original size of the cut strings}``) so that a reader knows the record is not what was sent.

Lengths are counted in characters (a UTF-8 character is 1-4 bytes). The walk runs only for requests whose body
(after gunzip) is larger than ``max_value``: a smaller body cannot hold a longer string, so ordinary requests pay
nothing.
"""

from __future__ import annotations

from typing import Any

TRUNCATION_MARK = "...[truncated]"


class Truncation:
    """What :func:`cap_strings` cut from one record: ``values`` strings, of ``bytes`` characters before the cut;
    ``left`` is the record's remaining allowance."""

    __slots__ = ("bytes", "left", "values")

    def __init__(self, allowance: int) -> None:
        self.values = 0
        self.bytes = 0
        self.left = allowance

    def as_field(self) -> dict[str, int]:
        return {"values": self.values, "bytes": self.bytes}


def _cut(s: str, max_value: int, t: Truncation, key: bool = False) -> str:
    keep = max_value if key else min(max_value, t.left)  # a key is never cut for the record's allowance
    if len(s) <= keep:
        t.left -= len(s)
        return s
    t.values += 1
    t.bytes += len(s)
    kept = s[: max(0, keep - len(TRUNCATION_MARK))] + TRUNCATION_MARK if keep >= len(TRUNCATION_MARK) else ""
    t.left = max(0, t.left - len(kept))
    return kept


def cap_strings(value: Any, max_value: int, t: Truncation) -> Any:
    """``value`` with every string (and dict key) capped as the module docstring says; unchanged containers are
    returned as the same objects."""
    if isinstance(value, str):
        return _cut(value, max_value, t)
    if isinstance(value, dict):
        out: dict[Any, Any] | None = None
        for k, v in value.items():
            nk = _cut(k, max_value, t, key=True) if isinstance(k, str) else k
            nv = cap_strings(v, max_value, t)
            if out is None and (nk is not k or nv is not v):
                out = {}
                for k2, v2 in value.items():  # copy what came before unchanged
                    if k2 is k:
                        break
                    out[k2] = v2
            if out is not None:
                if nk in out:
                    nk = f"{nk}#{len(out)}"
                out[nk] = nv
        return value if out is None else out
    if isinstance(value, list | tuple):
        items = [cap_strings(v, max_value, t) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    return value
