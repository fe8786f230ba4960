"""Per-series model choice by rolling backtest, and time-to-threshold from a forecast."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, Forecaster

# Candidates from simplest to most complex: the selection rule prefers the earlier ones.
SIMPLICITY = ("level", "linear", "profile", "holt_winters", "combo", "mlp", "seasonal_naive")
# What `auto` chooses from by default. Every extra candidate is one more chance for a backtest of
# 4 folds to pick a model by luck: choosing among all five non-naive models did no better than
# always-`level` in 8 of 9 cells (3/6/12 h on NAB CPU/cloud, realKnownCause, realTraffic; see
# docs/analytics.md). `linear` stays for clear ramps (time to threshold), `combo` for series where
# the members' median is clearly better (daily series with short-horizon structure).
DEFAULT_CANDIDATES = ("level", "linear", "combo")


def backtest_errors(factory: Callable[[], Forecaster], ts_ms: np.ndarray, values: np.ndarray,
                    horizon: int, folds: int = 4, min_train: int = 288) -> np.ndarray:
    """MAE of `horizon`-step forecasts from each of `folds` back-to-back origins, oldest first.

    Origins are n - k*horizon (k = folds..1), so the windows do not overlap and each fold is an
    independent look at the model; origins with fewer than `min_train` points are skipped.
    """
    n = len(values)
    errs = []
    for k in range(folds, 0, -1):
        origin = n - k * horizon
        if origin < min_train:
            continue
        f = factory().fit(ts_ms[:origin], values[:origin]).predict(horizon)
        errs.append(float(np.mean(np.abs(f.mean - values[origin:origin + horizon]))))
    return np.asarray(errs, float)


def backtest(factory: Callable[[], Forecaster], ts_ms: np.ndarray, values: np.ndarray,
             horizon: int, folds: int = 4, min_train: int = 288) -> float:
    """Mean MAE over `backtest_errors` folds (inf if there is none)."""
    errs = backtest_errors(factory, ts_ms, values, horizon, folds, min_train)
    return float(np.mean(errs)) if len(errs) else float("inf")


def one_se_choice(errors: Mapping[str, np.ndarray], se_mult: float = 1.0) -> str | None:
    """The first (simplest) candidate whose mean fold MAE is within `se_mult` standard errors of
    the best one's; None when no candidate has a fold.

    `errors` maps candidates, simplest first, to their per-fold MAEs on the same origins. The
    standard error is that of the paired per-fold differences to the best candidate, so a
    complex model must beat a simpler one by more than the fold-to-fold noise of that
    difference (the one-standard-error rule of cross-validation). With one fold the noise is
    unknown and the simplest candidate is kept. `se_mult=0` is plain lowest-mean selection.
    """
    means = {m: float(np.mean(e)) for m, e in errors.items() if len(e)}
    if not means:
        return None
    best = min(means, key=lambda m: means[m])
    for m in means:
        diff = np.asarray(errors[m]) - np.asarray(errors[best])
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
        if means[m] <= means[best] + se_mult * se:
            return m
    return best


class AutoForecaster:
    """Chooses, per series, by rolling backtest at `horizon`: the simplest candidate within one
    standard error of the lowest backtest MAE (`one_se_choice`); candidates `DEFAULT_CANDIDATES`
    unless given."""

    name = "auto"

    def __init__(self, horizon: int = 72, folds: int = 4,
                 candidates: Sequence[str] | None = None, se_mult: float = 1.0) -> None:
        self.horizon, self.folds, self.se_mult = horizon, folds, se_mult
        self.candidates = list(candidates) if candidates else None
        self.chosen: Forecaster | None = None
        self.scores: dict[str, float] = {}

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> AutoForecaster:
        """Backtest every candidate, choose by the one-standard-error rule, fit it on all data."""
        from legion.analytics.forecasters import FORECASTERS

        # The torch model is a candidate only when asked for (seconds per backtest fold), and
        # seasonal-naive is the yardstick, not a candidate: it copies yesterday's noise and wins
        # short backtests by luck (measured in bench/forecast.py).
        names = self.candidates or [n for n in DEFAULT_CANDIDATES if n in FORECASTERS]
        rank = {n: i for i, n in enumerate(SIMPLICITY)}
        names = sorted(names, key=lambda n: rank.get(n, len(rank)))  # stable: unknown ones last
        ts = np.asarray(ts_ms, np.int64)
        v = np.asarray(values, float)
        errors = {n: backtest_errors(FORECASTERS[n], ts, v, self.horizon, self.folds)
                  for n in names}
        self.scores = {n: float(np.mean(e)) if len(e) else float("inf")
                       for n, e in errors.items()}
        best = one_se_choice(errors, self.se_mult)
        if best is None:  # too short to backtest: the robust level (+ profile when it has one)
            best = "level" if "level" in names else names[0]
        self.chosen = FORECASTERS[best]().fit(ts, v)
        return self

    def predict(self, horizon: int) -> Forecast:
        """The chosen model's forecast."""
        if self.chosen is None:
            raise ValueError("fit() first")
        return self.chosen.predict(horizon)

    def get_state(self) -> dict[str, Any]:
        """The choice, the backtest scores and the chosen model's state."""
        return {"chosen": self.chosen.name if self.chosen else "",
                "backtest_mae": dict(self.scores),
                "model": self.chosen.get_state() if self.chosen else {}}


@dataclass(frozen=True, slots=True)
class ThresholdEta:
    """When a forecast crosses a threshold: central estimate and the 80 % interval (ms, or None)."""

    threshold: float
    eta_ms: int | None
    earliest_ms: int | None
    latest_ms: int | None

    def describe(self, now_ms: int) -> str:
        """Human sentence, e.g. 'reaches 85 in ~4 h 10 m (80 % interval 3 h 0 m - 6 h 0 m)'."""
        if self.earliest_ms is None:
            return f"does not reach {self.threshold:g} within the horizon"

        def fmt(ms: int | None) -> str:
            if ms is None:
                return "beyond horizon"
            m = max(0, (ms - now_ms) // 60_000)
            return f"{m // 60} h {m % 60} m"

        central = fmt(self.eta_ms) if self.eta_ms is not None else "beyond horizon"
        return (f"reaches {self.threshold:g} in ~{central} "
                f"(80 % interval {fmt(self.earliest_ms)} - {fmt(self.latest_ms)})")


def time_to_threshold(fc: Forecast, threshold: float, above: bool = True) -> ThresholdEta:
    """First forecast times at which mean, the optimistic and pessimistic bounds cross."""

    def first(x: np.ndarray) -> int | None:
        hit = x >= threshold if above else x <= threshold
        return int(fc.ts_ms[int(np.argmax(hit))]) if hit.any() else None

    early, late = (fc.upper, fc.lower) if above else (fc.lower, fc.upper)
    return ThresholdEta(threshold, first(fc.mean), first(early), first(late))
