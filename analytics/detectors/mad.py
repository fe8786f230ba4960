"""Robust streaming baseline: rolling median/MAD z-score, optionally against the daily profile.

Raw surprise = |x - rolling median| / rolling MAD over the last `window` points; with
`seasonal=True` and a detectable daily period, also |x - median of the same time on the previous
`seasons` days| / MAD of those residuals, used instead when the daily pattern explains part of
the spread (its residual MAD is smaller than the plain MAD).
The surprise is calibrated by `Rarity` and debounced.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from legion.analytics.calibration import SortedWindow, robust_scale
from legion.analytics.detectors.base import PeriodTracker, StreamingDetector


def scale_floor(win: SortedWindow) -> float:
    """A floor for robust scales: a small fraction of the series' level and spread."""
    if len(win) == 0:
        return 1e-9
    spread = win.quantile(0.95) - win.quantile(0.05)
    return 1e-3 * max(abs(win.median()), spread) + 1e-9


class MadDetector(StreamingDetector):
    """Rolling median/MAD z-score with optional daily seasonality."""

    name = "mad"

    def __init__(self, window: int = 1000, seasonal: bool = True, seasons: int = 7,
                 rarity_window: int = 2000, decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, window=window, seasonal=seasonal,
                         seasons=seasons)
        self.win = SortedWindow(window)
        self.seasonal = seasonal
        self.seasons = seasons
        self.period = PeriodTracker()
        self.hist: deque[float] = deque()
        self.resid = SortedWindow(window)

    def _surprise(self, ts_ms: int, x: float) -> float:
        p = self.period.update(ts_ms)
        z = 0.0
        if len(self.win) >= 10:
            floor = scale_floor(self.win)
            med, sc = robust_scale(self.win, floor)
            z = abs(x - med) / sc
            if self.seasonal and p and len(self.hist) >= p:
                h = self.hist
                n = len(h)
                same = [h[n - k * p] for k in range(1, self.seasons + 1) if k * p <= n]
                e = x - float(np.median(same))
                if len(self.resid) >= 10:
                    _, rsc = robust_scale(self.resid, floor)
                    if rsc < sc:  # the daily pattern explains part of the spread: use it
                        z = abs(e) / rsc
                self.resid.push(e)
        self.win.push(x)
        if self.seasonal:
            self.hist.append(x)
            limit = max(self.period.period, 1) * self.seasons
            while len(self.hist) > max(limit, 64):
                self.hist.popleft()
        return z

    def _get_state(self) -> dict[str, Any]:
        """Learnt state as plain values and numpy arrays."""
        return {"win": self.win.to_state(), "period": self.period.to_state(),
                "hist": np.asarray(self.hist, float), "resid": self.resid.to_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore state produced by `get_state`."""
        self.win = SortedWindow.from_state(state["win"])
        self.period.load(state["period"])
        self.hist = deque(np.asarray(state["hist"], float).tolist())
        self.resid = SortedWindow.from_state(state["resid"])
