"""``console``: where the reviewers' console listens, how reviewers authenticate, and the rules refused at start.

A console on a loopback address with no credentials configured gets a one-time login token at start (logged as a
login URL). Anywhere else the console must have reviewer authentication (``console.auth``) *and* TLS
(``console.tls``), or the bridge refuses to start.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from collector.configtypes import ConfigError, Duration, Secret, TLSServerConfig, parse_endpoint
from collector.receivers.auth import check_identity, digest_of_entry

DEFAULT_CONSOLE_ENDPOINT = "127.0.0.1:8080"
TRUSTED_HEADER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class ReviewerTokenConfig:
    """One ``console.auth.tokens`` entry: a token (plain, or ``sha256:<hex>``) and the reviewer it names."""

    token: Secret = Secret("")
    reviewer: str = ""


@dataclass(frozen=True)
class ConsoleAuthConfig:
    tokens: list[ReviewerTokenConfig] = field(default_factory=list)
    tokens_file: str = ""
    trusted_header: str = ""
    trusted_proxies: list[str] = field(default_factory=list)

    @property
    def configured(self) -> bool:
        """True when any reviewer credential is configured (then no one-time token is made)."""
        return bool(self.tokens) or bool(self.tokens_file) or bool(self.trusted_header)

    def validate(self, path: str) -> None:
        seen: dict[bytes, str] = {}
        for i, entry in enumerate(self.tokens):
            where = f"{path}.tokens[{i}]"
            check_identity(entry.reviewer, f"{where}.reviewer")
            digest = digest_of_entry(entry.token.get(), f"{where}.token")
            previous = seen.get(digest)
            if previous is not None and previous != entry.reviewer:
                raise ConfigError(f"{where}.token: the same token is also given to reviewer {previous!r}")
            seen[digest] = entry.reviewer
        if self.trusted_header and not set(self.trusted_header) <= TRUSTED_HEADER_CHARS:
            raise ConfigError(f"{path}.trusted_header: must be an HTTP header name (letters, digits, - and _)")
        if self.trusted_header and not self.trusted_proxies:
            raise ConfigError(
                f"{path}.trusted_proxies: trusted_header needs the proxies' addresses (CIDRs) it is accepted from"
            )
        if self.trusted_proxies and not self.trusted_header:
            raise ConfigError(f"{path}.trusted_proxies: only used with trusted_header, which is not set")
        for i, cidr in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"{path}.trusted_proxies[{i}]: not an address or CIDR: {cidr!r}") from None

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies]


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = True
    endpoint: str = DEFAULT_CONSOLE_ENDPOINT
    tls: TLSServerConfig = field(default_factory=TLSServerConfig)
    auth: ConsoleAuthConfig = field(default_factory=ConsoleAuthConfig)
    session_ttl: Duration = Duration(8 * 3600.0)
    default_period: Duration = Duration(7 * 86400.0)
    verify_interval: Duration = Duration(3600.0)

    def validate(self, path: str) -> None:
        host, _port = parse_endpoint(self.endpoint, f"{path}.endpoint")
        if not 60 <= self.session_ttl <= 7 * 86400:
            raise ConfigError(f"{path}.session_ttl: must be between 1m and 7d")
        if self.default_period <= 0:
            raise ConfigError(f"{path}.default_period: must be positive")
        if self.verify_interval < 60:
            raise ConfigError(f"{path}.verify_interval: must be at least 1m")
        if not self.enabled or is_loopback(host):
            return
        if not self.auth.configured:
            raise ConfigError(
                f"{path}.endpoint: {self.endpoint} is not a loopback address; the console refuses to listen there "
                f"without reviewer authentication ({path}.auth.tokens, tokens_file or trusted_header)"
            )
        if not self.tls.enabled:
            raise ConfigError(
                f"{path}.endpoint: {self.endpoint} is not a loopback address; the console refuses to listen there "
                f"without TLS ({path}.tls.cert_file and key_file)"
            )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``); ``0.0.0.0`` is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
