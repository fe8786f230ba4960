"""Robust linear trend, like Prometheus' `predict_linear` but with a Theil-Sen slope."""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, future_ts, interval


def theil_sen(x: np.ndarray, y: np.ndarray, max_pairs: int = 20000) -> tuple[float, float]:
    """(slope, intercept): median of pairwise slopes (subsampled deterministically)."""
    n = len(x)
    if n < 2:
        return 0.0, float(y[0]) if n else 0.0
    i, j = np.triu_indices(n, 1)
    if len(i) > max_pairs:
        sel = np.linspace(0, len(i) - 1, max_pairs).astype(int)
        i, j = i[sel], j[sel]
    dx = x[j] - x[i]
    ok = dx != 0
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok])) if ok.any() else 0.0
    return slope, float(np.median(y - slope * x))


class RobustLinear:
    """Theil-Sen line over the last `window` points, extrapolated."""

    name = "linear"

    def __init__(self, window: int = 144) -> None:
        self.window = window
        self.ts = np.zeros(0, np.int64)
        self.slope = self.intercept = 0.0
        self.resid = np.zeros(0)

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> RobustLinear:
        """Fit the line on the newest `window` points (x = step index)."""
        self.ts = np.asarray(ts_ms, np.int64)
        y = np.asarray(values, float)[-self.window:]
        x = np.arange(len(y), dtype=float)
        self.slope, self.intercept = theil_sen(x, y)
        self.resid = y - (self.intercept + self.slope * x)
        self.n = len(y)
        return self

    def predict(self, horizon: int) -> Forecast:
        """Extrapolate the line."""
        x = self.n - 1 + np.arange(1, horizon + 1, dtype=float)
        mean = self.intercept + self.slope * x
        lo, hi = interval(mean, self.resid, grow=False)
        return Forecast(future_ts(self.ts, horizon), mean, lo, hi, self.name)

    def get_state(self) -> dict[str, Any]:
        """Fitted state."""
        return {"window": self.window, "slope": self.slope, "intercept": self.intercept,
                "resid": self.resid, "last_ts": int(self.ts[-1]) if len(self.ts) else 0}
