"""Robust level + shrunk daily profile, no trend: the default `auto` candidate.

mean[t+h] = L + w * profile[phase(t+h)], where
* profile is the smoothed median daily profile of `profile.daily_profile` and w its
  leave-one-day-out weight in [0, 1] (0 when past days do not predict each other);
* L is the end point of a Theil-Sen line over the last `window` deseasonalised points: a robust
  level that follows a ramp up to now, but the slope is *not* extrapolated. On NAB CPU/cloud,
  traffic and known-cause series an extrapolated (or half, or damped) slope loses to a flat one
  from 6 h on (bench/forecast.py); the `linear` forecaster still extrapolates it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, future_ts, interval
from legion.analytics.forecasters.linear import theil_sen
from legion.analytics.forecasters.profile import fit_seasonal, seasonal_at


class RobustLevel:
    """Robust current level plus the daily profile weighted by its out-of-day predictive power."""

    name = "level"

    def __init__(self, window: int = 144, days: int = 7, smooth_hours: float = 1.0) -> None:
        self.window, self.days, self.smooth_hours = window, days, smooth_hours
        self.ts = np.zeros(0, np.int64)
        self.level = 0.0
        self.profile = np.zeros(1)
        self.weight = 0.0
        self.period = self.start = self.n = 0
        self.resid = np.zeros(0)

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> RobustLevel:
        """Profile and its weight (with two or more days of history), then the level."""
        self.ts = np.asarray(ts_ms, np.int64)
        y = np.asarray(values, float)
        self.n = len(y)
        self.period, self.profile, self.weight, self.start = fit_seasonal(
            self.ts, y, self.days, self.smooth_hours, shrink=True)
        deseason = y - self._seasonal(np.arange(len(y)))
        w = deseason[-self.window:]
        x = np.arange(len(w), dtype=float)
        slope, intercept = theil_sen(x, w)
        self.level = intercept + slope * (len(w) - 1) if len(w) else 0.0
        self.resid = w - (intercept + slope * x)
        return self

    def predict(self, horizon: int) -> Forecast:
        """Flat level plus the weighted profile at each future phase."""
        mean = self.level + self._seasonal(np.arange(self.n, self.n + horizon))
        lo, hi = interval(mean, self.resid, grow=False)
        return Forecast(future_ts(self.ts, horizon), mean, lo, hi, self.name)

    def _seasonal(self, idx: np.ndarray) -> np.ndarray:
        return seasonal_at(idx, self.period, self.profile, self.weight, self.start)

    def get_state(self) -> dict[str, Any]:
        """Fitted state."""
        return {"window": self.window, "level": self.level, "profile": self.profile,
                "weight": self.weight, "period": self.period, "n": self.n,
                "smooth_hours": self.smooth_hours}
