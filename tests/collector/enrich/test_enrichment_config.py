"""``enrichment.usage`` and ``reports`` configuration: defaults, accepted values, errors naming the key."""

from __future__ import annotations

import pytest

from collector.config import ConfigError, load_text


def test_defaults():
    cfg = load_text("")
    assert cfg.enrichment.usage.enabled == "auto" and cfg.enrichment.usage.refresh_interval == 60.0
    assert cfg.enrichment.usage.active(False) is False and cfg.enrichment.usage.active(True) is True
    assert cfg.reports.anomaly.window_days == 7 and cfg.reports.metrics.per_user is False
    assert cfg.reports.tiers.autonomous.min_acceptance_rate == 0.8


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("true", True), ("false", False)])
def test_enabled_accepts_auto_and_booleans(value, expected):
    usage = load_text(f"enrichment:\n  usage:\n    enabled: {value}\n").enrichment.usage
    assert usage.enabled == expected and usage.enabled is not None
    assert usage.active(False) is (expected is True)
    assert usage.active(True) is (expected != False)  # noqa: E712


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("enrichment: {usage: {refresh_interval: 0s}}", "enrichment.usage.refresh_interval"),
        ("enrichment: {usage: {refresh_interval: 2h}}", "enrichment.usage.refresh_interval"),
        ("enrichment: {usage: {enabled: maybe}}", "enrichment.usage.enabled"),
        ("enrichment: {usage: {enabled: null}}", "enrichment.usage.enabled"),
        ("enrichment: {usage: {enabled: 1}}", "enrichment.usage.enabled"),
        ("enrichment: {usage: {refresh: 1m}}", "enrichment.usage.refresh"),
        ("reports: {tiers: {autonomous: {min_acceptance_rate: 1.5}}}", "reports.tiers.autonomous.min_acceptance_rate"),
        (
            "reports: {tiers: {autonomous: {min_sessions_per_week: -1}}}",
            "reports.tiers.autonomous.min_sessions_per_week",
        ),
        (
            "reports: {tiers: {conversational: {min_lines_added_per_week: -5}}}",
            "reports.tiers.conversational.min_lines_added_per_week",
        ),
        ("reports: {tiers: {minimal: {}}}", "reports.tiers.minimal"),
        ("reports: {anomaly: {window_days: 0}}", "reports.anomaly.window_days"),
        ("reports: {anomaly: {window_days: 61}}", "reports.anomaly.window_days"),
        ("reports: {anomaly: {k: -0.5}}", "reports.anomaly.k"),
        ("reports: {anomaly: {min_increase: 2}}", "reports.anomaly.min_increase"),
        ("reports: {anomaly: {min_decisions: 0}}", "reports.anomaly.min_decisions"),
        ("reports: {anomaly: {min_baseline_days: 8}}", "reports.anomaly.min_baseline_days"),
        ("reports: {metrics: {per_user: sometimes}}", "reports.metrics.per_user"),
    ],
)
def test_bad_values_name_the_key(text, key):
    with pytest.raises(ConfigError) as info:
        load_text(text)
    assert str(info.value).startswith(key)
