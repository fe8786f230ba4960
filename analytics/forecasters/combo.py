"""Forecast combination: the median path of robust linear, robust profile and robust Holt-Winters.

Combinations are hard to beat on noisy operational metrics (each member fails differently:
trends, daily cycles, level shifts); the interval is the widest of the members'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast
from legion.analytics.forecasters.holtwinters import HoltWinters
from legion.analytics.forecasters.linear import RobustLinear
from legion.analytics.forecasters.profile import RobustProfile


class ComboForecaster:
    """Median of the members' forecasts, step by step."""

    name = "combo"

    def __init__(self) -> None:
        self.members: list[Any] = [RobustLinear(), RobustProfile(), HoltWinters()]

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> ComboForecaster:
        """Fit every member."""
        for m in self.members:
            m.fit(ts_ms, values)
        return self

    def predict(self, horizon: int) -> Forecast:
        """Median path, widest interval."""
        fcs = [m.predict(horizon) for m in self.members]
        mean = np.median(np.vstack([f.mean for f in fcs]), axis=0)
        half = np.max(np.vstack([(f.upper - f.lower) / 2 for f in fcs]), axis=0)
        return Forecast(fcs[0].ts_ms, mean, mean - half, mean + half, self.name)

    def get_state(self) -> dict[str, Any]:
        """Members' states."""
        return {m.name: m.get_state() for m in self.members}
