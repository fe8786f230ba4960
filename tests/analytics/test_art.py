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
    assert np.array_equal(nab_cv.recombine(five, nab_members.alone("art")),
                          make_detector("art").score(ts, v))


def test_adaptive_vigilance_learns_during_probation_then_reports_rare_events() -> None:
    ts, v = _cycle(2400, seed=5)
    v[1800:1900] += 25  # a level shift long after the probation
    det = ArtDetector(adaptive=True, calibrated=False, probation=600)
    s = det.score(ts, v)
    assert not s[:40 + 600].any()  # warm-up and probation: no opinion
    assert s[1800:1900].max() > 0  # the shift founds a new cluster: an event
    assert (s[700:1790] > 0).mean() < 0.01  # the learnt cycle: (almost) no events
    vig = det.vigilance
    assert vig is not None and vig.done
    assert 0.0 < vig.rho_lb <= vig.rho_ub <= 0.97
    assert det.hi == v[:639].max() < v.max()  # the range is the probation's (ARTime's dmin/dmax)


def test_adaptive_state_round_trip_in_and_after_probation(tmp_path: Path) -> None:
    from legion.analytics import models
    ts, v = _cycle(1500, seed=6)
    v[1200:1240] = 70.0
    whole = ArtDetector(adaptive=True, probation=300).score(ts, v)
    for cut in (200, 900):  # inside the probation (views kept) and after it
        det = ArtDetector(adaptive=True, probation=300)
        first = det.score(ts[:cut], v[:cut])
        path = models.save(tmp_path / f"a{cut}.npz", models.detector_record(det))
        rest = models.restore_detector(models.load(path)).score(ts[cut:], v[cut:])
        assert np.array_equal(np.r_[first, rest], whole)


def test_fixed_vigilance_art_keeps_its_params_for_saved_models() -> None:
    assert "adaptive" not in ArtDetector().params()
    assert ArtDetector(adaptive=True).params()["adaptive"] is True
