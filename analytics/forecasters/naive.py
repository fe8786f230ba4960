"""Seasonal-naive forecaster: tomorrow at this time = today at this time (or the last value)."""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, daily_period, future_ts, interval


class SeasonalNaive:
    """x[t+h] = x[t+h-k*p] for the daily period p (the MASE baseline)."""

    name = "seasonal_naive"

    def __init__(self) -> None:
        self.ts = np.zeros(0, np.int64)
        self.hist = np.zeros(0)
        self.period = 0

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> SeasonalNaive:
        """Remember the last period of history."""
        self.ts = np.asarray(ts_ms, np.int64)
        v = np.asarray(values, float)
        self.period = daily_period(self.ts, len(v))
        self.hist = v[-max(self.period, 1) * 2:]
        return self

    def predict(self, horizon: int) -> Forecast:
        """Repeat the last season."""
        p = max(self.period, 1)
        last = self.hist[-p:]
        mean = np.asarray([last[i % p] for i in range(horizon)], float)
        resid = self.hist[p:] - self.hist[:-p] if len(self.hist) > p else np.zeros(0)
        lo, hi = interval(mean, resid, grow=False)
        return Forecast(future_ts(self.ts, horizon), mean, lo, hi, self.name)

    def get_state(self) -> dict[str, Any]:
        """Fitted state."""
        return {"ts": self.ts[-len(self.hist):], "hist": self.hist, "period": self.period}
