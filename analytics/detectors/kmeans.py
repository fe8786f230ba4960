"""Netdata-style k-means: lagged, smoothed, differenced windows; anomalous when models agree.

Feature at t: the last `lag` values of the `smooth`-point moving average of the first difference.
Every `retrain` points a k-means model (k=2, a few Lloyd iterations, deterministic init) is fitted
on the last `train_window` feature vectors; the last `models` fitted models are kept. The raw
surprise is the *smallest* nearest-centroid distance over those models (all must agree that the
point is far), divided by the median training distance, then calibrated by `Rarity` and debounced.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from legion.analytics.detectors.base import WindowModelDetector


def fit_kmeans(x: np.ndarray, k: int = 2, iters: int = 10) -> np.ndarray:
    """Deterministic k-means: start at the point nearest the mean and the points farthest away."""
    cents = [x[np.argmin(((x - x.mean(0)) ** 2).sum(1))]]
    for _ in range(1, k):
        d = np.min([((x - c) ** 2).sum(1) for c in cents], axis=0)
        cents.append(x[int(np.argmax(d))])
    c = np.asarray(cents, dtype=float)
    for _ in range(iters):
        lab = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(2), axis=1)
        for j in range(k):
            m = lab == j
            if m.any():
                c[j] = x[m].mean(0)
    return c


class KMeansDetector(WindowModelDetector):
    """Consensus of the last few k-means models on differenced, smoothed, lagged windows."""

    name = "kmeans"

    def __init__(self, lag: int = 6, smooth: int = 3, k: int = 2, train_window: int = 1000,
                 retrain: int = 250, models: int = 3, min_train: int = 100,
                 rarity_window: int = 2000, decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, lag=lag, smooth=smooth, k=k,
                         train_window=train_window, retrain=retrain, models=models,
                         min_train=min_train)
        self.lag, self.smooth, self.k = lag, smooth, k
        self.train_window, self.retrain, self.n_models = train_window, retrain, models
        self.min_train = min_train
        self.last: float | None = None
        self.diffs: deque[float] = deque(maxlen=smooth)
        self.sm: deque[float] = deque(maxlen=lag)
        self.feats: deque[np.ndarray] = deque(maxlen=train_window)
        self.models: deque[tuple[np.ndarray, float]] = deque(maxlen=models)
        self.count = 0

    def _feature(self, x: float) -> np.ndarray | None:
        if self.last is not None:
            self.diffs.append(x - self.last)
        self.last = x
        if len(self.diffs) < self.smooth:
            return None
        self.sm.append(sum(self.diffs) / self.smooth)
        if len(self.sm) < self.lag:
            return None
        return np.fromiter(self.sm, float, self.lag)

    def _fit(self) -> None:
        x = np.asarray(self.feats)
        c = fit_kmeans(x, self.k)
        d = np.sqrt(np.min(((x[:, None, :] - c[None]) ** 2).sum(2), axis=1))
        scale = float(np.median(d))
        if scale <= 0:
            scale = float(np.mean(d)) or (float(np.abs(x).mean()) * 1e-3 + 1e-9)
        self.models.append((c, scale))

    def _distance(self, f: np.ndarray) -> float:
        if not self.models:
            return 0.0
        return min(float(np.sqrt(((c - f) ** 2).sum(1).min())) / s for c, s in self.models)

    def _surprise(self, ts_ms: int, value: float) -> float:
        f = self._feature(value)
        r = 0.0
        if f is not None:
            r = self._distance(f)
            self.feats.append(f)
            self.count += 1
            if self.count >= self.min_train and (self.count - self.min_train) % self.retrain == 0:
                self._fit()
        return r

    def _get_state(self) -> dict[str, Any]:
        """Learnt state as plain values and numpy arrays."""
        return {
            "last": np.nan if self.last is None else self.last,
            "diffs": np.asarray(self.diffs, float), "sm": np.asarray(self.sm, float),
            "feats": np.asarray(self.feats, float).reshape(-1, self.lag),
            "centroids": np.asarray([c for c, _ in self.models]).reshape(-1, self.k, self.lag),
            "scales": np.asarray([s for _, s in self.models], float),
            "count": self.count}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore state produced by `get_state`."""
        last = float(state["last"])
        self.last = None if np.isnan(last) else last
        self.diffs = deque(np.asarray(state["diffs"]).tolist(), maxlen=self.smooth)
        self.sm = deque(np.asarray(state["sm"]).tolist(), maxlen=self.lag)
        self.feats = deque(list(np.asarray(state["feats"], float)), maxlen=self.train_window)
        self.models = deque(zip(list(np.asarray(state["centroids"], float)),
                                np.asarray(state["scales"], float).tolist(), strict=False),
                            maxlen=self.n_models)
        self.count = int(state["count"])
