"""Claude Code HTTP hooks: ``POST /v1/claude-code/hooks`` on the OTLP/HTTP port, stored as ``hook_event`` records.

Claude Code can POST each hook's JSON payload to a URL (``"type": "http"`` hooks in settings; see "Hooks
reference" in the Claude Code documentation, https://docs.claude.com/en/docs/claude-code/hooks). The payloads carry
audit facts OpenTelemetry lacks: which settings file changed (``ConfigChange``), what a permission request offered
(``PermissionRequest``), the working directory and permission mode of each step. Their ``session_id``,
``prompt_id``, ``tool_use_id`` and ``agent_id`` equal the OTel events' ids, so each record joins the session's
OTel records (:func:`join_keys`; a ``PermissionRequest`` has no ``tool_use_id`` and joins by prompt, tool and input).

**The one place where the answer precedes the disk.** Every other ccbridge success answer means the data is
committed. A hook is different: the CLI waits for the answer before the developer's next step (with no ``timeout``
up to 600 s per hook; a hanging endpoint made a recorded session take 94.7 s instead of 4.1 s and refused a model
switch). So the receiver waits for the commit at most :data:`ANSWER_DEADLINE_S`; past that it answers ``{}`` anyway
and keeps the record in memory, committing it as soon as the store takes it (retrying while the store refuses),
counted in ``ccbridge_hooks_answered_before_commit_total``; the store's ordinary durability applies from then on.
What is still pending at shutdown is committed before the store closes, within the shutdown grace.

The answer is always the empty object ``{}``: the bridge observes and never decides (no ``decision``, no
``continue: false``), so a hook pointed at it can never block a developer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from collector.pipeline import record_row
from collector.processing.normalize import SCHEMA_VERSION, rfc3339_ms
from collector.receivers.context import ReceiverContext

log = logging.getLogger(__name__)

PATH = "/v1/claude-code/hooks"
ANSWER_DEADLINE_S = 0.02  # the answer leaves within this, committed or not (p99 <= 50 ms at 500 hooks/s)
MAX_BODY = 1 << 20  # hook payloads are a few KB; tool input is truncated by the CLI
RETRY_DELAYS_S = (0.05, 0.2, 1.0, 5.0)
SCOPE = {"name": "claude_code.hooks", "version": ""}

# payload keys copied into the record's ``hook_event`` section (the full payload stays under ``attributes``)
_HOOK_FIELDS = (
    ("cwd", "cwd"),
    ("permission_mode", "permission_mode"),
    ("source", "source"),
    ("file_path", "file_path"),
    ("reason", "reason"),
    ("trigger", "trigger"),
    ("from_model", "from_model"),
    ("to_model", "to_model"),
    ("old_cwd", "old_cwd"),
    ("new_cwd", "new_cwd"),
    ("error", "error"),
    ("memory_type", "memory_type"),
    ("load_reason", "load_reason"),
)


# hook events Claude Code 2.1.337 sends over HTTP (a label value; anything else is counted as "other")
KNOWN_HOOK_EVENTS = frozenset(
    [
        "InstructionsLoaded",
        "PreModelSwitch",
        "PostModelSwitch",
        "UserPromptSubmit",
        "UserPromptExpansion",
        "MessageDisplay",
        "PreToolUse",
        "PermissionRequest",
        "PostToolUse",
        "PostToolUseFailure",
        "PostToolBatch",
        "FileChanged",
        "ConfigChange",
        "CwdChanged",
        "SubagentStart",
        "SubagentStop",
        "Stop",
        "PreCompact",
        "PostCompact",
        "SessionEnd",
        "SessionStart",
        "Notification",
    ]
)


class BadHookPayload(ValueError):
    """A body that is not a Claude Code hook payload (answered 400, nothing stored)."""


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def parse_payload(body: bytes) -> dict[str, Any]:
    """The JSON object of a hook POST; :class:`BadHookPayload` naming the problem otherwise."""
    if not body:
        raise BadHookPayload("empty body; expected a Claude Code hook payload (a JSON object)")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadHookPayload(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadHookPayload(f"body is a JSON {type(doc).__name__}; expected an object")
    for key in ("hook_event_name", "session_id"):
        if not _text(doc.get(key)):
            raise BadHookPayload(f"{key} is missing or not a non-empty string")
    return doc


def input_digest(tool_input: Any) -> str | None:
    """A stable digest of a tool input (canonical JSON), to join a ``PermissionRequest`` with its tool call."""
    if tool_input is None:
        return None
    return hashlib.sha256(orjson.dumps(tool_input, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def hook_record(
    payload: dict[str, Any], redacted: dict[str, Any], received_ns: int, identity: str | None
) -> dict[str, Any]:
    """The ``hook_event`` audit record of one payload (``redacted``: the payload with secrets replaced)."""
    name = str(payload["hook_event_name"])
    key = b"hook\x1f" + (identity or "").encode() + b"\x1f" + orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    t = rfc3339_ms(received_ns)
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": hashlib.sha256(key).hexdigest()[:32],
        "kind": "hook_event",
        "event": f"claude_code.hook.{name}",
        "time": t,
        "observed_time": t,
        "received_time": t,
        "session": {"id": str(payload["session_id"])},
    }
    prompt_id = _text(redacted.get("prompt_id"))
    if prompt_id:
        rec["prompt"] = {"id": prompt_id}
    agent: dict[str, Any] = {}
    for src, dst in (("agent_id", "id"), ("agent_type", "type")):
        v = _text(redacted.get(src))
        if v:
            agent[dst] = v
    if agent:
        rec["agent"] = agent
    tool: dict[str, Any] = {}
    for src, dst in (("tool_name", "name"), ("tool_use_id", "use_id"), ("permission_mode", "permission_mode")):
        v = _text(redacted.get(src))
        if v and (dst != "permission_mode" or "tool_name" in redacted):
            tool[dst] = v
    if "tool_input" in redacted:
        tool["input"] = redacted["tool_input"]
        digest = input_digest(redacted["tool_input"])
        if digest:
            tool["input_digest"] = digest
    if tool:
        rec["tool"] = tool
    section: dict[str, Any] = {"name": name}
    for src, dst in _HOOK_FIELDS:
        v = _text(redacted.get(src))
        if v:
            section[dst] = v
    suggestions = redacted.get("permission_suggestions")
    if isinstance(suggestions, list):
        section["permission_suggestions"] = suggestions
    rec["hook_event"] = section
    source: dict[str, Any] = {"transport": "http-hooks"}
    if identity:
        source["identity"] = identity
    rec["source"] = source
    rec["scope"] = dict(SCOPE)
    rec["attributes"] = redacted
    rec["resource"] = {}
    return rec


def join_keys(rec: dict[str, Any]) -> dict[str, Any]:
    """What joins a ``hook_event`` record to the OTel records of its session: the session, and the tool call by
    ``tool_use_id`` or, without one (``PermissionRequest``), by prompt, tool name and input digest."""
    keys: dict[str, Any] = {"session_id": rec["session"]["id"]}
    tool = rec.get("tool") or {}
    if tool.get("use_id"):
        keys["tool_use_id"] = tool["use_id"]
    elif tool.get("name"):
        keys["prompt_id"] = (rec.get("prompt") or {}).get("id")
        keys["tool_name"] = tool["name"]
        keys["input_digest"] = tool.get("input_digest")
    return keys


class ClaudeHooksEndpoint:
    """The route handler; shares the OTLP/HTTP receiver's authentication and store."""

    def __init__(
        self,
        ctx: ReceiverContext,
        authenticate: Any = None,
        on_error: Callable[[Exception, str, str, web.Request], web.Response] | None = None,
        deadline_s: float = ANSWER_DEADLINE_S,
    ) -> None:
        self.ctx = ctx
        self.authenticate = authenticate
        self.on_error = on_error
        self.deadline_s = deadline_s
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Records answered but not committed yet."""
        return len(self._pending)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.json_response(
                {"code": 12, "message": f"method {request.method} not allowed on {PATH}; use POST"},
                status=405,
                headers={"Allow": "POST"},
            )
        started = time.perf_counter()
        metrics = self.ctx.metrics
        try:
            identity = await self.authenticate(request) if self.authenticate is not None else None
            if request.content_length is not None and request.content_length > MAX_BODY:
                raise BadHookPayload(f"body of {request.content_length} bytes exceeds the hook limit of {MAX_BODY}")
            body = await request.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise BadHookPayload(f"body exceeds the hook limit of {MAX_BODY} bytes")
            payload = parse_payload(body)
        except BadHookPayload as exc:
            metrics.refused.labels("hooks", "http", "bad_payload").inc()
            log.warning("refused hook payload from %s: %s", request.remote, exc)
            return web.json_response({"code": 3, "message": str(exc)}, status=400)
        except Exception as exc:  # authentication (401), shutdown: answered like every OTLP/HTTP request
            if self.on_error is None:
                raise
            return self.on_error(exc, "hooks", "json", request)
        redactor = self.ctx.pipeline.redactor
        redacted = redactor.redact(payload) if redactor is not None else payload
        received_ns = time.time_ns()
        rec = hook_record(payload, redacted, received_ns, identity)
        row = record_row(rec, received_ns, received_ns // 1_000_000)
        task = asyncio.create_task(self._commit(row))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.deadline_s)
        except TimeoutError:
            # answered before the disk: keep the record and commit it after answering (module docstring)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            metrics.hooks_answered_before_commit.inc()
        except Exception:  # the first attempt failed fast: the retrying task keeps the record
            if not task.done():
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
                metrics.hooks_answered_before_commit.inc()
        name = payload["hook_event_name"]
        metrics.hooks_received.labels(name if name in KNOWN_HOOK_EVENTS else "other").inc()
        metrics.request_latency.labels("hooks", "http").observe(time.perf_counter() - started)
        return web.json_response({})

    async def _commit(self, row: Any) -> None:
        """Append the record, retrying while the store refuses it (a full disk, a stall), until it is committed."""
        store = self.ctx.pipeline.store
        attempt = 0
        while True:
            try:
                result = await store.append(records=[row])
            except Exception as exc:
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                attempt += 1
                self.ctx.metrics.hooks_commit_retries.inc()
                log.warning("hook record not committed yet (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            self.ctx.metrics.accepted.labels("hooks", "http").inc()
            if result.new_records:
                self.ctx.metrics.records_by_kind.labels("hook_event").inc(result.new_records)
            return

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for the records answered before their commit; returns how many are left."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pending, return_exceptions=True), timeout)
        left = len(self._pending)
        if left:
            log.error("%d hook record(s) answered but not committed at shutdown", left)
        return left
