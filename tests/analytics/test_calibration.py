"""Rarity (what a score means) and Debounce (an event is reported once)."""

from __future__ import annotations

import numpy as np

from legion.analytics.calibration import Debounce, Rarity


def _filled(values: np.ndarray, **kw) -> Rarity:
    r = Rarity(**kw)
    for x in values.tolist():
        r(x)
    return r


def test_scores_mean_tail_probabilities_on_iid_surprises() -> None:
    rng = np.random.default_rng(0)
    r = Rarity()
    scores = np.array([r(x) for x in rng.exponential(1.0, 40_000).tolist()])[2000:]
    # 0.5 = 1 in 100, 0.75 = 1 in 1,000 (score = -log10(p) / 4)
    assert 0.006 < np.mean(scores >= 0.5) < 0.016
    assert 0.0004 < np.mean(scores >= 0.75) < 0.002


def test_one_giant_surprise_does_not_hide_the_next_anomaly() -> None:
    rng = np.random.default_rng(1)
    body = rng.exponential(1.0, 1500)
    with_giant = np.concatenate([body[:700], [1e6], body[700:]])
    clean = _filled(body).log_p(15.0)
    trimmed = _filled(with_giant).log_p(15.0)
    untrimmed = _filled(with_giant, trim=0).log_p(15.0)
    assert clean > 5.0
    assert abs(trimmed - clean) < 0.05 * clean  # the largest excess is left out of the scale
    assert untrimmed < 1.5                     # the plain mean excess: 1e6 flattens the tail


def test_state_round_trip_keeps_the_trim_and_old_states_get_the_default() -> None:
    r = _filled(np.arange(100, dtype=float), trim=2)
    st = r.to_state()
    back = Rarity.from_state(st)
    assert back.trim == 2 and back.log_p(150.0) == r.log_p(150.0)
    old = {k: v for k, v in st.items() if k != "trim"}
    assert Rarity.from_state(old).trim == 1


def test_a_short_history_is_not_trusted_with_extreme_rarities() -> None:
    rng = np.random.default_rng(2)
    ratios = []
    for n in (150, 2000):
        body = rng.exponential(1.0, n)
        se, plain = _filled(body).log_p(15.0), _filled(body, tail_se=False).log_p(15.0)
        ratios.append(se / plain)
    # One standard error of m excesses (1/sqrt(m)): a large damping with 14 excesses, a small
    # one with 199.
    assert 0.6 < ratios[0] < 0.9 and 0.9 < ratios[1] < 0.97
    # Within the body (below the 90th percentile) the empirical rank is unchanged.
    r, r0 = _filled(body), _filled(body, tail_se=False)
    assert r.log_p(0.5) == r0.log_p(0.5)


def test_state_round_trip_keeps_the_tail_standard_error_and_old_states_score_as_before() -> None:
    r = _filled(np.arange(300, dtype=float))
    st = r.to_state()
    assert Rarity.from_state(st).log_p(500.0) == r.log_p(500.0)
    old = {k: v for k, v in st.items() if k != "tail_se"}  # a model saved before `tail_se`
    back = Rarity.from_state(old)
    assert back.tail_se is False
    assert back.log_p(500.0) == _filled(np.arange(300, dtype=float), tail_se=False).log_p(500.0)


def test_debounce_reports_a_persisting_event_once() -> None:
    d = Debounce(span=100)
    out = [d(s) for s in [0.1] * 10 + [0.9] * 20 + [0.1] * 10]
    assert out[10] == 0.9
    assert all(x <= 0.45 for x in out[11:30])
    assert d(0.95) == 0.95                     # more surprising than anything recent: full score


def test_a_new_series_does_not_alarm_while_its_calibration_fills() -> None:
    # A daily cycle plus noise at 5-minute steps, i.e. a new host's gauge. With a tail fitted on
    # the first 30 surprises, 4 of these 10 series alarmed at points 30-40 of their life.
    from legion.analytics.detectors import make_detector

    early = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        ts = 1_700_000_000_000 + np.arange(120) * 300_000
        v = 50 + 5 * np.sin(2 * np.pi * np.arange(120) / 288) + rng.normal(0, 1, 120)
        s = make_detector("mad").score(ts, v)
        early += [(seed, int(i)) for i in np.flatnonzero(s >= 0.8)]
    assert early == []


def test_robust_scale_equals_numpy_median_of_deviations() -> None:
    """The O(log n) MAD read from the sorted window is exactly numpy's (odd and even counts,
    ties, windows that have evicted values), so detector scores do not change."""
    from legion.analytics.calibration import SortedWindow, robust_scale

    rng = np.random.default_rng(4)
    for trial in range(400):
        n = int(rng.integers(3, 80))
        w = SortedWindow(n)
        raw = rng.normal(5.0, 2.0, n + int(rng.integers(0, 30)))
        vals = np.round(raw, 1) if trial % 2 else raw  # ties on odd trials
        for x in vals.tolist():
            w.push(x)
        med = w.median()
        arr = np.fromiter(w.ring, float, len(w))
        assert robust_scale(w, 0.0) == (med, float(np.median(np.abs(arr - med))) * 1.4826)


def test_sorted_window_restores_with_the_same_order() -> None:
    from legion.analytics.calibration import SortedWindow

    rng = np.random.default_rng(5)
    w = SortedWindow(50)
    for x in np.round(rng.normal(0, 1, 120), 1).tolist():
        w.push(x)
    r = SortedWindow.from_state(w.to_state())
    assert list(r.ring) == list(w.ring) and r.sorted == w.sorted and r.size == w.size
