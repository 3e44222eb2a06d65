"""``exporters.datadog[/<name>]`` configuration: every Datadog site maps to the spec's two hosts, endpoint
overrides, defaults, and every invalid value refused with its dotted path (the API key never shown)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import exporters
from collector.config import load_text
from collector.configtypes import ConfigError
from exporters.datadog import DatadogExporter, DatadogExporterConfig
from exporters.datadog.intake import SITES

KEY = "0123456789abcdef0123456789abcdef"

# Datadog's site table ("Getting Started with Datadog Sites", https://docs.datadoghq.com/getting_started/site/).
SPEC_SITES = {
    "datadoghq.com": (
        "https://http-intake.logs.datadoghq.com/api/v2/logs",
        "https://api.datadoghq.com/api/v2/series",
    ),
    "us3.datadoghq.com": (
        "https://http-intake.logs.us3.datadoghq.com/api/v2/logs",
        "https://api.us3.datadoghq.com/api/v2/series",
    ),
    "us5.datadoghq.com": (
        "https://http-intake.logs.us5.datadoghq.com/api/v2/logs",
        "https://api.us5.datadoghq.com/api/v2/series",
    ),
    "datadoghq.eu": (
        "https://http-intake.logs.datadoghq.eu/api/v2/logs",
        "https://api.datadoghq.eu/api/v2/series",
    ),
    "ap1.datadoghq.com": (
        "https://http-intake.logs.ap1.datadoghq.com/api/v2/logs",
        "https://api.ap1.datadoghq.com/api/v2/series",
    ),
    "ap2.datadoghq.com": (
        "https://http-intake.logs.ap2.datadoghq.com/api/v2/logs",
        "https://api.ap2.datadoghq.com/api/v2/series",
    ),
    "uk1.datadoghq.com": (
        "https://http-intake.logs.uk1.datadoghq.com/api/v2/logs",
        "https://api.uk1.datadoghq.com/api/v2/series",
    ),
    "ddog-gov.com": (
        "https://http-intake.logs.ddog-gov.com/api/v2/logs",
        "https://api.ddog-gov.com/api/v2/series",
    ),
    "us2.ddog-gov.com": (
        "https://http-intake.logs.us2.ddog-gov.com/api/v2/logs",
        "https://api.us2.ddog-gov.com/api/v2/series",
    ),
}


def build(key: str = "datadog", **section: Any) -> DatadogExporterConfig:
    section.setdefault("api_key", KEY)
    cfg = exporters.build_configs({key: section})[key]
    assert isinstance(cfg, DatadogExporterConfig)
    return cfg


def refused(**section: Any) -> str:
    with pytest.raises(ConfigError) as err:
        build("datadog/x", **section)
    return str(err.value)


def test_the_site_list_is_exactly_the_specs():
    assert set(SITES) == set(SPEC_SITES)


@pytest.mark.parametrize("site", sorted(SPEC_SITES))
def test_every_site_maps_to_its_logs_and_metrics_hosts(site):
    cfg = build(site=site)
    assert (cfg.logs_url, cfg.series_url) == SPEC_SITES[site]
    exp = exporters.create("datadog", cfg)
    assert isinstance(exp, DatadogExporter)
    assert (exp.logs_url, exp.series_url) == SPEC_SITES[site]


def test_defaults():
    cfg = build()
    assert cfg.site == "datadoghq.com"
    assert cfg.service == "claude-code"
    assert cfg.compression == "gzip"
    assert cfg.send_metrics is True
    assert cfg.metrics_interval == 10
    assert cfg.tags == [] and cfg.fields == {}
    exp = exporters.create("datadog", cfg)
    assert exp.hostname  # the machine's name when not configured


def test_endpoint_overrides_take_a_base_url_or_a_full_url():
    cfg = build(logs_endpoint="http://127.0.0.1:8080", metrics_endpoint="https://proxy.example/dd/series")
    assert cfg.logs_url == "http://127.0.0.1:8080/api/v2/logs"
    assert cfg.series_url == "https://proxy.example/dd/series"
    cfg = build(logs_endpoint="http://127.0.0.1:8080/", site="datadoghq.eu")
    assert cfg.logs_url == "http://127.0.0.1:8080/api/v2/logs"
    assert cfg.series_url == "https://api.datadoghq.eu/api/v2/series"


def test_a_full_yaml_section_loads():
    text = """
