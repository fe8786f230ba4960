"""The NAB scorer on small hand-built cases, including SCORING.md's worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from legion.analytics.scoring import prepare, probation, score_corpus, sigmoid, sweep


def test_sigmoid_and_probation() -> None:
    assert sigmoid(-1.0) == pytest.approx(0.986614, abs=1e-6)
    assert sigmoid(0.0) == 0.0
    assert sigmoid(3.5) == -1.0
    assert sigmoid(0.5) == pytest.approx(math.tanh(-1.25))
    assert probation(4032) == 604
    assert probation(100_000) == 750


def _scores(n: int, rows: list[int]) -> np.ndarray:
    s = np.zeros(n)
    s[rows] = 1.0
    return s


@pytest.mark.parametrize("rows,expected", [
    ([2100, 2300], 0.9674),
    ([2100, 2300, 2500], 0.9076),
    ([2100, 2300, 2500, 100, 1000], 0.7976),
    ([], -1.0),
])
def test_worked_example(rows: list[int], expected: float) -> None:
    f = prepare(_scores(4032, rows), [(2000, 2402)], 1.0, 0.11)
    s = f.scores
    raw = (f.value[(s >= 1.0) & (f.window < 0)].sum()
           + (f.value[(s >= 1.0) & (f.window >= 0)].max() if ((s >= 1) & (f.window >= 0)).any()
              else -1.0))
    assert raw == pytest.approx(expected, abs=1e-4)


def test_first_row_of_window_is_worth_exactly_tp() -> None:
    f = prepare(_scores(4032, [2000]), [(2000, 2402)], 1.0, 0.11)
    assert f.value[2000 - probation(4032)] == pytest.approx(1.0)


def test_fp_before_any_window_costs_full_weight_and_after_window_less() -> None:
    f = prepare(np.zeros(4032), [(2000, 2402)], 1.0, 0.11)
    p = probation(4032)
    assert f.value[1000 - p] == pytest.approx(-0.11)
    assert f.value[2403 - p] == pytest.approx(0.11 * sigmoid(1 / 402))
    assert f.value[2500 - p] == pytest.approx(-0.0598, abs=1e-4)


def test_sweep_picks_best_threshold_and_normalises() -> None:
    # One window detected at its start by score 0.9; one FP at 0.95 elsewhere; noise at 0.1.
    n = 4032
    s = np.full(n, 0.1)
    s[2000] = 0.9
    s[1000] = 0.95
    r = score_corpus([(s, [(2000, 2402)])], "standard")
    # Best: threshold 0.9 -> window found (+1) and the FP (-0.11): S = 0.89.
    assert r.threshold == pytest.approx(0.9)
    assert r.raw == pytest.approx(0.89)
    assert r.score == pytest.approx(100 * (0.89 + 1) / 2)
    assert (r.windows_found, r.fp_rows) == (1, 1)


def test_constant_scores_give_null_and_ties_take_highest_threshold() -> None:
    s = np.zeros(4032)
    r = score_corpus([(s, [(2000, 2402)])], "standard")
    assert r.score == 0.0 and r.windows_found == 0
    # Perfect detector: only the first row of the window.
    s = np.zeros(4032)
    s[2000] = 1.0
    r = score_corpus([(s, [(2000, 2402)])], "reward_low_FN_rate")
    assert r.score == pytest.approx(100.0)
    assert r.threshold == 1.0


def test_file_without_windows_only_costs() -> None:
    s = np.zeros(2000)
    s[1500] = 1.0
    a = prepare(s, [], 1.0, 0.22)
    b = prepare(_scores(4032, [2000]), [(2000, 2402)], 1.0, 0.22, offset=0)
    r = sweep([a, b], a_fn=1.0)
    assert r.n_windows == 1 and r.windows_found == 1 and r.fp_rows == 1
    assert r.raw == pytest.approx(1.0 - 0.22)
