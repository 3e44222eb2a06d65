"""Every configuration key is documented in docs/configuration.md (and nothing documented is unknown)."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import exporters
from collector.config import Config
from collector.delivery.settings import DestinationSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _keys(cls: type, prefix: str) -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, path)
        elif f.name != "exporters":
            out.append(path)
    return out


def documented() -> set[str]:
    return set(re.findall(r"^\| `([a-z_./<>]+)` \|", DOC.read_text(), flags=re.M))


def test_every_core_key_is_documented() -> None:
    missing = [k for k in _keys(Config, "") if k not in documented()]
    assert not missing, f"undocumented keys: {missing}"


def test_every_destination_key_is_documented() -> None:
    doc = documented()
    common = {f"exporters.<key>.{k}" for k in _keys(DestinationSettings, "")}
    assert common <= doc, f"undocumented common keys: {sorted(common - doc)}"
    for type_name, cls in exporters.registry().items():
        own = [k for k in _keys(cls.config_class, "") if f"exporters.<key>.{k}" not in common]
        missing = [k for k in own if f"exporters.{type_name}/<name>.{k}" not in doc]
        assert not missing, f"undocumented keys of exporter type {type_name}: {missing}"


def test_documented_keys_exist() -> None:
    known = set(_keys(Config, ""))
    for key in documented():
        if key.startswith("exporters."):
            continue
        assert key in known, f"docs/configuration.md documents {key}, which the config does not have"
