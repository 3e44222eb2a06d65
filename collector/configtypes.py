"""Value types of the configuration tree: errors, secrets, durations, sizes, endpoints.

Kept apart from :mod:`collector.config` so that section modules elsewhere in the package (enrichment, redaction,
exporters) can import them while the root config imports those sections.
"""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key path."""


class Secret:
    """A configuration string that must never be printed (tokens, API keys). ``literal`` is False when the value
    came from ``${env:...}`` (so the configuration file does not hold it)."""

    __slots__ = ("_value", "literal")

    def __init__(self, value: str, literal: bool = True) -> None:
        self._value = value
        self.literal = literal

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class FromEnv(str):
    """A configuration string that had an ``${env:...}`` reference expanded into it."""

    __slots__ = ()


class Duration(float):
    """Seconds; accepts numbers or strings such as ``250ms``, ``30s``, ``5m``, ``12h``, ``90d``."""


class ByteSize(int):
    """Bytes; accepts integers or strings such as ``512KiB``, ``16MiB``, ``1GB``."""


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
}


def parse_duration(value: object, path: str = "") -> Duration:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a duration, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{path}: duration must not be negative")
        return Duration(float(value))
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*", value)
        if m:
            return Duration(float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"])
    raise ConfigError(f"{path}: invalid duration {value!r} (use e.g. 500ms, 30s, 5m, 12h, 90d)")


def parse_size(value: object, path: str = "") -> ByteSize:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a size, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{path}: size must not be negative")
        return ByteSize(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return ByteSize(int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]))
    raise ConfigError(f"{path}: invalid size {value!r} (use e.g. 4096, 512KiB, 16MiB)")


def parse_endpoint(value: str, path: str = "") -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6) into its parts."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]]*):([0-9]{1,5})", value.strip())
    if not m:
        raise ConfigError(f"{path}: invalid endpoint {value!r} (expected host:port)")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ConfigError(f"{path}: port {port} out of range")
    return (host or "0.0.0.0"), port