exporters:
  datadog/eu:
    site: datadoghq.eu
    api_key: ${env:DD_API_KEY}
    service: cc-audit
    hostname: bridge-01
    tags: ["env:prod", "team:platform"]
    send_metrics: false
    metrics_interval: 30s
    metrics_tag_attributes: [team.id]
    compression: none
    timeout: 10s
    fields: {user.email: keep}
    hash_salt: ${env:SALT}
    tls: {ca_file: /etc/ssl/ca.pem}
    batch: {max_records: 500}
"""
    cfg = load_text(text, environ={"DD_API_KEY": KEY, "SALT": "pepper"}).exporters["datadog/eu"]
    assert isinstance(cfg, DatadogExporterConfig)
    assert cfg.api_key.get() == KEY and cfg.hash_salt.get() == "pepper"
    assert cfg.tags == ["env:prod", "team:platform"]
    assert cfg.metrics_interval == 30 and cfg.send_metrics is False and cfg.compression == "none"
    assert cfg.batch.max_records == 500 and cfg.tls.ca_file == "/etc/ssl/ca.pem"
    assert cfg.fields == {"user.email": "keep"}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"site": "datadoghq.org"}, "datadog/x.site: unknown Datadog site 'datadoghq.org'"),
        ({"site": "app.datadoghq.com"}, "use the site, not the UI host: 'datadoghq.com'"),
        ({"api_key": ""}, "datadog/x.api_key: required"),
        ({"api_key": "abc def"}, "datadog/x.api_key: must not contain spaces"),
        ({"service": "  "}, "datadog/x.service: must not be empty"),
        ({"hostname": "my host"}, "datadog/x.hostname"),
        ({"tags": ["env"]}, "datadog/x.tags[0]: 'env' is not a key:value tag"),
        ({"tags": ["env:prod", "a:b,c:d"]}, "datadog/x.tags[1]"),
        ({"tags": "env:prod"}, "datadog/x.tags: expected a list"),
        ({"logs_endpoint": "ftp://x"}, "datadog/x.logs_endpoint: must be an http:// or https:// URL"),
        ({"metrics_endpoint": "localhost:8080"}, "datadog/x.metrics_endpoint"),
        ({"metrics_interval": 0}, "datadog/x.metrics_interval"),
        ({"metrics_interval": "1500ms"}, "datadog/x.metrics_interval: must be a whole number of seconds"),
        ({"metrics_interval": "6m"}, "datadog/x.metrics_interval: must be a whole number of seconds between 1s and 5m"),
        ({"metrics_tag_attributes": ["user.email"]}, "datadog/x.metrics_tag_attributes[0]: 'user.email'"),
        ({"metrics_tag_attributes": ["session.id"]}, "unbounded tag cardinality"),
        ({"compression": "zstd"}, "datadog/x.compression: must be one of gzip, none"),
        ({"send_metrics": "maybe"}, "datadog/x.send_metrics: expected true or false"),
        ({"fields": {"user.email": "show"}}, "datadog/x.fields.user.email: must be one of keep, drop, hash"),
        ({"fields": {".user": "drop"}}, "datadog/x.fields: invalid field path"),
        ({"tls": {"cert_file": "/c.pem"}}, "datadog/x.tls: cert_file and key_file must be set together"),
        ({"concurrency": 0}, "datadog/x.concurrency"),
        ({"apikey": KEY}, "datadog/x.apikey: unknown key 'apikey'"),
    ],
)
def test_bad_values_are_refused_naming_the_key(section, expected):
    assert expected in refused(**section)


def test_a_schema_other_than_ccbridge_is_refused():
    if "schema" not in {f.name for f in dataclasses.fields(DatadogExporterConfig)}:
        pytest.skip("no common schema key")
    assert "datadog/x.schema: the datadog destination sends ccbridge audit records only" in refused(schema="ocsf")
    assert build(schema="ccbridge").api_key.get() == KEY


def test_the_api_key_never_shows():
    cfg = build(api_key=KEY)
    exp = exporters.create("datadog", cfg)
    for text in (repr(cfg), str(cfg), repr(exp)):
        assert KEY not in text
    assert KEY not in refused(api_key=KEY, site="nowhere")


def test_hash_salt_defaults_to_a_secret_derived_from_the_api_key():
    a, b = build(api_key=KEY), build(api_key=KEY[::-1])
    assert a.effective_salt() != b.effective_salt()
    assert a.effective_salt() == build(api_key=KEY).effective_salt()
    assert KEY not in a.effective_salt()
    assert build(hash_salt="pepper").effective_salt() == "pepper"


def test_the_type_is_registered():
    assert exporters.registry()["datadog"] is DatadogExporter
