"""Robust streaming baseline: rolling median/MAD z-score, optionally against the daily profile.

Raw surprise z = |x - rolling median| / rolling MAD over the last `window` points; with
`seasonal=True` and a detectable daily period, also |x - median of the same time on the previous
`seasons` days| / MAD of those residuals, used instead when the daily pattern explains part of
the spread (its residual MAD is smaller than the plain MAD).

Time-of-day tolerance (`tolerance`, a fraction of the day; default 1/24 = +-1 hour): daily events
drift (a nightly job spikes at 02:05 one day and 02:45 the next), so the same-time median misses
them and they look new every day. For each previous day the point's distance to the range
[min, max] of that day's values within +-tolerance of the same time is taken (0 inside the
range); the median of these over the days, divided by the residual MAD, is the *tolerant*
surprise. The point is scored on min(z, tolerant surprise): explained away when something at
least as extreme happened around this time on most previous days. The calibration history
(`Rarity`) still learns z itself, so explaining away recurring events lowers their scores without
making every other surprise look rarer. `tolerance=0` turns this off.
The surprise is calibrated by `Rarity` and debounced.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from legion.analytics.calibration import SortedWindow, robust_scale, spread_floor
from legion.analytics.detectors.base import PeriodTracker, StreamingDetector


def scale_floor(win: SortedWindow) -> float:
    """The window's `spread_floor`."""
    if len(win) == 0:
        return 1e-9
    return float(spread_floor(win.quantile(0.95) - win.quantile(0.05), win.median()))


class MadDetector(StreamingDetector):
    """Rolling median/MAD z-score with optional daily seasonality (time-of-day tolerant)."""

    name = "mad"

    def __init__(self, window: int = 1000, seasonal: bool = True, seasons: int = 7,
                 tolerance: float = 1 / 24, rarity_window: int = 2000, decades: float = 4.0,
                 debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, window=window, seasonal=seasonal,
                         seasons=seasons, tolerance=tolerance)
        self.win = SortedWindow(window)
        self.seasonal = seasonal
        self.seasons = seasons
        self.tolerance = float(tolerance)
        self.period = PeriodTracker()
        self.hist: list[float] = []
        self.resid = SortedWindow(window)
        self._scored = 0.0  # the surprise this point is scored on (<= the one learnt)

    def _half_width(self, p: int) -> int:
        """Tolerance in points (0 = off) for a period of p points."""
        return max(1, int(round(p * self.tolerance))) if self.tolerance > 0 else 0

    def _tolerant(self, x: float, p: int, half: int) -> float:
        """Median over previous days of |distance of x to that day's range around this time|."""
        h = self.hist
        n = len(h)
        dists = []
        for k in range(1, self.seasons + 1):
            c = n - k * p
            if c < 0:
                break
            seg = h[max(0, c - half):c + half + 1]
            lo, hi = min(seg), max(seg)
            dists.append(x - hi if x > hi else (x - lo if x < lo else 0.0))
        return abs(statistics.median(dists))

    def logp(self, ts_ms: int, value: float) -> float:
        """-log10 tail probability of the (possibly explained-away) surprise; learns z."""
        z = self._surprise(ts_ms, value)
        lp = self.rarity.log_p(self._scored)
        if math.isfinite(z):
            self.rarity.win.push(z)
        return lp

    def _surprise(self, ts_ms: int, x: float) -> float:
        p = self.period.update(ts_ms)
        z = 0.0
        scored = None
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
                    half = self._half_width(p)
                    if half:
                        scored = min(z, self._tolerant(x, p, half) / rsc)
                self.resid.push(e)
        self.win.push(x)
        self._scored = z if scored is None else scored
        if self.seasonal:
            self.hist.append(x)
            pp = max(self.period.period, 1)
            keep = max(pp * self.seasons + self._half_width(pp) + 1, 64)
            if len(self.hist) > 2 * keep:  # amortised trim: the list holds keep..2*keep points
                del self.hist[:len(self.hist) - keep]
        return z

    def _get_state(self) -> dict[str, Any]:
        """Learnt state as plain values and numpy arrays."""
        return {"win": self.win.to_state(), "period": self.period.to_state(),
                "hist": np.asarray(self.hist, float), "resid": self.resid.to_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore state produced by `get_state`."""
        self.win = SortedWindow.from_state(state["win"])
        self.period.load(state["period"])
        self.hist = np.asarray(state["hist"], float).tolist()
        self.resid = SortedWindow.from_state(state["resid"])
