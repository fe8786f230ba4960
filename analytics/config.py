"""The analytics configuration: the `analytics` section, the seed's `ai_settings`, and what a
worker process is handed at start."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from legion.kernel.config import POSITIVE, Rule, check_rules, resolve_endpoint, resolve_path


@dataclass(frozen=True, slots=True)
class AISettings:
    """The seed's switches for anomaly detection, prediction and model retraining."""

    anomaly_detection_enabled: bool = True
    predictive_analytics_enabled: bool = True
    ml_threshold_adjustment: bool = True
    model_retrain_interval: float = 86400.0

    def validate(self) -> list[str]:
        """Every problem of the section, with its key path."""
        return check_rules(self, "ai_settings",
                           [("model_retrain_interval", lambda v: v > 0, POSITIVE)])


@dataclass(frozen=True, slots=True)
class PredictionTarget:
    """How far ahead to forecast a metric and the value that raises a predictive alert."""

    horizon_hours: float
    alert_threshold: float


def _default_predictions() -> dict[str, PredictionTarget]:
    return {
        "cpu_usage": PredictionTarget(6, 80),
        "memory_usage": PredictionTarget(12, 85),
        "response_time": PredictionTarget(3, 5000),
    }


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    """Analytics: the job/result sockets, worker keys and pool, detectors, forecasts, bands."""

    jobs_bind: str = "tcp://127.0.0.1:5558"
    results_bind: str = "tcp://127.0.0.1:5559"
    keys_dir: str = "keys/workers"
    workers: int = 2
    window_size: int = 200
    contamination: float = 0.05
    models_dir: str = "models"
    detector: str = "ensemble"
    node_detector: str = "off"  # or "multivar": one model over each node's host metrics
    anomaly_threshold: float = 0.8
    # Live detection scores the max of each whole step bucket (0 = every raw point): the
    # detectors were built and measured on 5-minute rows (docs/analytics.md, "Live detection
    # on 5-minute maxima").
    detect_step_secs: float = 300.0
    forecast_interval_secs: float = 60.0
    job_timeout_secs: float = 30.0
    band_days: float = 7.0          # learned normal bands: history per (re)computation
    band_step_secs: float = 60.0    # values are averaged per step before the band is learnt
    prediction_config: dict[str, PredictionTarget] = field(default_factory=_default_predictions)

    def validate(self) -> list[str]:
        """Every problem of the section, with its key path."""
        return check_rules(self, "analytics", _RULES)

    def resolved(self, base_dir: str | Path) -> AnalyticsConfig:
        """This section with its endpoints (ipc://) and folders resolved against `base_dir`."""
        return dataclasses.replace(
            self, jobs_bind=resolve_endpoint(base_dir, self.jobs_bind),
            results_bind=resolve_endpoint(base_dir, self.results_bind),
            keys_dir=str(resolve_path(base_dir, self.keys_dir)),
            models_dir=str(resolve_path(base_dir, self.models_dir)))


_RULES: list[Rule] = [
    ("workers", lambda v: v >= 0, "must be >= 0"),
    ("window_size", lambda v: v >= 10, "must be >= 10"),
    ("contamination", lambda v: 0 < v < 0.5, "must be in (0, 0.5)"),
    ("anomaly_threshold", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("forecast_interval_secs", lambda v: v > 0, POSITIVE),
    ("job_timeout_secs", lambda v: v > 0, POSITIVE),
    ("node_detector", lambda v: v in ("off", "multivar"), "must be 'off' or 'multivar'"),
    ("band_days", lambda v: v > 0, POSITIVE),
    ("band_step_secs", lambda v: v >= 1, "must be >= 1"),
    ("detect_step_secs", lambda v: v == 0 or (v >= 1 and float(v).is_integer()),
     "must be 0 (raw points) or a whole number of seconds >= 1"),
]
# The seed's top-level `analysis_interval` paces analysis: checked where the file is composed.
ANALYSIS_INTERVAL_RULE: Rule = ("analysis_interval", lambda v: v > 0, POSITIVE)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker process is handed: endpoints and key paths, already resolved."""

    jobs_endpoint: str
    results_endpoint: str
    keys_dir: str  # the worker's keypair (made there if missing)
    server_public_key_path: str  # the aggregator's public key (`agent.server_public_key_path`)
