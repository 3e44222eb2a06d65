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


class _Level:
    """The policy's paths merged into one lookup table per nesting level.

    ``entries`` holds, longest key first, every key under which some path continues at this level: the paths that
    end there (``(path id, action)``) and the level below for those that go on. A path is settled at a level by its
    longest key that is present (later, shorter keys of the same path are skipped), as if each path were walked on
    its own; merging them means one pass over the record whatever the number of paths.
    """

    __slots__ = ("entries", "keys")

    def __init__(self, paths: list[tuple[int, Splits, Action]]) -> None:
        ends: dict[str, list[tuple[int, Action]]] = {}
        below: dict[str, list[tuple[int, Splits, Action]]] = {}
        for pid, splits, action in paths:
            for key, rest in splits:
                if rest:
                    below.setdefault(key, []).append((pid, rest, action))
                else:
                    ends.setdefault(key, []).append((pid, action))
        keys = sorted(set(ends) | set(below), key=lambda k: (-len(k), k))
        self.keys = frozenset(keys)
        self.entries: tuple[tuple[str, tuple[tuple[int, Action], ...], _Level | None, frozenset[int]], ...] = tuple(
            (
                key,
                tuple(ends.get(key, ())),
                _Level(below[key]) if key in below else None,
                frozenset(pid for pid, _, _ in below.get(key, ())),
            )
            for key in keys
        )

    def apply(self, node: dict[str, Any], salt: str, skip: frozenset[int] | set[int]) -> dict[str, Any] | None:  # noqa: C901 - flat per-rule-kind dispatch of the field policy
        """``node`` with the actions applied (copied where it changed), or None when nothing changes.

        Under one key, the paths that go deeper apply before those that end there, so a parent's ``hash`` sees
        what its children's actions left (and a parent's ``drop`` wins whatever the order of the configuration).
        """
        out: dict[str, Any] | None = None
        settled: set[int] | None = None
        for key, ends, child, through in self.entries:
            if key not in node:
                continue
            if child is not None:
                done = skip if settled is None else settled.union(skip)
                if not through <= done:
                    if settled is None:
                        settled = set()
                    settled.update(through)
                    sub = node[key] if out is None else out[key]
                    if sub.__class__ is dict:
                        changed = child.apply(sub, salt, done)
                        if changed is not None:
                            if out is None:
                                out = dict(node)
                            out[key] = changed
            for pid, action in ends:
                if pid in skip or (settled is not None and pid in settled):
                    continue
                if settled is None:
                    settled = set()
                settled.add(pid)
                if action == "keep":
                    continue
                if out is None:
                    out = dict(node)
                if key in out:
                    if action == "drop":
                        del out[key]
                    else:
                        out[key] = hash_value(out[key], salt)
        return out


class FieldPolicy:
    """A compiled policy: :meth:`apply` returns the record as the destination may see it."""

    def __init__(self, actions: dict[str, Action], salt: str = "") -> None:
        self.actions = {k: v for k, v in actions.items() if v != "keep"}
        self.salt = salt
        paths: list[tuple[int, Splits, Action]] = [
            (i, _splits(tuple(k.split("."))), v) for i, (k, v) in enumerate(self.actions.items())
        ]
        self._top = _Level(paths) if paths else None

    @classmethod
    def build(cls, defaults: dict[str, Action], cfg: FieldPolicyConfig) -> FieldPolicy:
        merged: dict[str, Action] = {**defaults, **cfg.fields}
        return cls(merged, cfg.hash_salt.get())

    @property
    def is_noop(self) -> bool:
        return not self.actions

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with the policy applied (copied where it changed); the input is never modified."""
        if self._top is None:
            return record
        changed = self._top.apply(record, self.salt, frozenset())
        return record if changed is None else changed
