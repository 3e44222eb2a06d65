"""Datadog intake sites and how an intake answer becomes a delivery outcome (shared by logs and series).

Hosts follow the spec: logs go to ``https://http-intake.logs.<site>/api/v2/logs``, metrics to
``https://api.<site>/api/v2/series``.

Answer mapping (spec tables for both endpoints): any 2xx is success; 408, 429 and 5xx are retried, honouring
``Retry-After`` and, for 429, ``X-RateLimit-Reset`` (seconds until the rate-limit window resets); 401 and 403 are
permanent and flagged as authentication failures; 413 is permanent here and the caller splits; every other 4xx is
permanent with the API's own error text (``errors[].title/detail`` for logs, ``errors[]`` strings for series).
"""

from __future__ import annotations

from typing import Any

import orjson

from collector.delivery.outcome import Outcome, Permanent, Retry, Success
from collector.delivery.retry import MAX_SERVER_DELAY
from exporters.httpclient import HttpAnswer

SITES: tuple[str, ...] = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
)
LOGS_PATH = "/api/v2/logs"
SERIES_PATH = "/api/v2/series"
AUTH_STATUSES = (401, 403)
_MAX_DETAIL = 500


def logs_url(site: str) -> str:
    """The logs intake URL of ``site``."""
    return f"https://http-intake.logs.{site}{LOGS_PATH}"


def series_url(site: str) -> str:
    """The metrics (series) URL of ``site``."""
    return f"https://api.{site}{SERIES_PATH}"


def error_text(body: str) -> str:
    """The API's error message(s) from an answer body, else the body itself, shortened."""
    text = ""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("errors"), list):
        parts = []
        for err in parsed["errors"]:
            if isinstance(err, dict):
                title, detail = err.get("title"), err.get("detail")
                parts.append(": ".join(str(p) for p in (title, detail) if p))
            else:
                parts.append(str(err))
        text = "; ".join(p for p in parts if p)
    if not text:
        text = " ".join(body.split())
    return text[:_MAX_DETAIL]


def series_errors(body: str) -> list[str]:
    """The ``errors`` strings of a 202 series answer (points the API dropped)."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return []
    if isinstance(parsed, dict) and isinstance(parsed.get("errors"), list):
        return [str(e) for e in parsed["errors"]]
    return []


def server_delay(answer: HttpAnswer) -> float | None:
    """``Retry-After`` if given, else (on 429) ``X-RateLimit-Reset`` (whole seconds until the rate-limit window
    resets); capped like every server delay. Anything else in the header is ignored."""
    if answer.retry_after is not None:
        return answer.retry_after
    if answer.status == 429:
        reset = answer.headers.get("x-ratelimit-reset", "").strip()
        if reset.isascii() and reset.isdigit():
            return min(float(reset), MAX_SERVER_DELAY)
    return None


def outcome_of(answer: HttpAnswer) -> Outcome:
    """The delivery outcome of one intake answer (see the module docstring)."""
    status = answer.status
    if 200 <= status < 300:
        return Success(f"HTTP {status}")
    detail = error_text(answer.body)
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in (408, 429) or status >= 500:
        return Retry(reason, server_delay(answer), status)
    if status in AUTH_STATUSES:
        return Permanent(f"{reason} (Datadog refused the API key: check api_key and site)", status)
    return Permanent(reason, status)
