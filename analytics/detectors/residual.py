"""Forecast-residual scoring: surprise = |x - one-step forecast| / robust scale of past residuals.

The one-step forecast is the median of the last `short` points plus, when a daily period is
known, the seasonal change seen one period ago (x[t-p] - median of the `short` points before it).
Residual scale = MAD of the last `window` residuals. Calibrated by `Rarity`, debounced.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from legion.analytics.calibration import SortedWindow, robust_scale
from legion.analytics.detectors.base import PeriodTracker, StreamingDetector
from legion.analytics.detectors.mad import scale_floor


class ResidualDetector(StreamingDetector):
    """Robust one-step forecast residual z-score."""

    name = "residual"

    def __init__(self, short: int = 5, window: int = 1000, seasonal: bool = False,
                 rarity_window: int = 2000, decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, short=short, window=window,
                         seasonal=seasonal)
        self.short, self.seasonal = short, seasonal
        self.hist: deque[float] = deque(maxlen=4096)
        self.resid = SortedWindow(window)
        self.level = SortedWindow(window)
        self.period = PeriodTracker()

    def _forecast(self) -> float:
        h = self.hist
        n = len(h)
        base = float(np.median([h[n - i] for i in range(1, self.short + 1)]))
        p = self.period.period
        if self.seasonal and p > 0 and n > p + self.short:
            prev = float(np.median([h[n - p - i] for i in range(1, self.short + 1)]))
            base += h[n - p] - prev
        return base

    def _surprise(self, ts_ms: int, value: float) -> float:
        self.period.update(ts_ms)
        r = 0.0
        if len(self.hist) >= self.short:
            e = value - self._forecast()
            if len(self.resid) >= 10:
                _, sc = robust_scale(self.resid, scale_floor(self.level))
                r = abs(e) / sc
            self.resid.push(e)
        self.hist.append(value)
        self.level.push(value)
        return r

    def _get_state(self) -> dict[str, Any]:
        return {"hist": np.asarray(self.hist, float), "resid": self.resid.to_state(),
                "level": self.level.to_state(), "period": self.period.to_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.hist = deque(np.asarray(state["hist"], float).tolist(), maxlen=4096)
        self.resid = SortedWindow.from_state(state["resid"])
        self.level = SortedWindow.from_state(state["level"])
        self.period.load(state["period"])
