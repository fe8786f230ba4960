"""Holt-Winters style seasonal smoothing (additive, damped trend, robust to spikes).

Parameters (alpha, beta, gamma) are picked from a small grid by one-step mean absolute error.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, daily_period, future_ts, interval

GRID_ALPHA = (0.05, 0.2, 0.5)
GRID_BETA = (0.0, 0.02)
GRID_GAMMA = (0.05, 0.2)


def _run(y: np.ndarray, p: int, a: float, b: float, g: float, phi: float
         ) -> tuple[float, float, list[float], np.ndarray]:
    """One pass: (level, trend, season, one-step residuals)."""
    if p:
        level = float(np.mean(y[:p]))
        season = (y[:p] - level).tolist()
        start = p
    else:
        level, season, start = float(y[0]), [0.0], 1
    trend = 0.0
    res = np.empty(len(y) - start)
    m = max(p, 1)
    # Robust (Gelper et al.): the update sees the observation clipped to pred +- 2.5 sigma, sigma
    # an exponentially weighted mean absolute error, so one spike does not move level or season.
    sigma = float(np.mean(np.abs(np.diff(y[:start + 1])))) + 1e-12 if start else 1.0
    for t in range(start, len(y)):
        s = season[t % m] if p else 0.0
        pred = level + phi * trend + s
        x = y[t]
        e = x - pred
        res[t - start] = e
        lim = 2.5 * 1.25 * sigma
        if abs(e) > lim:
            x = pred + (lim if e > 0 else -lim)
        sigma = 0.95 * sigma + 0.05 * min(abs(e), 4 * sigma)
        new_level = a * (x - s) + (1 - a) * (level + phi * trend)
        trend = b * (new_level - level) + (1 - b) * phi * trend
        level = new_level
        if p:
            season[t % m] = g * (x - level) + (1 - g) * s
    return level, trend, season, res


class HoltWinters:
    """Additive Holt-Winters with a damped trend and the daily season (none if < 2 days)."""

    name = "holt_winters"

    def __init__(self, window: int = 2016, phi: float = 0.98) -> None:
        self.window, self.phi = window, phi
        self.ts = np.zeros(0, np.int64)
        self.params = (0.2, 0.0, 0.1)
        self.level = self.trend = 0.0
        self.season: list[float] = [0.0]
        self.period = 0
        self.n = 0
        self.resid = np.zeros(0)

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> HoltWinters:
        """Grid-search (alpha, beta, gamma) on one-step absolute error; keep the final state."""
        self.ts = np.asarray(ts_ms, np.int64)
        y = np.asarray(values, float)[-self.window:]
        self.period = daily_period(self.ts[-len(y):], len(y))
        best = None
        gammas = GRID_GAMMA if self.period else (0.0,)
        for a, b, g in itertools.product(GRID_ALPHA, GRID_BETA, gammas):
            lvl, tr, se, res = _run(y, self.period, a, b, g, self.phi)
            sse = float(np.mean(np.abs(res[len(res) // 4:]))) if len(res) else 0.0
            if best is None or sse < best[0]:
                best = (sse, (a, b, g), lvl, tr, se, res)
        assert best is not None
        _, self.params, self.level, self.trend, self.season, self.resid = best
        self.n = len(y)
        return self

    def predict(self, horizon: int) -> Forecast:
        """Level + damped trend + season."""
        m = max(self.period, 1)
        damp = np.cumsum(self.phi ** np.arange(1, horizon + 1))
        idx = [(self.n + h) % m for h in range(horizon)]
        season = np.asarray([self.season[i] if self.period else 0.0 for i in idx])
        mean = self.level + damp * self.trend + season
        lo, hi = interval(mean, self.resid)
        return Forecast(future_ts(self.ts, horizon), mean, lo, hi, self.name)

    def get_state(self) -> dict[str, Any]:
        """Fitted state."""
        return {"params": list(self.params), "level": self.level, "trend": self.trend,
                "season": np.asarray(self.season), "period": self.period, "n": self.n,
                "phi": self.phi}
