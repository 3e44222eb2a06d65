"""The custom collector: exposition (text and OpenMetrics), self-metrics, registration in both scrape modes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from collector.telemetry.server import EXTRA_ATTRIBUTE, scrape_registry
from exporters.prometheus.accumulator import Accumulator
from exporters.prometheus.collector import PrometheusCollector, attach, detach

S = 1_000_000_000
T0 = 1_795_643_831 * S


def filled() -> Accumulator:
    acc = Accumulator(max_series_per_metric=1)
    for model, value in (("claude-opus-5-5", 0.25), ("other", 1.0)):
        acc.add_point(
            {
                "name": "claude_code.cost.usage",
                "unit": "USD",
                "type": "sum",
                "temporality": "delta",
                "monotonic": True,
                "attributes": {"model": model, "query_source": "main", "session.id": f"sess-{model}"},
                "resource": {},
                "start_time_unix_nano": T0,
                "time_unix_nano": T0 + S,
                "value": value,
            }
        )
    acc.add_point(
        {
            "name": "claude_code.context.size",
            "unit": "By",
            "type": "gauge",
            "attributes": {"kind": "main"},
            "resource": {},
            "time_unix_nano": T0,
            "value": 42,
        }
    )
    acc.add_record({"id": "r1", "kind": "tool_decision", "tool": {"name": "Bash", "decision": "reject"}})
    return acc


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_text_exposition() -> None:
    reg = CollectorRegistry()
    reg.register(PrometheusCollector(filled(), lambda: {"errors": 2.0, "last_success": 1234.5, "records_read": 7.0}))
    text = generate_latest(reg).decode()
    got = samples(text)
    assert got[("claude_code_cost_usage_usd_total", (("model", "claude-opus-5-5"), ("query_source", "main")))] == 0.25
    overflow = (("model", "__overflow__"), ("query_source", "__overflow__"))
    assert got[("claude_code_cost_usage_usd_total", overflow)] == 1.0
    assert ("claude_code_cost_usage_usd_created", overflow) in got
    assert got[("claude_code_context_size_bytes", (("kind", "main"),))] == 42
    labels = (("approval_mode", ""), ("decision", "reject"), ("source", ""), ("tool", "Bash"))
    assert got[("claude_code_tool_decisions_total", labels)] == 1.0
    assert got[("ccbridge_prometheus_series_overflow_total", (("metric", "claude_code_cost_usage_usd_total"),))] == 1
    assert got[("ccbridge_prometheus_series", (("metric", "claude_code_cost_usage_usd_total"),))] == 2
    assert got[("ccbridge_prometheus_counted_points_total", ())] == 3
    assert got[("ccbridge_prometheus_tail_errors_total", ())] == 2
    assert got[("ccbridge_prometheus_tail_last_success_timestamp_seconds", ())] == 1234.5
    assert got[("ccbridge_prometheus_tail_read_records_total", ())] == 7
    assert "# TYPE claude_code_cost_usage_usd_total counter" in text
    assert "# TYPE claude_code_context_size_bytes gauge" in text
    assert "sess-" not in text and "session_id" not in text


def test_openmetrics_exposition_has_units_and_created() -> None:
    reg = CollectorRegistry()
    reg.register(PrometheusCollector(filled()))
    text = generate_openmetrics(reg).decode()
    assert "# TYPE claude_code_cost_usage_usd counter" in text
    assert "# UNIT claude_code_cost_usage_usd usd" in text
    assert "# UNIT claude_code_context_size_bytes bytes" in text
    assert 'claude_code_cost_usage_usd_created{model="claude-opus-5-5",query_source="main"}' in text
    assert text.endswith("# EOF\n")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/install-system-deps)")
def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    reg.register(PrometheusCollector(filled(), lambda: {"errors": 0.0, "last_success": 1.0}))
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(reg), capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_attach_registers_for_both_scrape_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = CollectorRegistry(auto_describe=True)
    Counter("ccbridge_example", "A self-metric.", registry=reg).inc()
    collector = PrometheusCollector(filled())
    attach(reg, collector)
    assert "claude_code_tool_decisions_total" in generate_latest(scrape_registry(reg)).decode()
    assert getattr(reg, EXTRA_ATTRIBUTE) == [collector]

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # multi-worker: the merged registry
    merged = generate_latest(scrape_registry(reg)).decode()
    assert "claude_code_tool_decisions_total" in merged
    assert "ccbridge_prometheus_series" in merged

    detach(reg, collector)
    detach(reg, collector)  # idempotent
    assert "claude_code_" not in generate_latest(scrape_registry(reg)).decode()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    single = generate_latest(scrape_registry(reg)).decode()
    assert "claude_code_" not in single and "ccbridge_example_total" in single


def test_empty_accumulator_exposes_only_health() -> None:
    reg = CollectorRegistry()
    reg.register(PrometheusCollector(Accumulator()))
    names = {f.name for f in text_string_to_metric_families(generate_latest(reg).decode())}
    assert not any(n.startswith("claude_code_") for n in names)
    assert "ccbridge_prometheus_counted_points" in names
