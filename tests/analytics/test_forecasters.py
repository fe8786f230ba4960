"""Contract tests over FORECASTERS, backtest selection, and time-to-threshold."""

from __future__ import annotations

import numpy as np
import pytest

from legion.analytics.forecasters import (
    FORECASTERS,
    AutoForecaster,
    Forecaster,
    make_forecaster,
    time_to_threshold,
)
from legion.analytics.forecasters.base import Forecast
from legion.analytics.forecasters.select import DEFAULT_CANDIDATES, one_se_choice

STEP = 300_000
NAMES = sorted(FORECASTERS)


def daily(n: int = 288 * 4, seed: int = 3, trend: float = 0.01
          ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 40 + 15 * np.sin(2 * np.pi * t / 288) + trend * t + rng.normal(0, 1.0, n)
    return 1_600_000_000_000 + t.astype(np.int64) * STEP, v


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    ts, v = daily()
    f = make_forecaster(name)
    assert isinstance(f, Forecaster)
    fc = f.fit(ts, v).predict(36)
    assert isinstance(fc, Forecast)
    assert len(fc.mean) == len(fc.lower) == len(fc.upper) == len(fc.ts_ms) == 36
    assert np.all(np.isfinite(fc.mean))
    assert np.all(fc.lower <= fc.mean + 1e-9) and np.all(fc.mean <= fc.upper + 1e-9)
    assert fc.ts_ms[0] == ts[-1] + STEP and np.all(np.diff(fc.ts_ms) == STEP)
    assert isinstance(f.get_state(), dict)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_uses_only_the_fitted_history(name: str) -> None:
    ts, v = daily()
    a = make_forecaster(name).fit(ts[:900], v[:900]).predict(24).mean
    b = make_forecaster(name).fit(ts[:900], v[:900]).predict(24).mean
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["holt_winters", "profile", "combo"])
def test_seasonal_models_beat_seasonal_naive_on_a_clean_cycle(name: str) -> None:
    ts, v = daily(n=288 * 7, trend=0.0)
    cut = len(v) - 72
    truth = v[cut:]
    err = np.mean(np.abs(make_forecaster(name).fit(ts[:cut], v[:cut]).predict(72).mean - truth))
    naive = np.mean(np.abs(
        make_forecaster("seasonal_naive").fit(ts[:cut], v[:cut]).predict(72).mean - truth))
    assert err < naive


def test_auto_picks_by_backtest_and_reports_scores() -> None:
    ts, v = daily()
    auto = AutoForecaster(horizon=36).fit(ts, v)
    st = auto.get_state()
    assert st["chosen"] in FORECASTERS
    # A clear daily cycle: the backtest evidence against the straight line is overwhelming.
    assert st["chosen"] != "linear"
    assert st["backtest_mae"][st["chosen"]] < st["backtest_mae"]["linear"] / 2
    assert len(auto.predict(36).mean) == 36


def test_one_se_rule_prefers_the_simpler_model_unless_the_evidence_is_clear() -> None:
    noisy = {"linear": np.array([1.0, 1.3, 0.9, 1.2]),
             "profile": np.array([0.8, 1.4, 0.7, 1.3]),     # lower mean, but only by noise
             "combo": np.array([0.9, 1.35, 0.8, 1.25])}
    assert one_se_choice(noisy) == "linear"
    assert one_se_choice(noisy, se_mult=0.0) == "profile"     # plain lowest mean
    clear = {"linear": np.array([1.0, 1.3, 0.9, 1.2]),
             "profile": np.array([0.5, 0.7, 0.45, 0.6])}    # better in every fold, by a lot
    assert one_se_choice(clear) == "profile"
    assert one_se_choice({"linear": np.array([2.0]), "profile": np.array([0.1])}) == "linear"
    assert one_se_choice({"linear": np.array([])}) is None


