"""Value types of the configuration tree: errors, secrets, durations, sizes, endpoints.

Kept apart from :mod:`collector.config` so that section modules elsewhere in the package (enrichment, redaction,
exporters) can import them while the root config imports those sections.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass


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


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL connection strings (storage.postgresql.dsn): shown only with the password replaced.

REDACTED = "***"
_PG_URI_SCHEMES = ("postgresql://", "postgres://")
_KV_PASSWORD_RE = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)
_ANY_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY_PASSWORD_RE = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def is_pg_uri(dsn: str) -> bool:
    return dsn.strip().lower().startswith(_PG_URI_SCHEMES)


def redact_dsn(dsn: str) -> str:
    """``dsn`` fit for logs and errors: the password (in the URI's user info, a ``password=`` query parameter or a
    ``password=`` keyword) replaced by ``***``; user, hosts, port, database and other parameters kept.

    When the URI cannot be split unambiguously (a raw ``@`` in the query, say) more is hidden, never less: the user
    info is taken to end at the *last* ``@``.
    """
    s = dsn.strip()
    if _ANY_URI_RE.match(s):  # any scheme: a wrong one (mysql://) must not leak its password in the error either
        scheme, rest = s.split("://", 1)
        at = rest.rfind("@")
        if at >= 0:
            userinfo, tail = rest[:at], rest[at + 1 :]
            user, colon, _password = userinfo.partition(":")
            rest = f"{user}:{REDACTED}@{tail}" if colon else f"{user}@{tail}"
        return _QUERY_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED, f"{scheme}://{rest}")
    return _KV_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED, s)


def dsn_password(dsn: str) -> str:
    """The password a DSN carries (URI user info, ``password`` query parameter or keyword), or ``""``."""
    s = dsn.strip()
    if _ANY_URI_RE.match(s):
        rest = s.split("://", 1)[1]
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            return urllib.parse.unquote(rest[:at].partition(":")[2])
        m = _QUERY_PASSWORD_RE.search(s)
        return urllib.parse.unquote(m.group(2)) if m else ""
    m = _KV_PASSWORD_RE.search(s)
    if not m:
        return ""
    value = m.group(2)
    if value.startswith("'"):
        value = re.sub(r"\\(.)", r"\1", value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:])
    return value


def scrub_secret_text(text: str, dsn: str) -> str:
    """``text`` (a driver's error message, a log line) with the DSN's password removed wherever it appears,
    raw or percent-encoded, and the DSN itself shown redacted."""
    out = text.replace(dsn, redact_dsn(dsn)) if dsn else text
    password = dsn_password(dsn)
    if password:
        for form in {password, urllib.parse.quote(password, safe=""), urllib.parse.quote(password)}:
            out = out.replace(form, REDACTED)
    return out


def check_pg_dsn(dsn: str, path: str) -> None:
    """Refuse a DSN that is not a ``postgresql://`` URI, or has a bad port, query or ``sslmode``.

    The URI form only: the driver (asyncpg) does not read libpq's ``key=value`` strings or service files. Messages
    show the DSN through :func:`redact_dsn` only.
    """
    s = dsn.strip()
    shown = redact_dsn(s)
    if not is_pg_uri(s):
        raise ConfigError(
            f"{path}: expected a PostgreSQL URI such as postgresql://user:password@host:5432/db?sslmode=verify-full "
            f"(key=value connection strings are not supported); got {shown}"
        )
    rest = s.split("://", 1)[1]
    at = rest.rfind("@")
    hostpart = rest[at + 1 :] if at >= 0 else rest
    authority = re.split(r"[/?]", hostpart, maxsplit=1)[0]
    for host in filter(None, authority.split(",")):
        after_bracket = host.rsplit("]", 1)[-1]
        port = after_bracket.rpartition(":")[2] if ":" in after_bracket else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"{path}: invalid port {port!r} in {shown}")
    params: dict[str, str] = {}
    if "?" in hostpart:
        query = hostpart.split("?", 1)[1]
        try:
            params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True))
        except ValueError:
            raise ConfigError(f"{path}: invalid query parameters in {shown}") from None
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ConfigError(f"{path}: sslmode must be one of {', '.join(SSL_MODES)}; got {sslmode!r} in {shown}")


@dataclass(frozen=True)
class TLSServerConfig:
    """A listener's ``tls`` section (receivers, telemetry endpoint, console): TLS when ``cert_file`` is set, mutual
    TLS when ``client_ca_file`` is set too."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self, path: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{path}: cert_file and key_file must be set together")
        if self.client_ca_file and not self.cert_file:
            raise ConfigError(f"{path}.client_ca_file: mutual TLS needs cert_file and key_file too")
