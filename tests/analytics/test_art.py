"""The adaptive-resonance detector `art` (analytics/detectors/art.py) and its protocol shortcut."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from legion.analytics.detectors import make_detector
from legion.analytics.detectors.art import ArtDetector

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import nab_cv  # noqa: E402
import nab_members  # noqa: E402

STEP_MS = 300_000


def _cycle(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (t.astype(np.int64) * STEP_MS,
            50 + 10 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.5, n))


def test_a_new_shape_scores_high_and_the_learnt_cycle_does_not() -> None:
    ts, v = _cycle(1500, seed=1)
    v[1300:1340] = 50.0  # the cycle stops: a flat stretch, a view never seen before
    s = make_detector("art").score(ts, v)
    assert s[1300:1345].max() >= 0.8
    assert s[600:1290].max() < s[1300:1345].max()
    assert (s[600:1290] >= 0.8).mean() < 0.01


def test_categories_are_bounded_and_the_least_recently_used_is_replaced() -> None:
    rng = np.random.default_rng(2)
    det = ArtDetector(categories=10, rho=0.99)
    det.score(np.arange(600) * STEP_MS, rng.normal(0, 1, 600))
    assert len(det.box_lo) == 10
    assert len(set(det.used.tolist())) == 10  # each box last used at its own point
    assert det.used.max() == det.count


def test_warm_up_has_no_opinion() -> None:
    det = ArtDetector(step=5, window=8)
    scores = det.score(np.arange(39) * STEP_MS, np.arange(39, dtype=float))
    assert not scores.any()
    assert len(det.rarity.win) == 0  # NaN surprises stay out of the calibration history


def test_protocol_trace_recombines_to_the_detector() -> None:
    ts, v = _cycle(900, seed=3)
    v[500] += 20
    v[200] = np.nan
    tr = nab_members.art_trace(ts, v)
    assert np.isnan(tr[200])
    five = np.vstack([np.zeros((4, len(v))), tr])
    five[0, 200] = np.nan  # the recombination reads a row's validity from the first trace
    assert np.array_equal(nab_cv.recombine(five, nab_members.ART_ALONE),
                          make_detector("art").score(ts, v))
