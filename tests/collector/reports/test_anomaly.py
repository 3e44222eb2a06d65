"""Rejection-rate anomalies: a planted spike is flagged, normal noise is not; volume and baseline rules."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest

from collector.reports.anomaly import check_day, find_anomalies
from collector.reports.compute import DecisionTallies, Period, build_usage_report
from collector.reports.config import AnomalyConfig, ReportsConfig
from tests.collector.reports.report_support import row

START = date(2026, 3, 1)
NOISE = [10, 12, 9, 11, 10, 13, 8]  # rejected out of 100 decisions on the 7 baseline days


def series(rejected_per_day: list[int], total: int = 100) -> dict[date, tuple[int, int]]:
    return {START + timedelta(days=i): (total - r, r) for i, r in enumerate(rejected_per_day)}


def test_baseline_statistics_by_hand():
    day = START + timedelta(days=7)
    check = check_day(series([*NOISE, 40]), day, AnomalyConfig())
    rates = [0.10, 0.12, 0.09, 0.11, 0.10, 0.13, 0.08]
    mean = sum(rates) / 7
    stddev = math.sqrt(sum((r - mean) ** 2 for r in rates) / 7)
    assert check.baseline_days == 7
    assert check.baseline_mean == pytest.approx(0.73 / 7)
    assert check.baseline_stddev == pytest.approx(stddev)
    # 3 * stddev (~0.0477) is below min_increase 0.05, so the floor applies
    assert check.threshold == pytest.approx(0.73 / 7 + 0.05)
    assert check.rate == 0.40 and check.evaluated and check.anomalous


def test_planted_spike_is_flagged_and_noise_is_not():
    data = series([*NOISE, 14, 11, 40, 12])
    flagged = find_anomalies(data, data.keys(), AnomalyConfig())
    assert [c.day for c in flagged] == [START + timedelta(days=9)]
    noisy = check_day(data, START + timedelta(days=7), AnomalyConfig())
    assert noisy.evaluated and not noisy.anomalous and noisy.rate == 0.14


def test_flat_baseline_uses_the_minimum_increase():
    data = series([10] * 7 + [15, 16])
    cfg = AnomalyConfig()
    at_threshold = check_day(data, START + timedelta(days=7), cfg)
    assert at_threshold.baseline_stddev == 0 and at_threshold.threshold == pytest.approx(0.15)
    assert not at_threshold.anomalous  # must rise above the threshold, not reach it
    assert check_day(data, START + timedelta(days=8), cfg).baseline_days == 7  # day 7 (0.15) joins the baseline


def test_k_sigma_dominates_on_a_noisy_baseline():
    data = series([0, 40, 0, 40, 0, 40, 0, 50])  # mean 0.1714, stddev ~0.198 -> threshold ~0.766
    check = check_day(data, START + timedelta(days=7), AnomalyConfig())
    assert check.threshold == pytest.approx(check.baseline_mean + 3 * check.baseline_stddev)
    assert not check.anomalous
    assert check_day(data, START + timedelta(days=7), AnomalyConfig(k=1.0)).anomalous


def test_low_volume_day_is_not_evaluated():
    data = series(NOISE)
    data[START + timedelta(days=7)] = (5, 5)  # 50 % rejected, but only 10 decisions (< 20)
    check = check_day(data, START + timedelta(days=7), AnomalyConfig())
    assert check.rate == 0.5 and not check.evaluated and not check.anomalous


def test_thin_baseline_is_not_evaluated():
    data = {
        START + timedelta(days=5): (90, 10),
        START + timedelta(days=6): (90, 10),
        START + timedelta(days=7): (10, 90),
    }
    data[START + timedelta(days=4)] = (3, 3)  # below min_decisions: not part of the baseline
    check = check_day(data, START + timedelta(days=7), AnomalyConfig())
    assert check.baseline_days == 2 and not check.evaluated and not check.anomalous
    assert check_day(data, START + timedelta(days=7), AnomalyConfig(min_baseline_days=2)).anomalous


def test_window_limits_the_baseline():
    data = series([50, 50, 50, 10, 10, 10, 10, 30])  # the old 50 % days fall outside a 4-day window
    assert check_day(data, START + timedelta(days=7), AnomalyConfig(window_days=4)).anomalous
    assert not check_day(data, START + timedelta(days=7), AnomalyConfig(window_days=7)).anomalous


def test_report_flags_user_and_org_days_separately():
    rows = []
    for i, r in enumerate([*NOISE, 11, 12, 10]):
        day = (START + timedelta(days=i)).isoformat()
        rows.append(row(day, "steady@example.com", sessions=1, tools={"edit_tool": (2000 - 20 * r, 20 * r)}))
        spike = 30 if i == 8 else 1  # dave rejects 30 of 50 on day 8 (60 %), normally 1 of 50 (2 %)
        rows.append(row(day, "dave@example.com", sessions=1, tools={"edit_tool": (50 - spike, spike)}))
    period = Period(START + timedelta(days=7), START + timedelta(days=9))
    day8 = (START + timedelta(days=8)).isoformat()

    report = build_usage_report(period, rows, DecisionTallies(), ReportsConfig())
    # org on day 8: (20*12 + 30) / 2050 = 0.1317; its baseline (days 1..7: (20r + 1) / 2050) has mean 0.1036 and
    # stddev 0.0155, so the default threshold is 0.1036 + max(3 * 0.0155, 0.05) = 0.1536: dave's spike is diluted
    assert [(a["scope"], a.get("user"), a["date"]) for a in report["anomalies"]] == [("user", "dave@example.com", day8)]
    dave = report["anomalies"][0]
    assert dave["rejection_rate"] == 0.6 and dave["decisions"] == 50 and dave["rejected"] == 30
    assert dave["baseline_days"] == 7 and dave["baseline_mean"] == pytest.approx(0.02)
    assert dave["baseline_stddev"] == 0 and dave["threshold"] == pytest.approx(0.07)

    # k = 1, floor 0.01: org threshold 0.1036 + 0.0155 = 0.1191 < 0.1317 -> flagged; steady's own day 8
    # (0.12 against 0.1057 + 0.0159 = 0.1216) is still normal
    sensitive = ReportsConfig(anomaly=AnomalyConfig(k=1.0, min_increase=0.01))
    flagged = build_usage_report(period, rows, DecisionTallies(), sensitive)["anomalies"]
    assert [(a["scope"], a.get("user"), a["date"]) for a in flagged] == [
        ("org", None, day8),
        ("user", "dave@example.com", day8),
    ]
    assert flagged[0]["rejection_rate"] == pytest.approx(270 / 2050, abs=1e-4)
