"""Configuration of usage enrichment and identity backfill (mounted at ``enrichment.usage``).

Keys:

``enabled``
    ``true``/``false`` switches enrichment on or off; ``auto`` (the default) means: on whenever
    ``enrichment.analytics_api.enabled`` is on. With enrichment on, every audit record of a known user carries
    ``usage`` (that user's latest day from ``<data_dir>/analytics.db``), and records that lack ``user.email`` get it
    backfilled from earlier records of the same ``user.account_uuid`` or ``user.id``. Switching it on without the
    API sync uses whatever ``ccbridge analytics sync`` stored.
``refresh_interval``
    How often each worker re-reads the usage summaries and learned identities from ``analytics.db`` (the primary
    worker also re-reads right after each sync). 1s..1h.
``identity_backfill``
    Learn ``user.id``/``user.account_uuid`` -> e-mail mappings from records and fill ``user.email`` on records
    without one (``user.identity_source: backfill``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collector.configtypes import ConfigError, Duration

MIN_REFRESH_SECONDS = 1.0
MAX_REFRESH_SECONDS = 3600.0


@dataclass(frozen=True)
class UsageEnrichmentConfig:
    enabled: Literal["auto", True, False] = "auto"
    refresh_interval: Duration = Duration(60.0)
    identity_backfill: bool = True

    def validate(self, path: str) -> None:
        if not isinstance(self.enabled, bool) and self.enabled != "auto":
            raise ConfigError(f"{path}.enabled: expected true, false or auto; got {self.enabled!r}")
        if not MIN_REFRESH_SECONDS <= self.refresh_interval <= MAX_REFRESH_SECONDS:
            raise ConfigError(f"{path}.refresh_interval: must be between 1s and 1h")

    def active(self, analytics_api_enabled: bool) -> bool:
        """Whether enrichment runs: ``enabled`` when true or false, with ``auto`` whenever the sync is enabled."""
        if self.enabled == "auto":
            return analytics_api_enabled
        return bool(self.enabled)
