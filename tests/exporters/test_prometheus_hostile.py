"""Hostile attribute values and metric names on ``/metrics``: control characters replaced, label values capped,
generic ``claude_code.*`` families capped and counted."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.prometheus.accumulator import Accumulator
from exporters.prometheus.collector import PrometheusCollector, attach
from exporters.prometheus.config import PrometheusConfig
from exporters.prometheus.naming import MAX_LABEL_VALUE_CHARS, label_value

S = 1_000_000_000
T0 = 1_795_643_831 * S
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
EVIL = "\x1b[2J\x1b]0;pwned\x07model\rfake_metric 1\x00\x85"


def point(name: str, attrs: dict[str, str], description: str = "") -> dict[str, object]:
    return {
        "name": name,
        "unit": "1",
        "description": description,
        "type": "sum",
        "temporality": "delta",
        "monotonic": True,
        "attributes": attrs,
        "resource": {},
        "start_time_unix_nano": T0,
        "time_unix_nano": T0 + S,
        "value": 1,
    }


def scrape(acc: Accumulator) -> str:
    registry = CollectorRegistry()
    attach(registry, PrometheusCollector(acc, None))
    return generate_latest(registry).decode()


def test_control_characters_never_reach_the_exposition() -> None:
    acc = Accumulator()
    acc.add_point(point("claude_code.token.usage", {"model": EVIL, "type": EVIL}))
    acc.add_point(point("claude_code.custom.thing", {"anything": EVIL, "tool_name": EVIL}, description=EVIL))
    acc.add_record({"id": "r1", "kind": "tool_decision", "tool": {"name": EVIL, "decision": EVIL}})
    text = scrape(acc)
    assert "\x1b" not in text and "\r" not in text and "\x00" not in text
    body = "\n".join(line for line in text.splitlines())
    assert CONTROL.search(body) is None
    assert not any(line.startswith("fake_metric") for line in text.splitlines())
    values = [v for fam in text_string_to_metric_families(text) for s in fam.samples for v in s.labels.values()]
    assert any("model" in v and "\ufffd" in v for v in values)


def test_label_values_are_capped() -> None:
    long = "A" * 10_000
    assert len(label_value(long)) == MAX_LABEL_VALUE_CHARS
    assert label_value(long).endswith("...")
    assert label_value("claude-opus-4-8") == "claude-opus-4-8"
    acc = Accumulator()
    acc.add_point(point("claude_code.custom.thing", {"anything": long}))
    text = scrape(acc)
    assert long not in text
    assert max(len(line) for line in text.splitlines()) < 1000


def test_generic_families_are_capped_and_counted() -> None:
    acc = Accumulator(max_generic_families=3)
    outcomes = [acc.add_point(point(f"claude_code.spam{i}", {"k": "v"})) for i in range(10)]
    assert outcomes[:3] == ["counted"] * 3
    assert outcomes[3:] == ["family_limit"] * 7
    # the fixed families are not counted against the cap
    assert acc.add_point(point("claude_code.token.usage", {"model": "m", "type": "input"})) == "counted"
    # a known generic family keeps taking points
    assert acc.add_point(point("claude_code.spam0", {"k": "w"})) == "counted"
    text = scrape(acc)
    assert "spam3" not in text
    assert 'reason="family_limit"' in text
    assert re.search(r'ccbridge_prometheus_ignored_points_total\{reason="family_limit"\} 7\.0', text)


def test_overlong_metric_names_are_ignored() -> None:
    acc = Accumulator()
    assert acc.add_point(point("claude_code." + "x" * 5000, {})) == "invalid"


def test_family_cap_is_configurable() -> None:
    assert PrometheusConfig().max_generic_metrics == 100
