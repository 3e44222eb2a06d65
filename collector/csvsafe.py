"""The one CSV writer of every export (``audit export``, ``approvals export``, report CSV): safe to open in a
spreadsheet.

Two defences, both applied to every cell:

- **Formula neutralization** (CSV injection, OWASP "CSV Injection"): a text cell whose first character, after any
  leading whitespace and control characters, is one a spreadsheet starts a formula with (``= + - @``, their
  full-width forms U+FF1D U+FF0B U+FF0D U+FF20) or that itself starts with a tab or carriage return, is prefixed
  with ``'`` so it is shown as text.
  Numbers (``int``/``float`` values, not text) are written as they are: ``-3`` stays a number.
- **Quoting**: a cell holding the delimiter, a quote, CR or LF is always quoted (RFC 4180), so a bare CR cannot end
  a row early and start the next line with the attacker's text. Python's :mod:`csv` module decides that quoting by
  the line terminator, which is why rows are formatted here rather than by ``csv.writer``.

Rows end with ``\\n``; :func:`csv.reader` reads every row back with its cells unchanged (apart from the ``'``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import IO, Any

FORMULA_START = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
"""Characters a spreadsheet starts a formula with, ASCII and full-width."""
_ALWAYS = frozenset("\t\r\n")
_NEEDS_QUOTES = frozenset(',"\r\n')


def _ignorable(ch: str) -> bool:
    """Whitespace and control/format characters a spreadsheet may skip before reading a formula."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp")


def neutralize(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet could read it as a formula."""
    if not text:
        return text
    first = text[0]
    if first in FORMULA_START or first in _ALWAYS:
        return "'" + text
    if first.isalnum():  # the common case, decided at once
        return text
    for ch in text:
        if ch in FORMULA_START:
            return "'" + text
        if not _ignorable(ch):
            return text
    return text


def cell(value: Any) -> str:
    """The text of one cell: ``None`` empty, booleans ``true``/``false``, numbers as they are, text neutralized."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return str(value)
    return neutralize(value if isinstance(value, str) else str(value))


def format_row(values: Iterable[Any]) -> str:
    """One CSV line (with its ``\\n``) of ``values``, each through :func:`cell` and quoted when it must be."""
    out = []
    for v in values:
        s = cell(v)
        if not _NEEDS_QUOTES.isdisjoint(s):
            s = '"' + s.replace('"', '""') + '"'
        out.append(s)
    return ",".join(out) + "\n"


class SafeCsvWriter:
    """``writerow`` like :func:`csv.writer`, with every cell neutralized and quoted as :mod:`collector.csvsafe`
    describes."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def writerow(self, values: Iterable[Any]) -> None:
        self._out.write(format_row(values))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: IO[str]) -> SafeCsvWriter:
    """A :class:`SafeCsvWriter` on ``out``."""
    return SafeCsvWriter(out)
