"""The Claude Code event catalogue: every documented ``claude_code.*`` event and the audit record kind it becomes.

One table, read by :mod:`collector.processing.normalize` (the kind of each record), by the destinations (which kinds
are security findings) and by ``docs/schema.md`` (its catalogue table is checked against this one by a test).

Sources: the Claude Code "Monitoring usage" documentation (26 events) and what CLI 2.1.337 really sends
(``managed_settings_resolved`` is not documented but opens every session). An event missing here stays kind
``event`` with every attribute, as before.
"""

from __future__ import annotations

from typing import NamedTuple


class EventSpec(NamedTuple):
    """One catalogue row: the record kind and the record field that holds the event's own facts."""

    kind: str
    section: str | None  # top-level record field with the event's mapped attributes (None: tool/api/prompt fields)
    summary: str


CATALOGUE: dict[str, EventSpec] = {
    "claude_code.user_prompt": EventSpec("user_prompt", "prompt", "A prompt the user submitted."),
    "claude_code.assistant_response": EventSpec(
        "assistant_response", "response", "The model's answer (text only when the CLI sends it)."
    ),
    "claude_code.api_request": EventSpec("api_request", "api", "One model API request: cost, tokens, duration."),
    "claude_code.api_error": EventSpec("api_error", "api", "A model API request that failed after its retries."),
    "claude_code.api_refusal": EventSpec("api_refusal", "refusal", "The model refused a request."),
    "claude_code.api_retries_exhausted": EventSpec(
        "api_retries_exhausted", "api", "A model API request given up after its retries."
    ),
    "claude_code.api_request_body": EventSpec("api_body", "api_body", "A raw API request body (opt-in)."),
    "claude_code.api_response_body": EventSpec("api_body", "api_body", "A raw API response body (opt-in)."),
    "claude_code.tool_decision": EventSpec("tool_decision", "tool", "A tool call allowed or denied."),
    "claude_code.tool_result": EventSpec("tool_result", "tool", "A tool call that ran."),
    "claude_code.permission_mode_changed": EventSpec(
        "permission_mode_change", "permission_mode", "The session's permission mode changed."
    ),
    "claude_code.auth": EventSpec("auth", "auth", "A login or logout."),
    "claude_code.mcp_server_connection": EventSpec(
        "mcp_connection", "mcp", "An MCP server connected, failed or disconnected."
    ),
    "claude_code.internal_error": EventSpec("internal_error", "error", "An error inside the CLI."),
    "claude_code.plugin_installed": EventSpec("plugin", "plugin", "A plugin was installed."),
    "claude_code.plugin_loaded": EventSpec("plugin", "plugin", "A plugin was loaded for the session."),
    "claude_code.skill_activated": EventSpec("skill", "skill", "A skill was activated."),
    "claude_code.at_mention": EventSpec("at_mention", "mention", "An @-mention was resolved."),
    "claude_code.hook_registered": EventSpec("hook_registration", "hook", "A hook configured for the session."),
    "claude_code.hook_execution_start": EventSpec("hook_execution", "hook", "Hooks of one hook event started."),
    "claude_code.hook_execution_complete": EventSpec(
        "hook_execution", "hook", "Hooks of one hook event finished, with their outcome."
    ),
    "claude_code.hook_plugin_metrics": EventSpec("hook_execution", "hook", "Per-plugin hook counters."),
    "claude_code.compaction": EventSpec("compaction", "compaction", "The conversation was compacted."),
    "claude_code.subagent_completed": EventSpec("subagent", "agent", "A subagent finished its work."),
    "claude_code.feedback_survey": EventSpec("housekeeping", "housekeeping", "A feedback survey was shown."),
    "claude_code.retention_sweep": EventSpec("housekeeping", "housekeeping", "Old local transcripts were swept."),
    "claude_code.managed_settings_resolved": EventSpec(
        "managed_settings", "settings", "Managed settings resolved (sent first in every session; undocumented)."
    ),
}

KIND_BY_EVENT: dict[str, str] = {name: spec.kind for name, spec in CATALOGUE.items()}

# kinds made from something other than one log record
DERIVED_KINDS = ("file_change", "hook_event", "chain_head", "trail_access")
KINDS: tuple[str, ...] = (
    *dict.fromkeys(KIND_BY_EVENT.values()),
    "file_change",
    "hook_event",
    "event",
    "chain_head",
    "trail_access",
)

# the Claude Code products whose telemetry this bridge reads (resource ``service.name``)
CLAUDE_CODE_SERVICES = frozenset({"claude-code", "claude-code-desktop"})

# hook events whose execution can decide a tool call (a ``tool_decision`` with ``source=hook`` follows)
DECIDING_HOOK_EVENTS = frozenset({"PreToolUse", "PermissionRequest"})
