"""Configuration of the Claude Code Analytics API integration (mounted at ``enrichment.analytics_api``).

The section follows the rest of the config tree: a frozen dataclass whose defaults are a complete (disabled)
configuration, with ``validate(path)`` raising :class:`~collector.config.ConfigError` naming the dotted key.

Keys:

``enabled``
    Run the periodic sync inside the service. The ``ccbridge analytics sync`` command works regardless.
``base_url``
    API origin (a path prefix is allowed, e.g. behind a gateway). ``https`` is required except for loopback
    hosts (local fakes), so the admin key never crosses a network in clear text.
``admin_api_key``
    Admin API key (``sk-ant-admin…``), normally ``${env:ANTHROPIC_ADMIN_API_KEY}``. Required when enabled.
``anthropic_version``
    Value of the ``anthropic-version`` header.
``sync_interval``
    Time between two sync cycles of the service; at least 5 minutes (the spec's polling policy).
``lookback_days``
    Days each cycle re-fetches, ending today (today and yesterday are always included).
``page_limit``
    Records per page, 1..1000.
``request_timeout``
    Limit on one HTTP request, connect to last byte.
``max_retry_elapsed``
    Time budget for one page request including all its retries; when exhausted the sync stops and is
    resumed by the next cycle.
``max_requests_per_second``
    Pacing of the requests of one day's page walk (spec policy: at most 1 request/s while paginating); walks
    of different days are independent and run concurrently (the sync's ``concurrency``, 4). ``0`` disables
    pacing. A 429's ``retry-after`` always pauses every walk.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from collector.configtypes import ConfigError, Duration, Secret

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
MAX_PAGE_LIMIT = 1000
MIN_SYNC_INTERVAL_SECONDS = 300.0
MAX_LOOKBACK_DAYS = 90

_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AnalyticsApiConfig:
    enabled: bool = False
    base_url: str = DEFAULT_BASE_URL
    admin_api_key: Secret = Secret("")
    anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    sync_interval: Duration = Duration(3600.0)
    lookback_days: int = 3
    page_limit: int = MAX_PAGE_LIMIT
    request_timeout: Duration = Duration(30.0)
    max_retry_elapsed: Duration = Duration(300.0)
    max_requests_per_second: float = 1.0

    def validate(self, path: str) -> None:
        """Refuse unusable values; every message names the dotted key and never shows the key value."""
        self._validate_url(f"{path}.base_url")
        key = self.admin_api_key.get()
        if self.enabled and not key:
            raise ConfigError(
                f"{path}.admin_api_key: required when enabled (an Admin API key, sk-ant-admin…, "
                "e.g. ${env:ANTHROPIC_ADMIN_API_KEY})"
            )
        if key and (key != key.strip() or any(c.isspace() or ord(c) < 32 for c in key)):
            raise ConfigError(f"{path}.admin_api_key: contains whitespace or control characters")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.anthropic_version):
            raise ConfigError(f"{path}.anthropic_version: expected a version date such as 2023-06-01")
        if self.sync_interval < MIN_SYNC_INTERVAL_SECONDS:
            raise ConfigError(f"{path}.sync_interval: must be at least 5m (the API's polling policy)")
        if not 1 <= self.lookback_days <= MAX_LOOKBACK_DAYS:
            raise ConfigError(f"{path}.lookback_days: must be between 1 and {MAX_LOOKBACK_DAYS}")
        if not 1 <= self.page_limit <= MAX_PAGE_LIMIT:
            raise ConfigError(f"{path}.page_limit: must be between 1 and {MAX_PAGE_LIMIT}")
        if self.request_timeout <= 0:
            raise ConfigError(f"{path}.request_timeout: must be greater than 0")
        if self.max_retry_elapsed < self.request_timeout:
            raise ConfigError(f"{path}.max_retry_elapsed: must be at least request_timeout")
        if self.max_requests_per_second < 0:
            raise ConfigError(f"{path}.max_requests_per_second: must not be negative (0 disables pacing)")

    def _validate_url(self, path: str) -> None:
        try:
            parts = urlsplit(self.base_url)
            host = parts.hostname or ""
            _ = parts.port
        except ValueError:
            raise ConfigError(f"{path}: not a valid URL") from None
        if parts.scheme not in ("https", "http") or not host:
            raise ConfigError(f"{path}: expected an http(s) URL such as {DEFAULT_BASE_URL}")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"{path}: must not contain credentials")
        if parts.query or parts.fragment:
            raise ConfigError(f"{path}: must not contain a query or fragment")
        if parts.scheme == "http" and not is_loopback_host(host):
            raise ConfigError(f"{path}: https is required (plain http is accepted for loopback hosts only)")

    @property
    def api_origin(self) -> str:
        """``base_url`` without trailing slashes; request paths are appended to it."""
        return self.base_url.rstrip("/")
