"""Destinations. Each is a package with a config dataclass and an :class:`~collector.delivery.api.Exporter` subclass,
registered as a ``ccbridge.destinations`` entry point in ``pyproject.toml``.

A config key ``exporters.<type>`` or ``exporters.<type>/<name>`` selects the type by the part before ``/``, as in
the OpenTelemetry Collector, so several destinations of one type can run side by side. The registry lives in
:mod:`collector.delivery.registry` and the config building in :mod:`collector.config`; the names below are kept for
callers that used them from here (imports point from ``exporters`` to ``collector`` only).
"""

from __future__ import annotations

from collector.config import build_exporter_configs as build_configs
from collector.delivery.registry import create, registry, type_of

__all__ = ["build_configs", "create", "registry", "type_of"]
