"""Adaptive-resonance novelty over sliding-window features (in the spirit of ARTime).

ARTime (Mark Hampton, the best published detector on NAB) downsamples the series, describes each
window by its levels and its shape, and learns the windows online with a fuzzy ART network:
a window that resonates with a learned category (is close enough to it) refines that category,
one that resonates with none founds a new category, and a new category is the anomaly. This is
our streaming reading of that design, with the calibration every detector here shares:

* Downsampling (`step` points a bin, `window` bins a view): each bin is its mean, or its
  extreme point when that lies more than `chomp` of the series range from the mean (ARTime keeps
  spikes the same way); a bin within `chomp` of the series' running median is snapped to it.
* Features (2 x `window`, each in [0, 1]): the bins' levels in the series range seen so far (what
  the values are) and the bins min-max normalised within the view (what shape they make).
* Fuzzy ART with complement coding, read geometrically: a category is a hyperbox in feature
  space. The raw surprise is the mean per-feature L1 distance from the view to the nearest box
  (0 inside one). The view then resonates with the nearest box if, grown to include it, the box's
  mean side stays within 1 - `rho` (the vigilance: `rho=0.9`, a category spans at most a tenth of
  the range per feature); otherwise it founds a new box. At most `categories` boxes are kept, the
  least recently resonating one is replaced.
* The surprise is calibrated by `Rarity` (a score of 0.8 = 1 in 1,600 views of this series) and
  debounced. ARTime's own confidence and adaptive vigilance are left out: `Rarity` gives one
  meaning to a score on every series, which is what issue 14 asks of calibration. With
  `adaptive=True` they are in (analytics/detectors/art_vigilance.py): dual vigilance adapted
  online, a new cluster after the probation is the event, the range is the probation's, and
  `calibrated=False` returns ARTime's event confidence itself.

Constructor parameters have a meaning (points per bin, bins per view, vigilance, range fraction);
`step=5, window=8` is ARTime's view on a NAB file of 4,000 points (40 points, 3 h 20 at 5 min).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from legion.analytics.calibration import SortedWindow
from legion.analytics.detectors.art_vigilance import AdaptiveVigilance
from legion.analytics.detectors.base import StreamingDetector


class ArtDetector(StreamingDetector):
    """Distance of the current view to the nearest learned fuzzy-ART category (hyperbox)."""

    name = "art"

    def __init__(self, step: int = 5, window: int = 8, rho: float = 0.9, chomp: float = 0.075,
                 categories: int = 200, rarity_window: int = 2000, decades: float = 4.0,
                 debounce: int = 100, adaptive: bool = False, probation: int = 600,
                 calibrated: bool = True) -> None:
        extra = {"adaptive": True, "probation": probation, "calibrated": calibrated} \
            if adaptive else {}  # the fixed-vigilance `art` keeps its params (saved models)
        super().__init__(rarity_window, decades, debounce, step=step, window=window, rho=rho,
                         chomp=chomp, categories=categories, **extra)
        self.step, self.window, self.rho = int(step), int(window), float(rho)
        self.chomp, self.categories = float(chomp), int(categories)
        self.raw: deque[float] = deque(maxlen=self.step * self.window)
        self.bins = SortedWindow(rarity_window)  # bin values: the running median
        self.lo, self.hi = math.inf, -math.inf
        dim = 2 * self.window
        self.box_lo = np.empty((0, dim))
        self.box_hi = np.empty((0, dim))
        self.used = np.empty(0, dtype=np.int64)  # when each box last resonated
        self.count = 0
        self.calibrated = bool(calibrated) or not adaptive
        self.vigilance = AdaptiveVigilance(probation, int(1.5 * self.window * self.step)) \
            if adaptive else None

    def _view(self) -> np.ndarray:
        """The 2 x window features of the current view."""
        rng = self.hi - self.lo
        a = np.fromiter(self.raw, float, len(self.raw)).reshape(self.window, self.step)
        mean = a.mean(axis=1)
        far = np.abs(a - mean[:, None]).argmax(axis=1)
        ext = a[np.arange(self.window), far]
        lvl = np.where(np.abs(ext - mean) > self.chomp * rng, ext, mean)
        self.bins.push(float(lvl[-1]))
        med = self.bins.median()
        lvl = np.where(np.abs(lvl - med) < self.chomp * rng, med, lvl)
        levels = (lvl - self.lo) / rng if rng > 0 else np.zeros(self.window)
        span = float(lvl.max() - lvl.min())
        shape = (lvl - lvl.min()) / span if span > 0 else np.zeros(self.window)
        out: np.ndarray = np.clip(np.concatenate([levels, shape]), 0.0, 1.0)
        return out

    def _surprise(self, ts_ms: int, value: float) -> float:
        self.count += 1
        if self.vigilance is None or not self.vigilance.done:  # adaptive: the probation's range
            self.lo, self.hi = min(self.lo, value), max(self.hi, value)
        self.raw.append(value)
        if len(self.raw) < self.step * self.window:
            return math.nan  # warm-up: no view yet, kept out of the rarity history
        x = self._view()
        if self.vigilance is not None:
            return self.vigilance.step(x, self._train, self._reset)
        if not len(self.box_lo):
            self._found(x)
            return math.nan
        out = np.maximum(self.box_lo - x, 0.0) + np.maximum(x - self.box_hi, 0.0)
        dist = out.sum(axis=1)
        j = int(np.argmin(dist))
        surprise = float(dist[j]) / len(x)
        lo, hi = np.minimum(self.box_lo[j], x), np.maximum(self.box_hi[j], x)
        if float((hi - lo).mean()) <= 1.0 - self.rho:
            self.box_lo[j], self.box_hi[j], self.used[j] = lo, hi, self.count
        else:
            self._found(x)
        return surprise

    def _train(self, x: np.ndarray, rho_lb: float, rho_ub: float) -> tuple[int, float]:
        """Dual-vigilance learning of view x: (category, best match A). A match is fuzzy ART's
        |x ^ w| / |x|, i.e. 1 - the mean side of the box grown to include x; A >= rho_ub refines
        the best box, A >= rho_lb founds a box of the same cluster, below it a new cluster
        (category -1)."""
        if not len(self.box_lo):
            self._found(x)
            return -1, 1.0
        lo, hi = np.minimum(self.box_lo, x), np.maximum(self.box_hi, x)
        match = 1.0 - (hi - lo).mean(axis=1)
        j = int(np.argmax(match))
        a = float(match[j])
        if a >= rho_ub:
            self.box_lo[j], self.box_hi[j], self.used[j] = lo[j], hi[j], self.count
            return j, a
        self._found(x)
        return (len(self.box_lo) - 1 if a >= rho_lb else -1), a

    def _reset(self) -> None:
        """Forget every category."""
        dim = 2 * self.window
        self.box_lo, self.box_hi = np.empty((0, dim)), np.empty((0, dim))
        self.used = np.empty(0, dtype=np.int64)

    def update(self, ts_ms: int, value: float) -> float:
        """Score of this point: calibrated, or (adaptive, `calibrated=False`) ARTime's own
        event confidence."""
        if self.calibrated or not math.isfinite(value):
            return super().update(ts_ms, value)
        s = self._surprise(ts_ms, value)
        return s if math.isfinite(s) else 0.0

    def _found(self, x: np.ndarray) -> None:
        """A new category holding only x (replacing the least recently used one when full)."""
        if len(self.box_lo) < self.categories:
            self.box_lo = np.vstack([self.box_lo, x])
            self.box_hi = np.vstack([self.box_hi, x])
            self.used = np.append(self.used, self.count)
            return
        j = int(np.argmin(self.used))
        self.box_lo[j], self.box_hi[j], self.used[j] = x, x, self.count

    def _get_state(self) -> dict[str, Any]:
        st = {"raw": np.asarray(self.raw, float), "bins": self.bins.to_state(),
              "range": np.asarray([self.lo, self.hi], float), "box_lo": self.box_lo.copy(),
              "box_hi": self.box_hi.copy(), "used": self.used.copy(), "count": self.count}
        if self.vigilance is not None:
            st["vigilance"] = self.vigilance.to_state()
        return st

    def _set_state(self, state: dict[str, Any]) -> None:
        self.raw = deque(np.asarray(state["raw"], float).tolist(), maxlen=self.step * self.window)
        self.bins = SortedWindow.from_state(state["bins"])
        self.lo, self.hi = (float(v) for v in np.asarray(state["range"], float))
        dim = 2 * self.window
        self.box_lo = np.asarray(state["box_lo"], float).reshape(-1, dim)
        self.box_hi = np.asarray(state["box_hi"], float).reshape(-1, dim)
        self.used = np.asarray(state["used"], np.int64)
        self.count = int(state["count"])
        if self.vigilance is not None:
            self.vigilance.load(state["vigilance"])


class AdaptiveArtDetector(ArtDetector):
    """`art` with ARTime's adaptive dual vigilance (`adaptive=True`), under its own table name
    so that `legionctl detect --detector art_adaptive` and worker jobs can name it."""

    name = "art_adaptive"

    def __init__(self, adaptive: bool = True, **params: Any) -> None:
        super().__init__(adaptive=adaptive, **params)
