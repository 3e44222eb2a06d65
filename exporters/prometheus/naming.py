"""Pure naming rules: OTLP metric names, units and attributes -> Prometheus names and label values.

Claude Code's eight documented counters get fixed names and fixed label sets (:data:`CLAUDE_CODE_METRICS`); dashboards
and alert rules are written against them. Any other ``claude_code.*`` metric is named by the generic rule of
:func:`metric_name` (the OpenTelemetry Collector's translation, lower-cased units): dots become underscores, a trailing
``total`` word is dropped, the unit is appended as a plural suffix (``s`` -> ``seconds``, ``By`` -> ``bytes``,
``USD`` -> ``usd``, ``tokens`` -> ``tokens``, none for ``""`` and ``1``), and monotonic sums end in ``_total``.

Label values are bounded on purpose: ``model`` loses the ``[1m]``-style context suffix Claude Code adds on metrics
(:func:`normalize_model`), MCP tools collapse to ``mcp:<server>`` (:func:`tool_label`), and identities (e-mail,
``user.id``, session and prompt ids) are never labels unless the per-user mode asks for a pseudonym
(:class:`UserLabeler`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

OVERFLOW = "__overflow__"
USER_LABEL = "user"

_UNIT_WORDS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "by": "bytes",
    "kby": "kilobytes",
    "mby": "megabytes",
    "gby": "gigabytes",
    "kiby": "kibibytes",
    "miby": "mebibytes",
    "giby": "gibibytes",
    "bit": "bits",
    "%": "percent",
    "usd": "usd",
    "tokens": "tokens",
    "token": "tokens",
    "1": "",
}
_PER_UNIT_WORDS = {"s": "second", "ms": "millisecond", "min": "minute", "h": "hour", "d": "day", "by": "byte"}
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_REPEATED_UNDERSCORES = re.compile(r"__+")
_ANNOTATION = re.compile(r"\{[^}]*\}")
_MODEL_SUFFIX = re.compile(r"\s*\[[^\[\]]*\]$")

IDENTITY_ATTRIBUTES = frozenset(
    {
        "user.id",
        "user.email",
        "user.account_uuid",
        "user.account_id",
        "user.groups",
        "enduser.id",
        "session.id",
        "prompt.id",
        "organization.id",
        "message.uuid",
        "request_id",
        "client_request_id",
        "tool_use_id",
        "workflow.run_id",
        "workspace.host_paths",
    }
)


def sanitize_name(text: str) -> str:
    """A valid Prometheus metric-name fragment: invalid characters -> ``_``, runs of ``_`` collapsed."""
    out = _REPEATED_UNDERSCORES.sub("_", _INVALID_NAME_CHARS.sub("_", text)).strip("_")
    if out and out[0].isdigit():
        out = "_" + out
    return out


def unit_suffix(unit: str | None) -> str:
    """The plural suffix of an OTLP (UCUM) unit: ``s`` -> ``seconds``, ``By/s`` -> ``bytes_per_second``, ``1`` -> none.

    ``{annotations}`` are dropped; unknown units are kept, lower-cased and sanitized.
    """
    text = _ANNOTATION.sub("", unit or "").strip()
    if not text:
        return ""
    if "/" in text:
        num, _, den = text.partition("/")
        left = unit_suffix(num)
        right = _PER_UNIT_WORDS.get(den.strip().lower()) or sanitize_name(den.strip().lower())
        if not right:
            return left
        return f"{left}_per_{right}" if left else f"per_{right}"
    key = text.lower()
    if key in _UNIT_WORDS:
        return _UNIT_WORDS[key]
    return sanitize_name(key)


def metric_name(otel_name: str, unit: str | None, *, counter: bool) -> str:
    """The generic Prometheus name of an OTLP metric (see the module docstring)."""
    base = sanitize_name(otel_name)
    if counter:
        base = base.removesuffix("_total") if base != "total" else base
    suffix = unit_suffix(unit)
    if suffix and not (base == suffix or base.endswith("_" + suffix)):
        base = f"{base}_{suffix}"
    if counter:
        base += "_total"
    return base


def label_name(key: str) -> str:
    """A valid label name for an attribute key: ``terminal.type`` -> ``terminal_type``; ``__x`` -> ``key__x``."""
    out = _INVALID_NAME_CHARS.sub("_", key)
    if not out:
        return ""
    if out[0].isdigit():
        return "key_" + out
    if out.startswith("__"):
        return "key" + out
    return out


MAX_LABEL_VALUE_CHARS = 128
"""Longest label value (and metric help text) served; longer text is cut and ends with ``...``."""
MAX_HELP_CHARS = 256
MAX_METRIC_NAME_CHARS = 200
"""Longest OTLP metric name turned into a generic family; longer names are ignored as invalid."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
REPLACEMENT = "\ufffd"


