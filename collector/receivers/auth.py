"""Receiver authentication (bearer tokens mapped to identities) and the TLS contexts of the bridge's listeners.

Configuration (``receivers.auth``): tokens listed in the config (``tokens: [{token, identity}]``) and/or a tokens
file (``tokens_file``) with one ``identity: token`` per line. Authentication is on as soon as either is set; every
OTLP request must then carry ``Authorization: Bearer <token>`` (HTTP header or gRPC metadata ``authorization``).
The identity of the matching token (a team, machine or tenant name) is stamped on every record of that request as
``source.identity``.

Tokens file format::

    # comments and blank lines are ignored
    team-platform: 3f6c0d0c5bb34d3c9c7f0f5e2b8a1d44
    ci-runner-07: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

A token may be stored hashed: ``sha256:`` and the 64-hex SHA-256 of the token, so the file holds no usable secret.
Identities are 1-128 characters of letters, digits and ``. _ @ + / = -`` (no colon, no whitespace); several tokens
may map to the same identity (rotation: add the new token, move clients, remove the old one). The file is re-read
when it changes (its size, modification time or inode; checked at most every ``reload_interval`` when requests
arrive) and on SIGHUP. A file that cannot be read or parsed on reload leaves the previous tokens in force and is
reported in the log (by line number, never by content).

Checking a token hashes it with SHA-256 and compares the digest with every known digest using
:func:`hmac.compare_digest`, without stopping at the first match, so the time taken does not depend on which token
(if any) matched or on how much of it was right. Neither tokens nor their digests are ever logged or echoed in an
answer: a refused request gets 401 / ``UNAUTHENTICATED`` with a fixed message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from collector.configtypes import ConfigError, Duration, Secret
from collector.private import exposed
from collector.receivers.status import Unauthenticated

if TYPE_CHECKING:
    from aiohttp import web
    from grpc import aio

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 8
MAX_TOKEN_LENGTH = 4096
IDENTITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+/=-]{0,127}")
HASHED_RE = re.compile(r"sha256:([0-9a-fA-F]{64})")
REALM = "ccbridge"

MSG_MISSING = "missing bearer token: send the header 'Authorization: Bearer <token>'"
MSG_SCHEME = "unsupported authorization scheme: send the header 'Authorization: Bearer <token>'"
MSG_INVALID = "invalid bearer token"


class BearerRequired(Unauthenticated):
    """No usable bearer token in the request; ``challenge`` is the ``WWW-Authenticate`` value (RFC 6750)."""

    challenge = f'Bearer realm="{REALM}"'


class InvalidToken(Unauthenticated):
    """A bearer token was presented and is not known."""

    challenge = f'Bearer realm="{REALM}", error="invalid_token"'


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class AuthTokenConfig:
    """One ``receivers.auth.tokens`` entry: a token (plain, or ``sha256:<hex>``) and the identity it stands for."""

    token: Secret = Secret("")
    identity: str = ""


@dataclass(frozen=True)
class ReceiverAuthConfig:
    """``receivers.auth``: bearer tokens for both OTLP receivers. On when ``tokens`` or ``tokens_file`` is set."""

    tokens: list[AuthTokenConfig] = field(default_factory=list)
    tokens_file: str = ""
    reload_interval: Duration = Duration(5.0)

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or bool(self.tokens_file)

    def validate(self, path: str) -> None:
        seen: dict[bytes, str] = {}
        for i, entry in enumerate(self.tokens):
            where = f"{path}.tokens[{i}]"
            check_identity(entry.identity, f"{where}.identity")
            digest = digest_of_entry(entry.token.get(), f"{where}.token")
            _check_duplicate(seen, digest, entry.identity, f"{where}.token")
        if self.reload_interval > 3600:
            raise ConfigError(f"{path}.reload_interval: must be at most 1h")


def check_identity(identity: str, where: str) -> None:
    """Refuse an identity that is empty or has characters outside the allowed set (named by ``where``)."""
    if not isinstance(identity, str) or not IDENTITY_RE.fullmatch(identity):
        raise ConfigError(
            f"{where}: identity must be 1-128 letters, digits or . _ @ + / = - (starting with a letter or digit)"
        )


def token_digest(token: str) -> bytes:
    """SHA-256 of a token's UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def digest_of_entry(value: str, where: str) -> bytes:
    """The digest a configured token stands for: ``sha256:<hex>`` as given, a plain token hashed.

    Errors name ``where`` and the rule broken, never the value.
    """
    value = value.strip()
    m = HASHED_RE.fullmatch(value)
    if m:
        return bytes.fromhex(m.group(1))
    if value.lower().startswith("sha256:"):
        raise ConfigError(f"{where}: a hashed token is 'sha256:' followed by 64 hexadecimal digits")
    if len(value) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{where}: token must be at least {MIN_TOKEN_LENGTH} characters")
    if len(value) > MAX_TOKEN_LENGTH:
        raise ConfigError(f"{where}: token must be at most {MAX_TOKEN_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ConfigError(f"{where}: token must not contain whitespace or control characters")
    return token_digest(value)


def _check_duplicate(seen: dict[bytes, str], digest: bytes, identity: str, where: str) -> None:
    previous = seen.get(digest)
    if previous is not None and previous != identity:
        raise ConfigError(f"{where}: the same token is also given to identity {previous!r}; a token maps to one")
    seen[digest] = identity


@dataclass(frozen=True)
class TokenEntry:
    """A known token: its SHA-256 digest and identity."""

    digest: bytes
    identity: str


def parse_tokens_file(text: str, where: str) -> list[TokenEntry]:
    """Entries of a tokens file (``identity: token`` or ``identity: sha256:<hex>`` per line).

    Errors name the file and line number, never the line's content.
    """
    entries: list[TokenEntry] = []
    seen: dict[bytes, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, token = line.partition(":")
        if not sep:
            raise ConfigError(f"{where}:{n}: expected 'identity: token'")
        identity = identity.strip()
        check_identity(identity, f"{where}:{n}")
        digest = digest_of_entry(token, f"{where}:{n}")
        _check_duplicate(seen, digest, identity, f"{where}:{n}")
        entries.append(TokenEntry(digest, identity))
    return entries


def parse_bearer(value: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value; :class:`BearerRequired` when there is none."""
    if value is None or not value.strip():
        raise BearerRequired(MSG_MISSING)
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise BearerRequired(MSG_SCHEME)
    token = token.strip()
    if not token:
        raise BearerRequired(MSG_MISSING)
    return token


# ---------------------------------------------------------------------------------------------------------------
# the authenticator


class TokenAuthenticator:
    """Maps bearer tokens to identities; used by both receivers (:meth:`http`, :meth:`grpc`)."""

    def __init__(self, cfg: ReceiverAuthConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.path = Path(cfg.tokens_file) if cfg.tokens_file else None
        self._config_entries = [
            TokenEntry(digest_of_entry(t.token.get(), f"receivers.auth.tokens[{i}].token"), t.identity)
            for i, t in enumerate(cfg.tokens)
        ]
        self._file_entries: list[TokenEntry] = []
        self._entries: tuple[TokenEntry, ...] = tuple(self._config_entries)
        self._signature: tuple[int, int, int] | None = None
        self._failed_signature: tuple[int, int, int] | None = None
        self._checked_at = clock()
        self.reloads = 0
        if self.path is not None:
            self._load_file(initial=True)

    @property
    def identities(self) -> list[str]:
        """The identities that currently have at least one token (sorted)."""
        return sorted({e.identity for e in self._entries})

    def _signature_of(self) -> tuple[int, int, int]:
        assert self.path is not None
        st = self.path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load_file(self, *, initial: bool = False) -> bool:
        """Read and parse the tokens file; on failure raise (``initial``) or keep the current tokens and log."""
        assert self.path is not None
        where = str(self.path)
        try:
            sig = self._signature_of()
            raw = self.path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{where}: tokens file is not UTF-8 text") from None
            file_entries = parse_tokens_file(text, where)
            mode = os.stat(self.path).st_mode
        except OSError as exc:
            err = ConfigError(f"{where}: cannot read tokens file: {exc.strerror}")
            if initial:
                raise err from None
            self._report_failure(None, err)
            return False
        except ConfigError as exc:
            if initial:
                raise
            self._report_failure(sig, exc)
            return False
        plain = any(not HASHED_RE.fullmatch(line.partition(":")[2].strip()) for line in _token_lines(text))
        if plain and exposed(mode):
            log.warning(
                "tokens file %s holds plain tokens and is readable by group or others; chmod 600 it or store "
                "the tokens hashed (sha256:<hex>)",
                where,
            )
        self._file_entries = file_entries
        self._entries = tuple(self._config_entries + file_entries)
        self._signature = sig
        self._failed_signature = None
        if not initial:
            self.reloads += 1
            log.info(
                "reloaded tokens file %s: %d token(s), %d identities", where, len(file_entries), len(self.identities)
            )
        return True

    def _report_failure(self, sig: tuple[int, int, int] | None, exc: ConfigError) -> None:
        """Log a failed reload once per state of the file (a missing file counts as one state)."""
        key = sig if sig is not None else (-1, -1, -1)
        if key != self._failed_signature:
            log.error("tokens file not reloaded, previous tokens stay in force: %s", exc)
        self._failed_signature = key
        self._signature = sig

    def reload(self) -> bool:
        """Re-read the tokens file now (SIGHUP). True when the new tokens are in force."""
        self._checked_at = self.clock()
        if self.path is None:
            return True
        return self._load_file()

    def maybe_reload(self) -> None:
        """Re-read the tokens file if it changed, checking at most once per ``reload_interval``."""
        if self.path is None:
            return
        now = self.clock()
        if now - self._checked_at < float(self.cfg.reload_interval):
            return
        self._checked_at = now
        try:
            sig = self._signature_of()
        except OSError as exc:
            self._report_failure(None, ConfigError(f"{self.path}: cannot read tokens file: {exc.strerror}"))
            return
        if sig != self._signature:
            self._load_file()

    def identify(self, token: str) -> str:
        """The identity of ``token``; :class:`InvalidToken` if it is not known. Constant time in the match."""
        self.maybe_reload()
        digest = token_digest(token)
        found: str | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry.identity
        if found is None:
            raise InvalidToken(MSG_INVALID)
        return found

    async def http(self, request: web.Request) -> str:
        """Authenticator for :class:`~collector.receivers.otlp_http.OtlpHttpReceiver`."""
        return self.identify(parse_bearer(request.headers.get("Authorization")))

    async def grpc(self, context: aio.ServicerContext) -> str:
        """Authenticator for :class:`~collector.receivers.otlp_grpc.OtlpGrpcReceiver` (metadata ``authorization``)."""
        value: str | None = None
        for key, v in context.invocation_metadata() or ():
            if key.lower() == "authorization":
                value = v if isinstance(v, str) else v.decode("latin-1")
                break
        return self.identify(parse_bearer(value))


def _token_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


# ---------------------------------------------------------------------------------------------------------------
# TLS


class TLSSettings(Protocol):
    """What :func:`server_ssl_context` needs (``collector.configtypes.TLSServerConfig`` has it)."""

    @property
    def cert_file(self) -> str: ...
    @property
    def key_file(self) -> str: ...
    @property
    def client_ca_file(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


def server_ssl_context(tls: TLSSettings) -> ssl.SSLContext | None:
    """A server-side TLS context (TLS 1.2+), requiring client certificates signed by ``client_ca_file`` if set."""
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        ctx.load_verify_locations(tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
