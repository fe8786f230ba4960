"""Learned normal bands per series (`ai_settings.ml_threshold_adjustment`): daily-seasonal limits.

`NormalBand.fit(ts, values)` learns, for each hour of the day (UTC), the `q_low`/`q_high`
quantiles of the training values widened by `margin` robust standard deviations; hours with too
few points fall back to the whole-series band. Alert rules can compare a value with
`band.limits(ts)` instead of a fixed number. State is plain arrays (`get_state`/`from_state`).

`band_record` wraps a band as a versioned model file (legion.analytics.models) and
`band_from_record` reads it back. Fitting a band from stored data is the aggregator's side
(`legion.aggregator.analytics_bridge.band_book.band_from_store`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics import models

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class NormalBand:
    """Per-hour-of-day normal range of one series."""

    def __init__(self, q_low: float = 0.01, q_high: float = 0.99, margin: float = 1.0,
                 min_points: int = 10) -> None:
        self.q_low, self.q_high, self.margin, self.min_points = q_low, q_high, margin, min_points
        self.low = np.full(24, -np.inf)
        self.high = np.full(24, np.inf)
        self.trained_from_ms = self.trained_to_ms = 0

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> NormalBand:
        """Learn the band from history (NaN/Inf ignored)."""
        ts = np.asarray(ts_ms, np.int64)
        v = np.asarray(values, float)
        ok = np.isfinite(v)
        ts, v = ts[ok], v[ok]
        if len(v) == 0:
            return self
        self.trained_from_ms, self.trained_to_ms = int(ts[0]), int(ts[-1])
        glo, ghi = self._range(v)
        hours = (ts // HOUR_MS) % 24
        for h in range(24):
            sel = v[hours == h]
            self.low[h], self.high[h] = self._range(sel) if len(sel) >= self.min_points \
                else (glo, ghi)
        return self

    def _range(self, v: np.ndarray) -> tuple[float, float]:
        med = float(np.median(v))
        sd = 1.4826 * float(np.median(np.abs(v - med)))
        return (float(np.quantile(v, self.q_low)) - self.margin * sd,
                float(np.quantile(v, self.q_high)) + self.margin * sd)

    def limits(self, ts_ms: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) for each timestamp."""
        h = (np.asarray(ts_ms, np.int64) // HOUR_MS) % 24
        return self.low[h], self.high[h]

    def outside(self, ts_ms: np.ndarray | int, values: np.ndarray | float) -> np.ndarray:
        """True where a value is outside its hour's band."""
        lo, hi = self.limits(ts_ms)
        v = np.asarray(values, float)
        return (v < lo) | (v > hi)

    def get_state(self) -> dict[str, Any]:
        """Plain-array state (for legion.analytics.models)."""
        return {"low": self.low.copy(), "high": self.high.copy(),
                "params": np.asarray([self.q_low, self.q_high, self.margin]),
                "min_points": self.min_points, "trained_from_ms": self.trained_from_ms,
                "trained_to_ms": self.trained_to_ms}

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> NormalBand:
        """Rebuild from `get_state` output."""
        q_low, q_high, margin = (float(x) for x in np.asarray(st["params"]))
        b = cls(q_low, q_high, margin, int(st["min_points"]))
        b.low, b.high = np.asarray(st["low"], float), np.asarray(st["high"], float)
        b.trained_from_ms, b.trained_to_ms = int(st["trained_from_ms"]), int(st["trained_to_ms"])
        return b


def band_record(band: NormalBand, series: str, version: int = 1) -> models.ModelRecord:
    """A versioned model file record of a band (`series` = the aggregator's series key)."""
    return models.ModelRecord("band", "normal_band",
                              {"q_low": band.q_low, "q_high": band.q_high, "margin": band.margin,
                               "min_points": band.min_points, "series": series},
                              band.get_state(), version, band.trained_from_ms,
                              band.trained_to_ms)


def band_from_record(rec: models.ModelRecord) -> NormalBand:
    """The band saved by `band_record`."""
    if rec.kind != "band":
        raise models.ModelError(f"record is a {rec.kind}, not a band")
    return NormalBand.from_state(rec.state)