def clean_text(text: str, limit: int = MAX_LABEL_VALUE_CHARS) -> str:
    """``text`` fit to serve on ``/metrics``: control characters (C0, DEL, C1, line/paragraph separators; ESC
    sequences and bare CRs that a terminal or a log viewer would act on) replaced by U+FFFD and at most ``limit``
    characters."""
    if _CONTROL.search(text) is not None:
        text = _CONTROL.sub(REPLACEMENT, text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def label_value(value: Any) -> str:
    """An attribute value as label text: strings as-is, booleans ``true``/``false``, numbers, else JSON; control
    characters replaced and the length capped (:func:`clean_text`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        if len(value) <= MAX_LABEL_VALUE_CHARS and (value.isprintable() or _CONTROL.search(value) is None):
            return value
        return clean_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and math.isfinite(value):
            return str(int(value))
        return repr(value)
    return clean_text(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def normalize_model(model: Any) -> str:
    """The model without the bracketed suffix of metrics: ``claude-opus-4-8[1m]`` -> ``claude-opus-4-8``.

    Events name the same model without the suffix, so stripping it lets metric- and event-derived series join on
    ``model``; the context-window variant is not kept (it does not change what is counted).
    """
    text = label_value(model)
    return _MODEL_SUFFIX.sub("", text)


def tool_label(name: Any, mcp_servers: frozenset[str] = frozenset()) -> str:
    """Bounded tool label: built-in names as-is; ``mcp__<server>__<tool>`` -> ``mcp:<server>``.

    With a non-empty ``mcp_servers`` allow-list, servers not on it become ``mcp:other``; a malformed MCP name
    (no server part) becomes ``mcp``.
    """
    text = label_value(name)
    if not text.startswith("mcp__"):
        return text
    server = text[5:].split("__", 1)[0]
    if not server:
        return "mcp"
    if mcp_servers and server not in mcp_servers:
        return "mcp:other"
    return "mcp:" + server


def is_identity_attribute(key: str) -> bool:
    """Keys that identify a person, session, prompt or request: never labels (unbounded and personal)."""
    if key in IDENTITY_ATTRIBUTES:
        return True
    lowered = key.lower()
    return lowered.endswith((".id", "_id", ".uuid", "_uuid", "email"))


def generic_labels(attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, str]:
    """Labels of a metric without a fixed label set: every datapoint attribute except identities.

    Attributes that repeat a resource attribute (Claude Code copies ``OTEL_RESOURCE_ATTRIBUTES`` onto every point)
    are left out, as is an attribute that would become the reserved ``user`` label. Keys that sanitize to the same
    label name have their values joined with ``;`` (in key order), as the OpenTelemetry Collector does.
    """
    out: dict[str, str] = {}
    for key in sorted(attributes):
        if is_identity_attribute(key) or key in resource:
            continue
        name = label_name(key)
        if not name or name == USER_LABEL:
            continue
        value = label_value(attributes[key])
        if not value:
            continue
        out[name] = f"{out[name]};{value}" if name in out else value
    return out


@dataclass(frozen=True)
class MetricSpec:
    """A Claude Code counter with a fixed Prometheus name and label set (label name -> attribute key)."""

    name: str
    labels: tuple[str, ...]
    unit: str
    help: str


CLAUDE_CODE_METRICS: dict[str, MetricSpec] = {
    "claude_code.session.count": MetricSpec(
        "claude_code_session_count_total", (), "", "Claude Code sessions started (claude_code.session.count)."
    ),
    "claude_code.lines_of_code.count": MetricSpec(
        "claude_code_lines_of_code_count_total",
        ("type", "model"),
        "",
        "Lines of code added or removed by Claude Code (claude_code.lines_of_code.count).",
    ),
    "claude_code.pull_request.count": MetricSpec(
        "claude_code_pull_request_count_total",
        (),
        "",
        "Pull requests created by Claude Code (claude_code.pull_request.count).",
    ),
    "claude_code.commit.count": MetricSpec(
        "claude_code_commit_count_total", (), "", "Git commits created by Claude Code (claude_code.commit.count)."
    ),
    "claude_code.cost.usage": MetricSpec(
        "claude_code_cost_usage_usd_total",
        ("model", "query_source"),
        "usd",
        "Cost of Claude Code sessions in US dollars (claude_code.cost.usage).",
    ),
    "claude_code.token.usage": MetricSpec(
        "claude_code_token_usage_tokens_total",
        ("model", "type"),
        "tokens",
        "Tokens used by Claude Code, by type input/output/cacheRead/cacheCreation (claude_code.token.usage).",
    ),
    "claude_code.code_edit_tool.decision": MetricSpec(
        "claude_code_code_edit_tool_decision_total",
        ("tool_name", "decision", "source", "language"),
        "",
        "Permission decisions for the Edit, Write and NotebookEdit tools (claude_code.code_edit_tool.decision).",
    ),
    "claude_code.active_time.total": MetricSpec(
        "claude_code_active_time_seconds_total",
        ("type",),
        "seconds",
        "Active time in seconds, type user or cli (claude_code.active_time.total).",
    ),
}


def fixed_labels(
    spec: MetricSpec, attributes: Mapping[str, Any], mcp_servers: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The label values of a fixed-spec metric; absent attributes give empty values (no label in Prometheus)."""
    out: dict[str, str] = {}
    for name in spec.labels:
        raw = attributes.get(name)
        if name == "model":
            value = normalize_model(raw)
        elif name == "tool_name":
            value = tool_label(raw, mcp_servers)
        else:
            value = label_value(raw)
        out[name] = value
    return out


class UserLabeler:
    """The opt-in ``user`` label value (see :class:`exporters.prometheus.config.PerUserSettings`)."""

    def __init__(self, mode: str = "off", allow: Iterable[str] = (), salt: str = "") -> None:
        if mode not in ("off", "allowlist", "hash"):
            raise ValueError(f"per-user mode must be off, allowlist or hash, not {mode!r}")
        self.mode = mode
        self._allow = frozenset(a.strip().lower() for a in allow)
        self._key = salt.encode()

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __repr__(self) -> str:
        return f"UserLabeler(mode={self.mode!r}, allow={len(self._allow)} entries)"

    def label(self, email: str | None, user_id: str | None) -> str:
        """The label value for a user known by ``email`` and/or installation ``user_id`` ("" when unknown)."""
        mail = email.strip().lower() if email else ""
        uid = user_id.strip() if user_id else ""
        if self.mode == "allowlist":
            if mail and mail in self._allow:
                return mail
            if uid and uid.lower() in self._allow:
                return uid
            return "other"
        if self.mode == "hash":
            ident = f"email:{mail}" if mail else f"id:{uid}" if uid else ""
            if not ident:
                return ""
            return hmac.new(self._key, ident.encode(), hashlib.sha256).hexdigest()[:16]
        return ""


def point_identity(attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(e-mail, user.id) of a metric datapoint: ``user.email``, else an ``enduser.id`` that is an e-mail."""
    email = attributes.get("user.email") or resource.get("user.email")
    if not isinstance(email, str) or not email:
        enduser = attributes.get("enduser.id") or resource.get("enduser.id")
        email = enduser if isinstance(enduser, str) and "@" in enduser else None
    uid = attributes.get("user.id") or resource.get("user.id")
    return email, uid if isinstance(uid, str) else None
