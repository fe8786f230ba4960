"""Robust level + daily profile: recent median plus the median same-time-of-day deviation."""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, daily_period, future_ts, interval


class RobustProfile:
    """mean[t+h] = median(last `level_points`) + median over past days of the phase's deviation."""

    name = "profile"

    def __init__(self, level_points: int = 12, days: int = 7) -> None:
        self.level_points, self.days = level_points, days
        self.ts = np.zeros(0, np.int64)
        self.level = 0.0
        self.profile = np.zeros(1)
        self.period = 0
        self.n = 0
        self.resid = np.zeros(0)

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> RobustProfile:
        """Compute the level and, with two or more days of history, the daily profile."""
        self.ts = np.asarray(ts_ms, np.int64)
        y = np.asarray(values, float)
        self.n = len(y)
        self.period = p = daily_period(self.ts, len(y))
        if p:
            k = min(self.days, len(y) // p)
            block = y[len(y) - k * p:].reshape(k, p)
            dev = block - np.median(block, axis=1, keepdims=True)
            self.profile = np.median(dev, axis=0)
            phase = (np.arange(len(y)) - (len(y) - k * p)) % p
            deseason = y - self.profile[phase]
        else:
            self.profile = np.zeros(1)
            deseason = y
        self.level = float(np.median(deseason[-self.level_points:]))
        self.resid = np.diff(deseason[-self.level_points * 20:])
        return self

    def predict(self, horizon: int) -> Forecast:
        """Level plus the profile at each future phase."""
        p = max(self.period, 1)
        # Phase of point index i is (i - start) % p with start = n - k*p, i.e. i % p shifted.
        k = self.n // p if self.period else 0
        start = self.n - k * p if self.period else 0
        idx = (np.arange(self.n, self.n + horizon) - start) % p
        mean = self.level + (self.profile[idx] if self.period else np.zeros(horizon))
        lo, hi = interval(mean, self.resid / np.sqrt(2))
        return Forecast(future_ts(self.ts, horizon), mean, lo, hi, self.name)

    def get_state(self) -> dict[str, Any]:
        """Fitted state."""
        return {"level": self.level, "profile": self.profile, "period": self.period,
                "n": self.n}
