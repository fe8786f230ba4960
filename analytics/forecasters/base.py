"""The `Forecaster` protocol, the `Forecast` result and helpers shared by the forecasters.

A forecaster is fitted on one series (`fit(ts_ms, values)`, oldest first, regular-ish steps) and
predicts `horizon` steps ahead at the series' median step: `predict(horizon) -> Forecast` with a
central path and an 80 % interval. State is plain numbers and numpy arrays (`get_state`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

DAY_MS = 86_400_000
Z80 = 1.2816  # two-sided 80 % normal quantile


@dataclass(frozen=True, slots=True)
class Forecast:
    """Forecast path: timestamps, central values and the 80 % interval (same length)."""

    ts_ms: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    model: str

    def rows(self) -> list[dict[str, Any]]:
        """One dict per step (ts_ms, mean, lower, upper)."""
        return [{"ts_ms": int(t), "mean": float(m), "lower": float(lo), "upper": float(hi)}
                for t, m, lo, hi in zip(self.ts_ms, self.mean, self.lower, self.upper,
                                        strict=True)]


@runtime_checkable
class Forecaster(Protocol):
    """Fits one series and forecasts it with an interval."""

    name: str

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> Forecaster:
        """Learn from the history (oldest first); returns self."""

    def predict(self, horizon: int) -> Forecast:
        """Forecast `horizon` steps after the last fitted point."""

    def get_state(self) -> dict[str, Any]:
        """Fitted state as plain values and numpy arrays."""


def series_step(ts_ms: np.ndarray) -> int:
    """Median positive step between timestamps (ms); 60 s when unknown."""
    d = np.diff(np.asarray(ts_ms, dtype=np.int64))
    d = d[d > 0]
    return int(np.median(d)) if len(d) else 60_000


def daily_period(ts_ms: np.ndarray, n: int) -> int:
    """Points per day when the series has at least two days of history, else 0."""
    step = series_step(ts_ms)
    p = int(round(DAY_MS / step)) if step > 0 else 0
    return p if 4 <= p <= n // 2 else 0


def future_ts(ts_ms: np.ndarray, horizon: int) -> np.ndarray:
    """The timestamps of the next `horizon` steps."""
    step = series_step(ts_ms)
    last = int(ts_ms[-1]) if len(ts_ms) else 0
    return last + step * np.arange(1, horizon + 1, dtype=np.int64)


def interval(mean: np.ndarray, resid: np.ndarray, grow: bool = True) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """80 % interval from one-step residuals (robust sigma), widening like sqrt(h) if `grow`."""
    r = np.asarray(resid, float)
    r = r[np.isfinite(r)]
    sigma = 1.4826 * float(np.median(np.abs(r - np.median(r)))) if len(r) >= 5 else 0.0
    if sigma == 0.0 and len(r):
        sigma = float(np.std(r))
    h = np.arange(1, len(mean) + 1)
    half = Z80 * sigma * (np.sqrt(h) if grow else np.ones(len(h)))
    return mean - half, mean + half


def finite_or(x: float, default: float) -> float:
    """x, or default when not finite."""
    return x if math.isfinite(x) else default
