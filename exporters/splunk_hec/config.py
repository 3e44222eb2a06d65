"""Configuration of the ``splunk_hec`` destination (``exporters.splunk_hec[/<name>]``) and its validation.

Every check names the key path (``exporters.splunk_hec/siem.routing[1].index: ...``) and never echoes the token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from collector.configtypes import ByteSize, ConfigError, Duration, Secret
from collector.delivery.settings import DestinationSettings
from exporters.fieldpolicy import FieldPolicyConfig
from exporters.httpclient import TLSClientConfig

COLLECTOR_PATH = "/services/collector"
DEFAULT_SOURCETYPE = "claude:code:audit"
DEFAULT_SOURCE = "ccbridge"
MIN_REQUEST_BYTES = 1024

_INDEX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SAFE_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


def check_index_name(name: str, path: str) -> None:
    """Splunk index names: lowercase letters, digits, ``_`` and ``-``, not starting with ``_`` or ``-``."""
    if not _INDEX_RE.match(name) or "kvstore" in name:
        raise ConfigError(
            f"{path}: invalid Splunk index name {name!r} (lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit)"
        )


def check_field_path(key: str, path: str) -> None:
    if not key or key.startswith(".") or key.endswith(".") or ".." in key:
        raise ConfigError(f"{path}: invalid field path {key!r} (dotted record path such as organization.id)")


@dataclass(frozen=True)
class RoutingRule:
    """``routing[i]``: when every ``match`` field of a record has one of the given values, send it to ``index``.

    ``match`` maps dotted record paths (``kind``, ``organization.id``, ``tool.decision``, ``user.email``) to a value
    or a list of values; values are compared as strings (``true``/``false`` for booleans).
    """

    match: dict[str, str | bool | list[str | bool]] = field(default_factory=dict)
    index: str = ""

    def validate(self, path: str) -> None:
        if not self.match:
            raise ConfigError(f"{path}.match: required (a mapping of record field paths to values)")
        for key, value in self.match.items():
            check_field_path(key, f"{path}.match")
            if isinstance(value, list) and not value:
                raise ConfigError(f"{path}.match.{key}: an empty list never matches; give at least one value")
        if not self.index:
            raise ConfigError(f"{path}.index: required (the index records matching this rule go to)")
        check_index_name(self.index, f"{path}.index")


@dataclass(frozen=True)
class SplunkHecConfig(DestinationSettings, FieldPolicyConfig):
    """Keys of one ``exporters.splunk_hec[/<name>]`` section (plus the common delivery keys and the field policy)."""

    endpoint: str = ""
    token: Secret = Secret("")
    index: str = ""
    source: str = DEFAULT_SOURCE
    sourcetype: str = DEFAULT_SOURCETYPE
    host: str = ""
    ack: bool = False
    ack_timeout: Duration = Duration(120.0)
    ack_poll_interval: Duration = Duration(1.0)
    timeout: Duration = Duration(30.0)
    max_request_bytes: ByteSize = ByteSize(1_000_000)
    max_request_events: int = 500
    compression: Literal["gzip", "none"] = "gzip"
    health_check_interval: Duration = Duration(30.0)
    routing: list[RoutingRule] = field(default_factory=list)
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)

    def validate(self, path: str) -> None:
        DestinationSettings.validate(self, path)
        FieldPolicyConfig.validate(self, path)
        self._validate_endpoint(path)
        if not self.token:
            raise ConfigError(f"{path}.token: required (the HEC token; use ${{env:SPLUNK_HEC_TOKEN}})")
        if not _SAFE_TOKEN_RE.match(self.token.get()):
            raise ConfigError(f"{path}.token: must not contain spaces or control characters")
        if self.index:
            check_index_name(self.index, f"{path}.index")
        for key in ("source", "sourcetype"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{path}.{key}: must not be empty")
        if self.ack_timeout < 1:
            raise ConfigError(f"{path}.ack_timeout: must be >= 1s")
        if not 0.01 <= self.ack_poll_interval <= self.ack_timeout:
            raise ConfigError(f"{path}.ack_poll_interval: must be between 10ms and ack_timeout")
        if self.timeout <= 0:
            raise ConfigError(f"{path}.timeout: must be > 0")
        if self.max_request_bytes < MIN_REQUEST_BYTES:
            raise ConfigError(f"{path}.max_request_bytes: must be >= 1KiB")
        if self.max_request_events < 1:
            raise ConfigError(f"{path}.max_request_events: must be >= 1")
        if 0 < self.health_check_interval < 1:
            raise ConfigError(f"{path}.health_check_interval: must be 0 (only at start) or >= 1s")
        for i, rule in enumerate(self.routing):
            rule.validate(f"{path}.routing[{i}]")

    def _validate_endpoint(self, path: str) -> None:
        where = f"{path}.endpoint"
        if not self.endpoint:
            raise ConfigError(f"{where}: required (base URL of the HEC, e.g. https://splunk.example.com:8088)")
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: must be an http:// or https:// URL (got {self.endpoint!r})")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{where}: give the base URL only, without query, fragment or credentials")
        if COLLECTOR_PATH in parts.path:
            raise ConfigError(
                f"{where}: give the base URL (e.g. https://splunk.example.com:8088); "
                f"ccbridge adds {COLLECTOR_PATH}/event itself"
            )

    @property
    def base_url(self) -> str:
        """The endpoint without a trailing slash (a path prefix, e.g. behind a proxy, is kept)."""
        return self.endpoint.rstrip("/")
