"""Per-destination field policy: keep, drop or hash (salted SHA-256) any field of the audit record.

A policy maps dotted field paths of the record (``user.email``, ``tool.command``, ``attributes.user.email``) to an
action. Paths address nested objects key by key; since attribute keys themselves contain dots
(``attributes`` holds ``{"user.email": ...}``), a path is matched by walking the record and, at each level, trying
the longest key that is a prefix of the rest of the path.

Each destination type has defaults: Splunk keeps everything (it is the system of record); Datadog and Prometheus never
carry raw e-mails or full command lines unless configured: e-mails are hashed, command lines and tool inputs dropped.
A configured policy is merged over the defaults, so ``fields: {user.email: keep}`` turns hashing off for e-mails.

Hashes are ``sha256:<hex>`` of the salt and the value, so the same person maps to the same token across records
(joins and counts still work) without revealing the address; the salt is a secret.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from collector.configtypes import ConfigError, Secret

Action = Literal["keep", "drop", "hash"]

IDENTITY_FIELDS = ("user.email", "user.enduser_id", "attributes.user.email", "attributes.enduser.id",
                   "resource.enduser.id", "resource.user.email")  # fmt: skip
COMMAND_FIELDS = ("tool.command", "tool.parameters", "tool.input", "attributes.tool_parameters",
                  "attributes.tool_input", "prompt.text", "attributes.prompt", "attributes.prompt_text")  # fmt: skip

PRIVACY_DEFAULTS: dict[str, Action] = {
    **{f: "hash" for f in IDENTITY_FIELDS},
    **{f: "drop" for f in COMMAND_FIELDS},
}


@dataclass(frozen=True)
class FieldPolicyConfig:
    """``exporters.<key>.fields`` (actions by path) and ``exporters.<key>.hash_salt``."""

    fields: dict[str, Action] = field(default_factory=dict)
    hash_salt: Secret = Secret("")

    def validate(self, path: str) -> None:
        for key in self.fields:
            if not key or key.startswith(".") or key.endswith("."):
                raise ConfigError(f"{path}.fields: invalid field path {key!r}")
        if "hash" in self.fields.values() and not self.hash_salt:
            raise ConfigError(f"{path}.hash_salt: required when a field policy hashes (set a random secret)")


_HASH_CACHE: dict[tuple[str, str], str] = {}
_HASH_CACHE_MAX = 50_000


def hash_value(value: Any, salt: str) -> str:
    """``sha256:<hex>`` of salt and value; values repeat (the same people), so results are cached (bounded)."""
    text = value if isinstance(value, str) else repr(value)
    key = (salt, text)
    found = _HASH_CACHE.get(key)
    if found is None:
        found = "sha256:" + hashlib.sha256(salt.encode() + b"\x00" + text.encode()).hexdigest()
        if len(_HASH_CACHE) >= _HASH_CACHE_MAX:
            _HASH_CACHE.clear()
        _HASH_CACHE[key] = found
    return found


Splits = tuple[tuple[str, "Splits"], ...]


def _splits(parts: tuple[str, ...]) -> Splits:
    """Every way to read ``parts`` as a key (longest first) followed by the rest of the path, precomputed."""
    return tuple((".".join(parts[:cut]), _splits(parts[cut:])) for cut in range(len(parts), 0, -1))


def _apply(node: dict[str, Any], splits: Splits, action: Action, salt: str) -> bool:
    """Apply ``action`` at the path described by ``splits`` under ``node`` (copy-on-write). True if it changed."""
    for key, rest in splits:
        if key not in node:
            continue
        if not rest:
            if action == "drop":
                del node[key]
            elif action == "hash":
                node[key] = hash_value(node[key], salt)
            return action != "keep"
        child = node[key]
        if isinstance(child, dict):
            copy = dict(child)
            if _apply(copy, rest, action, salt):
                node[key] = copy
                return True
        return False
    return False


class FieldPolicy:
    """A compiled policy: :meth:`apply` returns the record as the destination may see it."""

    def __init__(self, actions: dict[str, Action], salt: str = "") -> None:
        self.actions = {k: v for k, v in actions.items() if v != "keep"}
        self.salt = salt
        self._paths = [(_splits(tuple(k.split("."))), v) for k, v in self.actions.items()]

    @classmethod
    def build(cls, defaults: dict[str, Action], cfg: FieldPolicyConfig) -> FieldPolicy:
        merged: dict[str, Action] = {**defaults, **cfg.fields}
        return cls(merged, cfg.hash_salt.get())

    @property
    def is_noop(self) -> bool:
        return not self.actions

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """A shallow-copied record with the policy applied; the input is never modified."""
        if not self._paths:
            return record
        out = dict(record)
        for splits, action in self._paths:
            _apply(out, splits, action, self.salt)
        return out
