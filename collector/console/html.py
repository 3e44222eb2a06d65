"""Server-side HTML: string templates shipped in ``templates/``, every substituted value escaped unless it is
:class:`Markup` built by this module from escaped parts.

A template is a :class:`string.Template` (``$name`` placeholders). :func:`render` escapes each value with
:func:`html.escape` (quotes included, so values are safe in text and in quoted attributes) unless it is
:class:`Markup`. Helpers build Markup only from escaped pieces, so no stored value (a command, a prompt, a file
path, a user name) reaches the page unescaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import quote, urlencode


class Markup(str):
    """Text that is already HTML (built from escaped parts); :func:`render` inserts it as is."""


def esc(value: Any) -> Markup:
    """``value`` as HTML text (``None`` is empty)."""
    if value is None:
        return Markup("")
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Markup], sep: str = "") -> Markup:
    return Markup(sep.join(esc(p) for p in parts))


@cache
def template(name: str) -> Template:
    text = resources.files("collector.console").joinpath("templates", name).read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **values: Any) -> Markup:
    """Fill template ``name``; each value escaped unless it is :class:`Markup`."""
    return Markup(template(name).substitute({k: esc(v) for k, v in values.items()}))


def url(path: str, params: Mapping[str, Any] | None = None) -> str:
    """A same-site URL: ``path`` and the non-empty ``params`` (URL-encoded)."""
    if not params:
        return path
    q = urlencode([(k, str(v)) for k, v in params.items() if v not in (None, "")])
    return f"{path}?{q}" if q else path


def path_part(value: str) -> str:
    """One URL path segment (``/sessions/<id>``): every reserved character percent-encoded."""
    return quote(value, safe="")


def link(href: str, text: Any, cls: str = "") -> Markup:
    attr = f' class="{esc(cls)}"' if cls else ""
    return Markup(f'<a href="{esc(href)}"{attr}>{esc(text)}</a>')


def tag(name: str, content: Any, cls: str = "") -> Markup:
    attr = f' class="{esc(cls)}"' if cls else ""
    return Markup(f"<{name}{attr}>{esc(content)}</{name}>")


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], cls: str = "") -> Markup:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{esc(cls)}"' if cls else ""
    return Markup(f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def select(name: str, options: Iterable[str], chosen: str | None, label: str) -> Markup:
    opts = [f'<option value="">{esc(label)}</option>']
    for o in options:
        sel = " selected" if o == chosen else ""
        opts.append(f'<option value="{esc(o)}"{sel}>{esc(o)}</option>')
    return Markup(f'<select name="{esc(name)}" id="f-{esc(name)}">{"".join(opts)}</select>')


def hidden(name: str, value: str) -> Markup:
    return Markup(f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">')
