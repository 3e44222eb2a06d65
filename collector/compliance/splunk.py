"""The approval trail from Splunk: audit records that the ``splunk_hec`` exporter indexed, read back with splunk-sdk.

One export search (``POST /services/search/[v2/]jobs/export``, ``output_mode=json``) returns the decisions and
results of the period, sorted by Splunk by session and time, so the join on this side keeps only one session in
memory (see :mod:`collector.compliance.approvals`)::

    search index="<index>" sourcetype="<sourcetype>" (kind="tool_decision" OR kind="tool_result")
        [(user.email="<u>" OR user.id="<u>")] | sort 0 session.id _time

with ``earliest_time`` = the start of the period and ``latest_time`` = its end plus the result grace period (the
decisions themselves are then cut at the period's end here). Each result's ``_raw`` is the audit record as the
exporter sent it (the HEC ``event``). The stream is read line by line as it arrives: preview results (Splunk may
send them for searches with ``sort``) are skipped, ``ERROR``/``FATAL`` messages abort the export.

Authentication: a Splunk authentication token (``Authorization: Bearer``), or a username and password (a session
from ``/services/auth/login``). Certificates are verified unless ``insecure`` is set.
"""

from __future__ import annotations

import io
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from collector.compliance.approvals import ApprovalFilter, rfc3339_to_ms

DEFAULT_SOURCETYPE = "claude:code:audit"
DEFAULT_INDEX = "*"
_INDEX_RE = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9_\-*]{0,79}")
_SOURCETYPE_RE = re.compile(r"[A-Za-z0-9_:.\-*]{1,200}")


class SplunkError(Exception):
    """The search could not be run or read; the message says why (never with credentials)."""


@dataclass(frozen=True)
class SplunkTarget:
    """Where and how to search."""

    url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    index: str = DEFAULT_INDEX
    sourcetype: str = DEFAULT_SOURCETYPE
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = 300.0

    def __repr__(self) -> str:
        return f"SplunkTarget(url={self.url!r}, index={self.index!r}, sourcetype={self.sourcetype!r})"


def spl_quote(value: str) -> str:
    """A double-quoted SPL string literal (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_search(target: SplunkTarget, flt: ApprovalFilter) -> str:
    """The SPL of the export (see the module docstring)."""
    if not _INDEX_RE.fullmatch(target.index):
        raise SplunkError(f"invalid index name {target.index!r}")
    if not _SOURCETYPE_RE.fullmatch(target.sourcetype):
        raise SplunkError(f"invalid sourcetype {target.sourcetype!r}")
    parts = [
        "search",
        f"index={spl_quote(target.index)}",
        f"sourcetype={spl_quote(target.sourcetype)}",
        '(kind="tool_decision" OR kind="tool_result")',
    ]
    if flt.user is not None:
        parts.append(f"(user.email={spl_quote(flt.user)} OR user.id={spl_quote(flt.user)})")
    return " ".join(parts) + " | sort 0 session.id _time"


def _epoch(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _connect(target: SplunkTarget) -> Any:
    from splunklib import binding, client

    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SplunkError(f"invalid Splunk URL {target.url!r}: use https://host:8089 (the management port)")
    kwargs: dict[str, Any] = {
        "scheme": parts.scheme,
        "host": parts.hostname,
        "port": parts.port or 8089,
        "verify": not target.insecure,
        "timeout": target.timeout,
    }
    if parts.scheme == "https" and not target.insecure:
        kwargs["context"] = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else None
    if target.token:
        kwargs["splunkToken"] = target.token
    elif target.username and target.password:
        kwargs["username"] = target.username
        kwargs["password"] = target.password
    else:
        raise SplunkError("no Splunk credentials: give a token, or a username and a password")
    try:
        return client.connect(**kwargs)
    except binding.AuthenticationError:
        raise SplunkError(f"Splunk at {target.url} refused the login (check the username and password)") from None
    except binding.HTTPError as exc:
        raise SplunkError(f"Splunk at {target.url} answered {exc.status} {exc.reason}") from None
    except (OSError, ssl.SSLError) as exc:
        raise SplunkError(f"cannot reach Splunk at {target.url}: {exc}") from None


def _lines(stream: Any) -> Iterator[bytes]:
    buffered = io.BufferedReader(stream, buffer_size=256 * 1024)
    yield from buffered


def splunk_records(
    target: SplunkTarget, flt: ApprovalFilter, result_grace_ms: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(time_ms, record)`` of the decisions and results, in the order Splunk sorted them (session, time)."""
    from splunklib import binding

    service = _connect(target)
    query = build_search(target, flt)
    try:
        stream = service.jobs.export(
            query,
            output_mode="json",
            earliest_time=_epoch(flt.since_ms),
            latest_time=_epoch(flt.until_ms + result_grace_ms),
        )
    except binding.HTTPError as exc:
        if exc.status == 401:
            raise SplunkError(f"Splunk at {target.url} refused the credentials (401 {exc.reason})") from None
        detail = exc.body.decode("utf-8", "replace")[:500] if isinstance(exc.body, bytes) else ""
        raise SplunkError(f"Splunk refused the search ({exc.status} {exc.reason}): {_message_of(detail)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise SplunkError(f"cannot reach Splunk at {target.url}: {exc}") from None
    try:
        for line in _lines(stream):
            item = _parse_line(line)
            if item is not None:
                yield item
    except (OSError, ssl.SSLError) as exc:
        raise SplunkError(f"the Splunk export stream broke off: {exc}") from None
    finally:
        stream.close()


def _message_of(detail: str) -> str:
    try:
        doc = orjson.loads(detail)
    except orjson.JSONDecodeError:
        return detail.strip()
    msgs = doc.get("messages") if isinstance(doc, dict) else None
    if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
        return str(msgs[0].get("text", ""))
    return detail.strip()


def _parse_line(line: bytes) -> tuple[int, dict[str, Any]] | None:
    line = line.strip()
    if not line:
        return None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise SplunkError(f"unexpected line in the Splunk export stream: {line[:200]!r}") from None
    if not isinstance(doc, dict):
        return None
    for msg in doc.get("messages") or ():
        if isinstance(msg, dict) and str(msg.get("type", "")).upper() in ("ERROR", "FATAL"):
            raise SplunkError(f"Splunk search failed: {msg.get('text', '')}")
    result = doc.get("result")
    if not isinstance(result, dict) or doc.get("preview") is True:
        return None
    raw = result.get("_raw")
    if not isinstance(raw, str):
        return None
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or rec.get("kind") not in ("tool_decision", "tool_result"):
        return None
    t = rfc3339_to_ms(rec.get("time"))
    if t is None:
        t = rfc3339_to_ms(result.get("_time")) or 0
    return t, rec