def test_auto_keeps_the_simplest_when_candidates_only_differ_by_noise() -> None:
    rng = np.random.default_rng(5)
    n = 288 * 4
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * STEP
    v = 50 + 1.5 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 3, n)  # cycle << noise
    cands = ["level", "linear", "profile", "holt_winters", "combo"]
    plain = AutoForecaster(horizon=36, se_mult=0.0, candidates=cands).fit(ts, v).get_state()
    assert plain["chosen"] != "level"                   # lowest mean MAE, won by noise
    assert plain["backtest_mae"][plain["chosen"]] == min(plain["backtest_mae"].values())
    assert AutoForecaster(horizon=36, candidates=cands).fit(ts, v).get_state()["chosen"] == \
        "level"
    default = AutoForecaster(horizon=36).fit(ts, v).get_state()
    assert set(default["backtest_mae"]) == set(DEFAULT_CANDIDATES)
    assert default["chosen"] == "level"                 # the simplest default candidate


def test_auto_extrapolates_a_clear_ramp() -> None:
    t = np.arange(288 * 3)
    rng = np.random.default_rng(0)
    v = 20 + 0.05 * t + rng.normal(0, 0.3, len(t))
    auto = AutoForecaster(horizon=36).fit(t.astype(np.int64) * STEP, v)
    assert auto.get_state()["chosen"] == "linear"     # the flat level loses every fold by a lot


def test_level_follows_the_ramp_to_now_but_does_not_extrapolate_it() -> None:
    t = np.arange(300)
    v = 10 + 0.1 * t + np.random.default_rng(0).normal(0, 0.05, 300)
    fc = make_forecaster("level").fit(t.astype(np.int64) * 60_000, v).predict(60).mean
    assert np.allclose(fc, 10 + 0.1 * 299, atol=0.1)


def test_level_weights_the_profile_by_how_well_days_predict_each_other() -> None:
    ts, clean = daily(n=288 * 5, trend=0.0)
    assert make_forecaster("level").fit(ts, clean).get_state()["weight"] > 0.9
    noise = np.random.default_rng(5).normal(50, 5, len(ts))
    assert make_forecaster("level").fit(ts, noise).get_state()["weight"] < 0.3


def test_profile_ignores_spikes_narrower_than_the_smoothing() -> None:
    ts, v = daily(n=288 * 4, trend=0.0)
    spiky = v.copy()
    spiky[::12] += 500.0                                # 1 point in 12: hourly spikes
    a = make_forecaster("profile").fit(ts, v).predict(288).mean
    b = make_forecaster("profile").fit(ts, spiky).predict(288).mean
    assert np.max(np.abs(a - b)) < 5.0


def test_short_series_still_forecast() -> None:
    ts = np.array([0, 60_000, 120_000], dtype=np.int64)
    for name in NAMES:
        fc = make_forecaster(name).fit(ts, np.array([1.0, 2.0, 3.0])).predict(5)
        assert np.all(np.isfinite(fc.mean))


def test_time_to_threshold_on_a_ramp() -> None:
    t = np.arange(600)
    ts = t.astype(np.int64) * 60_000
    rng = np.random.default_rng(0)
    v = 50 + 0.05 * t + rng.normal(0, 0.2, 600)     # +3 per hour, now ~80
    fc = make_forecaster("linear").fit(ts, v).predict(240)
    eta = time_to_threshold(fc, 85.0)
    assert eta.eta_ms is not None and eta.earliest_ms is not None
    minutes = (eta.eta_ms - ts[-1]) / 60_000
    assert 80 < minutes < 120                       # (85 - 80) / 0.05 = 100 minutes
    assert eta.earliest_ms <= eta.eta_ms <= (eta.latest_ms or eta.eta_ms)
    assert "reaches 85" in eta.describe(int(ts[-1]))
    never = time_to_threshold(fc, 1e9)
    assert never.eta_ms is None and "does not reach" in never.describe(int(ts[-1]))
