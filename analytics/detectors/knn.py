"""kNN novelty on lagged windows (in the spirit of NAB's KNN-CAD, without look-ahead).

Feature at t: the last `lag` values (with `stride` > 1: `lag` means of `stride` points, so the
window sees a longer, smoothed stretch), centred and scaled by the median/MAD of the training
values. Every `retrain` points the reference set becomes the last `train_window` features (older
than the current window, so a point never matches itself). The raw surprise is the distance to
the `k`-th nearest reference window divided by the median of that distance inside the reference
set, calibrated by `Rarity` and debounced. Before the first fit the surprise is NaN ("no
opinion"): it scores 0 and stays out of the rarity history (warm-up zeros there made the first
real distance a full-score alert at point `min_train` of every new series).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from legion.analytics.detectors.base import WindowModelDetector


class KnnDetector(WindowModelDetector):
    """Distance of the current lagged window to its k nearest past windows."""

    name = "knn"

    def __init__(self, lag: int = 8, k: int = 5, train_window: int = 1000, retrain: int = 100,
                 min_train: int = 100, stride: int = 1, rarity_window: int = 2000,
                 decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, lag=lag, k=k,
                         train_window=train_window, retrain=retrain, min_train=min_train,
                         stride=stride)
        self.lag, self.k, self.train_window = lag, k, train_window
        self.retrain, self.min_train, self.stride = retrain, min_train, stride
        # A feature spans `span` raw points: `lag` means of `stride` points, `stride` apart.
        self.span = (lag - 1) * stride + stride
        self.vals: deque[float] = deque(maxlen=train_window + self.span)
        self.count = 0
        self.ref = np.zeros((0, lag))
        self.center, self.scale, self.dscale = 0.0, 1.0, 1.0

    def _fit(self) -> None:
        v = np.asarray(self.vals, float)
        self.center = float(np.median(v))
        mad = float(np.median(np.abs(v - self.center))) * 1.4826
        spread = float(np.quantile(v, 0.95) - np.quantile(v, 0.05))
        self.scale = max(mad, 1e-3 * max(abs(self.center), spread), 1e-9)
        z = self._smooth((v - self.center) / self.scale)
        w = np.lib.stride_tricks.sliding_window_view(z, (self.lag - 1) * self.stride + 1)
        w = w[:-1, ::self.stride]  # exclude the newest
        self.ref = w[-self.train_window:].copy()
        n = len(self.ref)
        if n > self.k + 1:
            idx = np.linspace(0, n - 1, min(n, 200)).astype(int)
            d = np.sqrt(((self.ref[idx, None, :] - self.ref[None]) ** 2).sum(2))
            kk = min(self.k + 1, n - 1)  # +1: each sample matches itself at distance 0
            self.dscale = max(float(np.median(np.partition(d, kk, axis=1)[:, kk])), 1e-3)

    def _smooth(self, z: np.ndarray) -> np.ndarray:
        if self.stride == 1:
            return z
        c = np.cumsum(np.r_[0.0, z])
        return (c[self.stride:] - c[:-self.stride]) / self.stride

    def _surprise(self, ts_ms: int, value: float) -> float:
        self.vals.append(value)
        self.count += 1
        r = math.nan  # no reference yet: no opinion
        if len(self.ref) > self.k and len(self.vals) >= self.span:
            last = np.asarray(list(self.vals)[-self.span:])
            f = self._smooth((last - self.center) / self.scale)[::self.stride]
            d = np.sqrt(((self.ref - f) ** 2).sum(1))
            r = float(np.partition(d, self.k - 1)[self.k - 1]) / self.dscale
        if self.count >= self.min_train and (self.count - self.min_train) % self.retrain == 0:
            self._fit()
        return r

    def _get_state(self) -> dict[str, Any]:
        return {"vals": np.asarray(self.vals, float), "count": self.count, "ref": self.ref,
                "norm": np.asarray([self.center, self.scale, self.dscale])}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.vals = deque(np.asarray(state["vals"], float).tolist(),
                          maxlen=self.train_window + self.span)
        self.count = int(state["count"])
        self.ref = np.asarray(state["ref"], float).reshape(-1, self.lag)
        self.center, self.scale, self.dscale = (float(x) for x in state["norm"])
