"""Level-shift detector: median of the last `short` points against the `window` points before.

Raw surprise = |median(last short) - median(reference)| / MAD(reference), where the reference
window ends where the short window begins, so a sustained change (a new level) stays visible for
`short` points instead of one. Calibrated by `Rarity`, debounced. Until the reference holds
`min_ref` points the surprise is NaN ("no opinion"): it scores 0 and is not added to the rarity
history (a run of warm-up zeros there made the first real surprise look like a 1-in-10,000 event,
i.e. a full-score alert at point `short + min_ref - 1` of every new series).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from legion.analytics.calibration import SortedWindow, robust_scale
from legion.analytics.detectors.base import StreamingDetector
from legion.analytics.detectors.mad import scale_floor


class ShiftDetector(StreamingDetector):
    """Robust two-window level-shift statistic."""

    name = "shift"

    def __init__(self, short: int = 24, window: int = 576, min_ref: int = 30,
                 rarity_window: int = 2000, decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, short=short, window=window,
                         min_ref=min_ref)
        self.short, self.min_ref = short, min_ref
        self.recent: deque[float] = deque(maxlen=short)
        self.ref = SortedWindow(window)

    def _surprise(self, ts_ms: int, value: float) -> float:
        if len(self.recent) == self.short:
            self.ref.push(self.recent[0])  # the oldest short-window point moves to the reference
        self.recent.append(value)
        if len(self.ref) < self.min_ref:
            return math.nan  # warm-up: no opinion, kept out of the rarity history
        med, sc = robust_scale(self.ref, scale_floor(self.ref))
        return abs(float(np.median(np.fromiter(self.recent, float))) - med) / sc

    def _get_state(self) -> dict[str, Any]:
        return {"recent": np.asarray(self.recent, float), "ref": self.ref.to_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.recent = deque(np.asarray(state["recent"], float).tolist(), maxlen=self.short)
        self.ref = SortedWindow.from_state(state["ref"])
