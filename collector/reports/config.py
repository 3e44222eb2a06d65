"""Configuration of reports and of the analytics gauges (mounted at ``reports``).

Keys (all documented in docs/configuration.md and, for their meaning, in docs/reports.md):

``reports.tiers.autonomous.*``
    A user is *autonomous* when, over the report period normalized to a week, they have at least
    ``min_sessions_per_week`` sessions, at least ``min_lines_added_per_week`` lines added by Claude Code and an
    edit-tool acceptance rate of at least ``min_acceptance_rate``.
``reports.tiers.conversational.*``
    Otherwise *conversational* with at least ``min_sessions_per_week`` sessions and ``min_lines_added_per_week``
    lines per week; everyone else is *minimal*.
``reports.anomaly.*``
    A day's tool rejection rate is anomalous when it exceeds ``mean + max(k * stddev, min_increase)`` of the
    daily rates of the previous ``window_days`` days, counting only days (the day itself and baseline days) with
    at least ``min_decisions`` decisions, and only with at least ``min_baseline_days`` such baseline days.
``reports.metrics.per_user``
    Also expose the rejection-rate gauges per user (label ``user`` = e-mail). Off by default: one series per
    developer is a cardinality and privacy cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.configtypes import ConfigError

MAX_WINDOW_DAYS = 60


def _check_rate(value: float, path: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{path}: must be between 0 and 1")


def _check_non_negative(value: float, path: str) -> None:
    if value < 0:
        raise ConfigError(f"{path}: must not be negative")


@dataclass(frozen=True)
class AutonomousTier:
    min_sessions_per_week: float = 10.0
    min_lines_added_per_week: float = 1000.0
    min_acceptance_rate: float = 0.8

    def validate(self, path: str) -> None:
        _check_non_negative(self.min_sessions_per_week, f"{path}.min_sessions_per_week")
        _check_non_negative(self.min_lines_added_per_week, f"{path}.min_lines_added_per_week")
        _check_rate(self.min_acceptance_rate, f"{path}.min_acceptance_rate")


@dataclass(frozen=True)
class ConversationalTier:
    min_sessions_per_week: float = 5.0
    min_lines_added_per_week: float = 0.0

    def validate(self, path: str) -> None:
        _check_non_negative(self.min_sessions_per_week, f"{path}.min_sessions_per_week")
        _check_non_negative(self.min_lines_added_per_week, f"{path}.min_lines_added_per_week")


@dataclass(frozen=True)
class TiersConfig:
    autonomous: AutonomousTier = field(default_factory=AutonomousTier)
    conversational: ConversationalTier = field(default_factory=ConversationalTier)


@dataclass(frozen=True)
class AnomalyConfig:
    window_days: int = 7
    k: float = 3.0
    min_increase: float = 0.05
    min_decisions: int = 20
    min_baseline_days: int = 3

    def validate(self, path: str) -> None:
        if not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            raise ConfigError(f"{path}.window_days: must be between 1 and {MAX_WINDOW_DAYS}")
        _check_non_negative(self.k, f"{path}.k")
        _check_rate(self.min_increase, f"{path}.min_increase")
        if self.min_decisions < 1:
            raise ConfigError(f"{path}.min_decisions: must be at least 1")
        if not 1 <= self.min_baseline_days <= self.window_days:
            raise ConfigError(f"{path}.min_baseline_days: must be between 1 and window_days ({self.window_days})")


@dataclass(frozen=True)
class ReportMetricsConfig:
    per_user: bool = False


@dataclass(frozen=True)
class ReportsConfig:
    tiers: TiersConfig = field(default_factory=TiersConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    metrics: ReportMetricsConfig = field(default_factory=ReportMetricsConfig)
