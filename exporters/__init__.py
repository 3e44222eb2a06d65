"""Destinations. Each is a package with a config dataclass and an :class:`~exporters.base.Exporter` subclass.

A config key ``exporters.<type>`` or ``exporters.<type>/<name>`` selects the type by the part before ``/``, as in
the OpenTelemetry Collector, so several destinations of one type can run side by side.
"""

from __future__ import annotations

from typing import Any

from collector.configtypes import ConfigError
from exporters.base import Exporter


def registry() -> dict[str, type[Exporter]]:
    """Exporter classes by type name."""
    from exporters.datadog import DatadogExporter
    from exporters.http import HttpExporter
    from exporters.prometheus import PrometheusExporter
    from exporters.splunk_hec import SplunkHecExporter

    return {cls.type_name: cls for cls in (HttpExporter, SplunkHecExporter, DatadogExporter, PrometheusExporter)}


def type_of(key: str) -> str:
    return key.split("/", 1)[0]


def build_configs(raw: dict[str, Any], path: str = "exporters") -> dict[str, Any]:
    """Typed config per destination key, validated; unknown types and keys are refused naming the path."""
    from collector.config import build, validate_tree

    types = registry()
    out: dict[str, Any] = {}
    for key, section in raw.items():
        kind = type_of(str(key))
        if kind not in types:
            raise ConfigError(f"{path}.{key}: unknown exporter type {kind!r} (known: {', '.join(sorted(types))})")
        cfg = build(types[kind].config_class, section, f"{path}.{key}")
        validate_tree(cfg, f"{path}.{key}")
        out[str(key)] = cfg
    for kind, cls in types.items():
        same = sorted(k for k in out if type_of(k) == kind)
        if getattr(cls, "singleton", False) and len(same) > 1:
            raise ConfigError(f"{path}: at most one {kind} destination per bridge (found {', '.join(same)})")
    return out


def create(key: str, config: Any) -> Exporter:
    return registry()[type_of(key)](key, config)
