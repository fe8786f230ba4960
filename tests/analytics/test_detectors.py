"""Contract tests over every entry of DETECTORS: causal, calibrated, deterministic, restorable."""

from __future__ import annotations

import math

import numpy as np
import pytest

from legion.analytics import models
from legion.analytics.detectors import DETECTORS, Detector, make_detector

NAMES = sorted(DETECTORS)


@pytest.mark.parametrize("name", NAMES)
def test_protocol_and_range(name: str, series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    det = make_detector(name)
    assert isinstance(det, Detector)
    s = det.score(ts, v)
    assert s.shape == v.shape
    assert np.all(np.isfinite(s)) and s.min() >= 0.0 and s.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_causal_prefix_never_changes(name: str, series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    full = make_detector(name).score(ts, v)
    prefix = make_detector(name).score(ts[:450], v[:450])
    assert np.array_equal(full[:450], prefix)
    # Different futures, same past.
    v2 = v.copy()
    v2[450:] = v2[450:] * -3 + 1000
    other = make_detector(name).score(ts, v2)
    assert np.array_equal(other[:450], prefix)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_streaming_equals_batch(name: str,
                                                   series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    a = make_detector(name).score(ts, v)
    b = make_detector(name).score(ts, v)
    assert np.array_equal(a, b)
    det = make_detector(name)
    c = np.array([det.update(int(t), float(x)) for t, x in zip(ts[:320], v[:320], strict=False)])
    assert np.allclose(c, a[:320], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_through_model_file(name: str, tmp_path,
                                             series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    whole = make_detector(name).score(ts, v)
    det = make_detector(name)
    first = det.score(ts[:400], v[:400])
    path = models.save(tmp_path / f"{name}.npz",
                       models.detector_record(det, int(ts[0]), int(ts[399]), version=3))
    rec = models.load(path)
    assert (rec.name, rec.version, rec.trained_to_ms) == (name, 3, int(ts[399]))
    rest = models.restore_detector(rec).score(ts[400:], v[400:])
    assert np.array_equal(np.r_[first, rest], whole)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_values_do_not_break_scores(name: str,
                                               series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    v = v.copy()
    v[300] = np.nan
    s = make_detector(name).score(ts, v)
    assert np.all(np.isfinite(s)) and s.min() >= 0 and s.max() <= 1


def test_spike_and_shift_score_high_on_the_default_detector(
        series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    s = make_detector("ensemble").score(ts, v)
    quiet = np.quantile(s[100:490], 0.99)
    assert s[500] > max(quiet, 0.5)
    assert s[650:660].max() > max(quiet, 0.5)


def test_seed_feature_hook_on_isolation_forest() -> None:
    class AgentMetrics:
        def __init__(self, rt: float, cpu: float) -> None:
            self.response_time, self.cpu_usage = rt, cpu

    def extract_agent_features(m: AgentMetrics) -> np.ndarray:
        return np.array([m.response_time, m.cpu_usage])

    det = make_detector("iforest", features=extract_agent_features)
    assert det.params()["window_size"] == 200 and det.params()["contamination"] == 0.05
    rng = np.random.default_rng(0)
    scores = [det.update_record(i, AgentMetrics(100 + rng.normal(0, 5), 30 + rng.normal(0, 2)))
              for i in range(450)]
    odd = det.update_record(450, AgentMetrics(900.0, 95.0))
    assert 0 <= min(scores) and max(scores) <= 1
    assert odd > np.quantile(scores[250:], 0.95)


def test_unknown_detector_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("nope")


def test_shift_warm_up_raises_no_alert_on_a_quiet_series() -> None:
    # Until its reference window is filled the shift detector has no opinion: the warm-up must
    # not enter the rarity history, or the first real comparison looks like a 1-in-10,000 event.
    rng = np.random.default_rng(3)
    ts = np.arange(300, dtype=np.int64) * 300_000
    v = 50.0 + rng.normal(0.0, 1.0, 300)
    for name in ("shift", "ensemble"):
        s = make_detector(name).score(ts, v)
        assert s[:120].max() < 0.5, name


def _daily_spikes(days: int = 6, seed: int = 5) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """5-minute series, a daily cycle plus noise and a nightly spike whose time drifts +-40 min."""
    rng = np.random.default_rng(seed)
    p = 288
    t = np.arange(days * p)
    v = 20 + 5 * np.sin(2 * np.pi * t / p) + rng.normal(0.0, 0.5, len(t))
    spikes = [d * p + 40 + int(rng.integers(-8, 9)) for d in range(days)]
    v[spikes] += 15.0
    return 1_600_000_000_000 + t.astype(np.int64) * 300_000, v, spikes


def test_mad_explains_away_a_daily_spike_that_drifts_in_time() -> None:
    # The same-time-of-day median misses a spike that moves by a few points each day; with the
    # time-of-day tolerance the later days' spikes are explained by the earlier ones, while a
    # spike at a new time of day still scores as before.
    ts, v, spikes = _daily_spikes()
    novel = 5 * 288 + 200
    v2 = v.copy()
    v2[novel] += 15.0
    tol = make_detector("mad", debounce=0).score(ts, v2)
    off = make_detector("mad", tolerance=0.0, debounce=0).score(ts, v2)
    late = spikes[3:]
    assert tol[late].max() < off[late].min()
    assert tol[novel] == pytest.approx(off[novel]) and tol[novel] > 0.9


def test_mad_state_round_trip_with_a_daily_period() -> None:
    ts, v, _ = _daily_spikes()
    whole = make_detector("mad").score(ts, v)
    det = make_detector("mad")
    det.score(ts[:1000], v[:1000])
    again = make_detector("mad")
    again.set_state(det.get_state())
    assert np.array_equal(again.score(ts[1000:], v[1000:]), whole[1000:])


class _FixedMember:
    """Stands in for an ensemble member: a fixed log-rarity for every point."""

    def __init__(self, lp: float) -> None:
        self.lp = lp

    def logp(self, ts_ms: int, value: float) -> float:
        return self.lp


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_ensemble_agreement_of_two_members_outranks_one(order: tuple[int, int, int]) -> None:
    # The runner-up member adds `agree` x its (positive) log-rarity to the top one, whichever
    # members they are: two members that find a point rare outrank one member alone at the same
    # level, while a negative runner-up (after its discount) takes nothing away.
    def logp(lps: tuple[float, float, float], **params: float) -> float:
        det = make_detector("ensemble", **params)
        raw = [lps[i] for i in order]  # knn, mad (before its discount), shift
        det.knn = _FixedMember(raw[0])
        det.mad = _FixedMember(raw[1] + det.mad_discount)
        det.shift = _FixedMember(raw[2])
        return det.logp(0, 0.0)

    det0 = make_detector("ensemble")
    agree, cost = det0.agree, det0.cost
    assert 0.0 < agree < 1.0  # members see the same values: not independent evidence
    assert 0.0 < cost < 1.0  # the best of three members: a multiplicity cost below Bonferroni's
    assert logp((3.0, 2.0, 0.5)) == pytest.approx(3.0 + agree * 2.0 - cost)
    assert logp((3.0, 2.0, 0.5), agree=0.5, cost=0.0) == pytest.approx(3.0 + 0.5 * 2.0)
    assert logp((3.0, 2.0, 0.5)) > logp((3.0, 0.0, 0.0)) == pytest.approx(3.0 - cost)
    assert logp((3.0, -1.0, -2.0)) == pytest.approx(3.0 - cost)
    assert logp((3.0, 2.0, 0.5), agree=0.0, cost=0.0) == pytest.approx(3.0)  # the plain maximum


def recurring_bursts() -> tuple[np.ndarray, np.ndarray]:
    """Noise at 5-minute steps with one burst shape at 400, 700 and 1000 and a new shape (the
    same burst upside down) at 1300."""
    rng = np.random.default_rng(11)
    n = 1400
    ts = np.arange(n, dtype=np.int64) * 300_000
    v = rng.normal(0.0, 1.0, n)
    burst = np.array([6.0, 12.0, 6.0])
    for start in (400, 700, 1000):
        v[start:start + 3] += burst
    v[1300:1303] -= burst
    return ts, v


def test_knn_recurrence_view_only_lowers_the_plain_view() -> None:
    # `blocks` > 0 scores a point on the smaller of two log-rarities (plain k-th window and the
    # 2nd nearest block of windows, each against its own history): never above the plain view;
    # a burst already seen at two earlier times is familiar, a new shape stays new.
    ts, v = recurring_bursts()
    plain = make_detector("knn", k=5, episodes=False, debounce=0)
    both = make_detector("knn", k=5, episodes=False, blocks=4, debounce=0)
    lp = np.array([plain.logp(int(t), float(x)) for t, x in zip(ts, v, strict=True)])
    lb = np.array([both.logp(int(t), float(x)) for t, x in zip(ts, v, strict=True)])
    assert np.all(lb <= lp + 1e-12)
    assert lb[1000:1008].max() < 2.0 < lp[1000:1008].max()
    assert lb[1300:1308].max() > 2.5
    # state round trip carries the second calibration history
    again = make_detector("knn", k=5, episodes=False, blocks=4, debounce=0)
    again.set_state(both.get_state())
    assert again.logp(int(ts[-1]) + 300_000, 0.0) == both.logp(int(ts[-1]) + 300_000, 0.0)


def test_knn_episodes_make_a_pattern_seen_twice_familiar() -> None:
    # A short burst that already happened at two earlier times has one close window per
    # occurrence: the plain 5th neighbour still calls it new, the 2nd distinct episode does not.
    # A burst of a new shape stays new for both.
    ts, v = recurring_bursts()
    third = slice(1000, 1008)
    novel = slice(1300, 1308)
    ep = make_detector("knn", debounce=0).score(ts, v)
    plain = make_detector("knn", k=5, episodes=False, debounce=0).score(ts, v)
    assert ep[third].max() < 0.5 < plain[third].max()
    assert min(ep[novel].max(), plain[novel].max()) > 0.7


def test_fisher_combination_is_the_chi_square_tail() -> None:
    from legion.analytics.detectors.fisher import fisher_log10

    # Two members at 1-in-100 and one at p = 1: X = ln(10^4), P = e^-X (1 + X + X^2 / 2).
    x = math.log(1e4)
    assert fisher_log10((2.0, 2.0, 0.0)) == pytest.approx(-math.log10(1e-4 * (1 + x + x * x / 2)))
    # One rare member alone is worth less than its own p (three were looked at) ...
    assert fisher_log10((4.0, 0.0, 0.0)) < 4.0
    # ... two members that agree are worth more than either, and negatives count as p = 1.
    assert fisher_log10((3.0, 3.0, 0.0)) > 3.0
    assert fisher_log10((3.0, -2.0, -1.0)) == fisher_log10((3.0, 0.0, 0.0))


@pytest.mark.parametrize("name", ["ensemble", "fisher", "knn", "mad", "shift", "residual"])
def test_scores_do_not_depend_on_units_or_offset(name: str,
                                                 series: tuple[np.ndarray, np.ndarray]) -> None:
    """The same series in other units and with its zero moved (Celsius and Kelvin, a byte counter
    far from 0) scores the same: the robust scales' floors follow the spread, not the level."""
    ts, v = series
    base = make_detector(name).score(ts, v)
    for scaled in (v * 1000.0 + 1e7, v * 0.001 - 5.0):
        assert np.allclose(make_detector(name).score(ts, scaled), base, atol=1e-6)
