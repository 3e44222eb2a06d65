"""Configuration of the ``prometheus`` destination (``exporters.prometheus`` or ``exporters.prometheus/<name>``).

Prometheus pulls: nothing is pushed, so the delivery keys every push destination has (``batch``, ``retry``,
``backlog``, ``concurrency``) do not exist here and are refused as unknown keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from collector.configtypes import ConfigError, Duration, Secret

MIN_SALT_CHARS = 16
MAX_SERIES_LIMIT = 1_000_000


@dataclass(frozen=True)
class PerUserSettings:
    """Opt-in ``user`` label on every ``claude_code_*`` metric.

    ``off`` (default): no per-user label at all. ``allowlist``: the user's e-mail (or installation ``user.id``) when
    it is in ``allow``, else ``other``. ``hash``: a salted HMAC-SHA256 pseudonym (16 hex digits) of the e-mail, or of
    ``user.id`` when no e-mail is known.
    """

    mode: Literal["off", "allowlist", "hash"] = "off"
    allow: tuple[str, ...] = ()
    salt: Secret = Secret("")

    def validate(self, path: str) -> None:
        for i, entry in enumerate(self.allow):
            if not entry.strip():
                raise ConfigError(f"{path}.allow[{i}]: must not be empty")
        if self.mode == "allowlist" and not self.allow:
            raise ConfigError(f"{path}.allow: mode allowlist needs at least one e-mail or user.id")
        if self.mode == "hash" and len(self.salt.get()) < MIN_SALT_CHARS:
            raise ConfigError(
                f"{path}.salt: mode hash needs a secret salt of at least {MIN_SALT_CHARS} characters "
                "(without it the pseudonyms of known e-mails could be recomputed)"
            )


@dataclass(frozen=True)
class PrometheusConfig:
    """Keys of an ``exporters.prometheus[/<name>]`` section (served on the telemetry endpoint's ``/metrics``)."""

    enabled: bool = True
    max_series_per_metric: int = 2000
    max_generic_metrics: int = 100
    series_expiration: Duration = Duration(3600.0)
    poll_interval: Duration = Duration(1.0)
    poll_batch: int = 5000
    mcp_servers: tuple[str, ...] = ()
    per_user: PerUserSettings = field(default_factory=PerUserSettings)

    def validate(self, path: str) -> None:
        if not 1 <= self.max_series_per_metric <= MAX_SERIES_LIMIT:
            raise ConfigError(f"{path}.max_series_per_metric: must be between 1 and {MAX_SERIES_LIMIT}")
        if not 0 <= self.max_generic_metrics <= 10_000:
            raise ConfigError(f"{path}.max_generic_metrics: must be between 0 and 10000")
        if self.series_expiration < 60.0:
            raise ConfigError(
                f"{path}.series_expiration: must be at least 1m (Claude Code exports metrics every 60s by default)"
            )
        if not 0.01 <= self.poll_interval <= 60.0:
            raise ConfigError(f"{path}.poll_interval: must be between 10ms and 60s")
        if not 1 <= self.poll_batch <= 1_000_000:
            raise ConfigError(f"{path}.poll_batch: must be between 1 and 1000000")
        for i, server in enumerate(self.mcp_servers):
            if not server.strip() or "__" in server:
                raise ConfigError(f"{path}.mcp_servers[{i}]: must be an MCP server name (non-empty, no '__')")
