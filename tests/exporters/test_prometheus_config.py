"""Configuration of ``exporters.prometheus``: defaults, validation with the key path, secrets kept out of text."""

from __future__ import annotations

from typing import Any

import pytest

import exporters
from collector.config import load_text
from collector.configtypes import ConfigError
from exporters.prometheus import PrometheusExporter
from exporters.prometheus.config import PrometheusConfig

SALT = "pepper-0123456789-abcdef"


def build(section: dict[str, Any], key: str = "prometheus") -> PrometheusConfig:
    cfg = exporters.build_configs({key: section})[key]
    assert isinstance(cfg, PrometheusConfig)
    return cfg


def test_defaults() -> None:
    cfg = build({})
    assert cfg.enabled is True
    assert cfg.max_series_per_metric == 2000
    assert cfg.series_expiration == 3600.0
    assert cfg.poll_interval == 1.0
    assert cfg.per_user.mode == "off"
    assert exporters.registry()["prometheus"] is PrometheusExporter
    assert PrometheusExporter.pull is True


def test_named_key_and_values() -> None:
    cfg = build(
        {
            "max_series_per_metric": 50,
            "series_expiration": "2h",
            "poll_interval": "250ms",
            "mcp_servers": ["github", "jira"],
            "per_user": {"mode": "hash", "salt": SALT},
        },
        key="prometheus/main",
    )
    assert cfg.series_expiration == 7200.0 and cfg.poll_interval == 0.25
    assert cfg.mcp_servers == ("github", "jira")
    assert cfg.per_user.salt.get() == SALT


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"batch": {"max_records": 5}}, "exporters.prometheus.batch: unknown key"),
        ({"retry": {}}, "exporters.prometheus.retry: unknown key"),
        ({"max_series_per_metric": 0}, "exporters.prometheus.max_series_per_metric: must be between"),
        ({"max_series_per_metric": "many"}, "exporters.prometheus.max_series_per_metric: expected an integer"),
        ({"series_expiration": "30s"}, "exporters.prometheus.series_expiration: must be at least 1m"),
        ({"series_expiration": "soon"}, "exporters.prometheus.series_expiration: invalid duration"),
        ({"poll_interval": "2m"}, "exporters.prometheus.poll_interval: must be between"),
        ({"poll_batch": 0}, "exporters.prometheus.poll_batch: must be between"),
        ({"mcp_servers": ["a__b"]}, r"exporters.prometheus.mcp_servers\[0\]"),
        ({"mcp_servers": "github"}, "exporters.prometheus.mcp_servers: expected a list"),
        ({"per_user": {"mode": "everyone"}}, "exporters.prometheus.per_user.mode: must be one of off, allowlist, hash"),
        ({"per_user": {"mode": "allowlist"}}, "exporters.prometheus.per_user.allow: mode allowlist needs"),
        ({"per_user": {"mode": "allowlist", "allow": [" "]}}, r"exporters.prometheus.per_user.allow\[0\]: must not"),
        ({"per_user": {"mode": "hash"}}, "exporters.prometheus.per_user.salt: mode hash needs a secret salt"),
        ({"per_user": {"mode": "hash", "salt": "short"}}, "exporters.prometheus.per_user.salt"),
        ({"per_user": {"salt": 12345678901234567}}, "exporters.prometheus.per_user.salt: expected a string"),
        ({"per_user": {"modes": "off"}}, "exporters.prometheus.per_user.modes: unknown key"),
    ],
)
def test_bad_values_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(section)


def test_only_one_prometheus_destination() -> None:
    with pytest.raises(ConfigError, match="at most one prometheus destination per bridge"):
        exporters.build_configs({"prometheus": {}, "prometheus/second": {}})


def test_salt_never_appears_in_text() -> None:
    cfg = build({"per_user": {"mode": "hash", "salt": SALT}})
    exp = exporters.create("prometheus", cfg)
    for text in (repr(cfg), str(cfg), repr(cfg.per_user), repr(exp.accumulator.users)):
        assert SALT not in text
    with pytest.raises(ConfigError) as err:
        build({"per_user": {"mode": "hash", "salt": "tiny-secret"}})
    assert "tiny-secret" not in str(err.value)


def test_yaml_loader_with_env_salt() -> None:
    text = """
exporters:
  prometheus:
    per_user:
      mode: hash
      salt: ${env:CCBRIDGE_TEST_SALT}
"""
    cfg = load_text(text, environ={"CCBRIDGE_TEST_SALT": SALT})
    assert cfg.exporters["prometheus"].per_user.salt.get() == SALT
    with pytest.raises(ConfigError, match="CCBRIDGE_TEST_SALT is not set"):
        load_text(text, environ={})
