"""The `Detector` protocol and a base class for streaming detectors.

A detector is causal: `update(ts_ms, value)` returns the score of that point using only the points
given so far. `score(ts, values)` is the batch convenience (same results as calling `update` in a
loop). Scores are calibrated to [0, 1] (see legion.analytics.calibration). State is a dict of
scalars, strings, lists and numpy arrays (`get_state`/`set_state`), never pickle.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from legion.analytics.calibration import Debounce, Rarity

DAY_MS = 86_400_000


@runtime_checkable
class Detector(Protocol):
    """Scores points of one series, causally, in [0, 1]."""

    name: str

    def update(self, ts_ms: int, value: float) -> float:
        """Score of this point given everything seen before it."""

    def score(self, ts_ms: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of many points in order (same as `update` in a loop)."""

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-able)."""

    def get_state(self) -> dict[str, Any]:
        """Learnt state as plain values and numpy arrays."""

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore state produced by `get_state` of the same detector class and params."""


class StreamingDetector:
    """Base: raw surprise (subclass `_surprise`) -> `Rarity` -> `Debounce` -> score in [0, 1].

    Subclasses implement `_surprise(ts_ms, value) -> float` (>= 0, using only the past and the
    point itself) and `_get_state`/`_set_state` for their own fields.
    """

    name = "base"

    def __init__(self, rarity_window: int = 2000, decades: float = 4.0, debounce: int = 100,
                 **params: Any) -> None:
        self._params = dict(params, rarity_window=rarity_window, decades=decades,
                            debounce=debounce)
        self.rarity = Rarity(rarity_window, decades)
        self.debounce = Debounce(debounce)

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-able)."""
        return dict(self._params)

    def _surprise(self, ts_ms: int, value: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def logp(self, ts_ms: int, value: float) -> float:
        """-log10 tail probability of this point (uncapped, not debounced)."""
        r = self._surprise(ts_ms, value)
        lp = self.rarity.log_p(r)
        if math.isfinite(r):
            self.rarity.win.push(r)
        return lp

    def update(self, ts_ms: int, value: float) -> float:
        """Score of this point given everything seen before it."""
        if not math.isfinite(value):
            return 0.0
        s = min(1.0, max(0.0, self.logp(ts_ms, value) / self.rarity.decades))
        return self.debounce(s)

    def score(self, ts_ms: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of many points in order (same as `update` in a loop)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        vs = np.asarray(values, dtype=float)
        out = np.empty(len(vs))
        upd = self.update
        for i in range(len(vs)):
            out[i] = upd(int(ts[i]), float(vs[i]))
            if progress is not None and (i + 1) % 1000 == 0:
                progress(1000)
        if progress is not None:
            progress(len(vs) % 1000)
        return out

    def refit(self) -> bool:
        """Refit the learnt model now (on demand / by age); False when there is nothing to refit.

        Rolling-statistics detectors (`mad`, `residual`, `shift`) are current after every point;
        model-based ones override this (see docs/analytics.md, "Retraining").
        """
        return False

    def _get_state(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """Learnt state as plain values and numpy arrays."""
        return {"rarity": self.rarity.to_state(), "debounce": self.debounce.to_state(),
                **self._get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore state produced by `get_state`."""
        self.rarity = Rarity.from_state(state["rarity"])
        self.debounce = Debounce.from_state(state["debounce"])
        self._set_state(state)


class WindowModelDetector(StreamingDetector):
    """A streaming detector with a model fitted on its training window (`_fit`) once it has
    seen `min_train` points; `refit` fits it again now."""

    count: int
    min_train: int

    def _fit(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def refit(self) -> bool:
        """Fit the model on the current window now; False before `min_train` points."""
        if self.count < self.min_train:
            return False
        self._fit()
        return True


class PeriodTracker:
    """Estimates the sampling step from timestamps and, from it, the points per day."""

    def __init__(self, max_period: int = 2016, min_period: int = 12, sample: int = 64) -> None:
        self.max_period = max_period
        self.min_period = min_period
        self.steps: deque[int] = deque(maxlen=sample)
        self.last_ts: int | None = None
        self.period = 0  # 0 = unknown / no daily seasonality usable

    def update(self, ts_ms: int) -> int:
        """Feed one timestamp; returns the current period in points (0 when unknown)."""
        if self.last_ts is not None and ts_ms > self.last_ts:
            self.steps.append(ts_ms - self.last_ts)
        self.last_ts = ts_ms
        if self.period == 0 and len(self.steps) == self.steps.maxlen:
            step = float(np.median(np.asarray(self.steps)))
            p = int(round(DAY_MS / step)) if step > 0 else 0
            self.period = p if self.min_period <= p <= self.max_period else -1
        return max(self.period, 0)

    def to_state(self) -> dict[str, Any]:
        """Plain state."""
        return {"steps": np.asarray(self.steps, dtype=np.int64),
                "last_ts": -1 if self.last_ts is None else int(self.last_ts),
                "period": int(self.period)}

    def load(self, st: dict[str, Any]) -> None:
        """Restore from `to_state`."""
        self.steps.clear()
        self.steps.extend(int(x) for x in np.asarray(st["steps"]).tolist())
        self.last_ts = None if int(st["last_ts"]) < 0 else int(st["last_ts"])
        self.period = int(st["period"])


def finite(value: float, fallback: float) -> float:
    """value, or fallback when value is NaN/Inf."""
    return value if math.isfinite(value) else fallback
