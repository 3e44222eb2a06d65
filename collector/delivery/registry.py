"""Destination types, found through the ``ccbridge.destinations`` entry points (``pyproject.toml``).

Each entry point names an :class:`~collector.delivery.api.Exporter` subclass (``http = "exporters.http:HttpExporter"``),
as the OpenTelemetry Collector's builder lists component factories. ``collector`` never imports an exporter module:
the classes are loaded from the installed distribution's metadata, so imports point one way (``exporters`` use
``collector.delivery.api``) and another distribution can add a destination type by declaring an entry point.

A config key ``exporters.<type>`` or ``exporters.<type>/<name>`` selects the type by the part before ``/``, so several
destinations of one type can run side by side.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from collector.configtypes import ConfigError
from collector.delivery.api import Exporter

GROUP = "ccbridge.destinations"


@functools.cache
def registry() -> dict[str, type[Exporter]]:
    """Exporter classes by type name, from the installed entry points."""
    found: dict[str, type[Exporter]] = {}
    for ep in metadata.entry_points(group=GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Exporter)):
            raise ConfigError(f"entry point {GROUP}:{ep.name} ({ep.value}) is not an Exporter class")
        if getattr(cls, "type_name", ep.name) != ep.name:
            raise ConfigError(f"entry point {GROUP}:{ep.name} names {ep.value}, whose type_name is {cls.type_name!r}")
        found[ep.name] = cls
    if not found:
        raise ConfigError(
            f"no destination types registered (entry point group {GROUP}); install ccbridge (pip install .) so its "
            "metadata is present"
        )
    return found


def type_of(key: str) -> str:
    return key.split("/", 1)[0]


def create(key: str, config: Any) -> Exporter:
    """The destination ``key`` (``<type>`` or ``<type>/<name>``) built from its typed config."""
    return registry()[type_of(key)](key, config)
