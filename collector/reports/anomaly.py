"""Tool rejection-rate anomalies: a day whose rate rises far above its trailing baseline.

For a day ``D`` with ``n = accepted + rejected`` decisions and rate ``r = rejected / n``:

* the *baseline* is the daily rates of ``D - window_days .. D - 1``, using only days with at least
  ``min_decisions`` decisions (quiet days say little about a rate);
* ``D`` is evaluated only when it has at least ``min_decisions`` decisions itself and the baseline has at least
  ``min_baseline_days`` days;
* ``threshold = mean + max(k * stddev, min_increase)`` (population standard deviation); ``min_increase`` keeps a
  perfectly flat baseline (stddev 0) from flagging every small wobble;
* ``D`` is anomalous when ``r > threshold``.

Pure functions over ``{day: (accepted, rejected)}`` series; the report and the Prometheus gauge share them.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from collector.reports.config import AnomalyConfig

Series = Mapping[date, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class RateCheck:
    """The verdict on one day. ``evaluated`` is false when the day or its baseline had too little volume."""

    day: date
    accepted: int
    rejected: int
    baseline_days: int
    baseline_mean: float | None
    baseline_stddev: float | None
    threshold: float | None
    evaluated: bool
    anomalous: bool

    @property
    def decisions(self) -> int:
        return self.accepted + self.rejected

    @property
    def rate(self) -> float | None:
        n = self.decisions
        return self.rejected / n if n else None


def rejection_rate(accepted: int, rejected: int) -> float | None:
    total = accepted + rejected
    return rejected / total if total else None


def check_day(series: Series, day: date, cfg: AnomalyConfig) -> RateCheck:
    """Evaluate ``day`` of ``series`` against its trailing baseline (see the module docstring)."""
    accepted, rejected = series.get(day, (0, 0))
    rates = []
    for back in range(1, cfg.window_days + 1):
        a, r = series.get(day - timedelta(days=back), (0, 0))
        if a + r >= cfg.min_decisions:
            rates.append(r / (a + r))
    mean = statistics.fmean(rates) if rates else None
    stddev = statistics.pstdev(rates) if rates else None
    threshold = None
    if mean is not None and stddev is not None:
        threshold = mean + max(cfg.k * stddev, cfg.min_increase)
    evaluated = (
        accepted + rejected >= cfg.min_decisions and len(rates) >= cfg.min_baseline_days and threshold is not None
    )
    anomalous = evaluated and threshold is not None and rejected / (accepted + rejected) > threshold
    return RateCheck(day, accepted, rejected, len(rates), mean, stddev, threshold, evaluated, anomalous)


def find_anomalies(series: Series, days: Iterable[date], cfg: AnomalyConfig) -> list[RateCheck]:
    """The anomalous days among ``days``, in order."""
    return [check for check in (check_day(series, d, cfg) for d in sorted(days)) if check.anomalous]
