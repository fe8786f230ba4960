"""The seed's detector: scikit-learn IsolationForest, `window_size=200`, `contamination=0.05`.

Every `window_size` points a forest (fixed `random_state`, so results are reproducible) is fitted
on the last `window_size` feature vectors; until the next refit it scores new points. The raw
surprise is the forest's anomaly score (`-score_samples`, higher = more anomalous) relative to the
contamination cut-off learnt on the training window, calibrated by `Rarity` and debounced.

Features: for a plain series the feature vector is `[value]`. The seed's custom feature hook works
as `IsolationForestDetector(features=extract_agent_features)` with `update_record(ts, record)`,
where `extract_agent_features(record) -> np.ndarray` (any object: agent metrics, a dict, ...).
State = the training window and counters; the forest is refitted on load (never pickled).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from legion.analytics.detectors.base import StreamingDetector

FeatureFn = Callable[[Any], np.ndarray]


class IsolationForestDetector(StreamingDetector):
    """Windowed IsolationForest, the seed's `AnomalyDetectionModel` made causal and calibrated."""

    name = "iforest"

    def __init__(self, window_size: int = 200, contamination: float = 0.05,
                 n_estimators: int = 100, random_state: int = 0,
                 features: FeatureFn | None = None, rarity_window: int = 2000,
                 decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, window_size=window_size,
                         contamination=contamination, n_estimators=n_estimators,
                         random_state=random_state)
        self.window_size, self.contamination = window_size, contamination
        self.n_estimators, self.random_state = n_estimators, random_state
        self.features = features
        # Two windows: enough to rebuild the current model's training window after a restore.
        self.buf: deque[np.ndarray] = deque(maxlen=2 * window_size)
        self.count = 0
        self.model: Any = None
        self.offset = 0.0
        self.spread = 1.0

    def _fit(self) -> None:
        from sklearn.ensemble import IsolationForest

        x = np.asarray(list(self.buf)[-self.window_size:], dtype=float)
        m = IsolationForest(n_estimators=self.n_estimators, contamination=self.contamination,
                            random_state=self.random_state)
        m.fit(x)
        raw = -m.score_samples(x)
        self.model = m
        # Cut-off at the contamination quantile, spread = its distance from the median score.
        self.offset = float(-m.offset_)
        self.spread = max(self.offset - float(np.median(raw)), 1e-6)

    def _raw(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.zeros(len(x))
        r = (-self.model.score_samples(x) - self.offset) / self.spread + 1.0
        clipped: np.ndarray = np.maximum(r, 0.0)
        return clipped

    def _after(self, f: np.ndarray) -> None:
        self.buf.append(f)
        self.count += 1
        if self.count % self.window_size == 0:
            self._fit()

    def _surprise(self, ts_ms: int, value: float) -> float:
        f = np.asarray([value], dtype=float)
        r = float(self._raw(f[None])[0])
        self._after(f)
        return r

    def update_record(self, ts_ms: int, record: Any) -> float:
        """Score one multivariate record through the `features` hook (seed custom features)."""
        if self.features is None:
            raise ValueError("update_record needs a `features` function")
        f = np.asarray(self.features(record), dtype=float).ravel()
        if not np.all(np.isfinite(f)):
            return 0.0
        r = float(self._raw(f[None])[0])
        self._after(f)
        lp = self.rarity.log_p(r)
        self.rarity.win.push(r)
        return self.debounce(min(1.0, max(0.0, lp / self.rarity.decades)))

    def score(self, ts_ms: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Batch scores, identical to `update` in a loop but scoring each block at once."""
        vs = np.asarray(values, dtype=float)
        out = np.empty(len(vs))
        i = 0
        while i < len(vs):
            # Points until the next refit are scored by the current model.
            j = min(len(vs), i + self.window_size - self.count % self.window_size)
            block = vs[i:j]
            ok = np.isfinite(block)
            raw = np.zeros(len(block))
            if ok.any():
                raw[ok] = self._raw(block[ok][:, None])
            for k in range(len(block)):
                if not ok[k]:
                    out[i + k] = 0.0
                    continue
                lp = self.rarity.log_p(float(raw[k]))
                self.rarity.win.push(float(raw[k]))
                out[i + k] = self.debounce(min(1.0, max(0.0, lp / self.rarity.decades)))
                self._after(block[k:k + 1].copy())
            if progress is not None:
                progress(j - i)
            i = j
        return out

    def _get_state(self) -> dict[str, Any]:
        return {"buf": np.asarray(self.buf, float).reshape(len(self.buf), -1),
                "count": self.count, "fitted": self.model is not None}

    def _set_state(self, state: dict[str, Any]) -> None:
        buf = np.asarray(state["buf"], float)
        self.buf = deque(list(buf), maxlen=2 * self.window_size)
        self.count = int(state["count"])
        self.model = None
        if bool(state["fitted"]):
            # Refit on the window the live model was fitted on (the forest is deterministic).
            since = self.count % self.window_size
            full = list(self.buf)
            saved = self.buf
            self.buf = deque(full[: len(full) - since], maxlen=2 * self.window_size)
            self._fit()
            self.buf = saved
