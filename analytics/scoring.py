"""NAB v1.1 scoring (shared/data/nab/SCORING.md): windows, scaled sigmoid, exact threshold sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROFILES: dict[str, tuple[float, float, float]] = {
    # name: (A_TP, A_FP, A_FN)
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}


def sigmoid(y: float) -> float:
    """NAB's scaled sigmoid: 2/(1+exp(5y)) - 1, and -1 beyond y > 3."""
    if y > 3:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


F_MINUS_1 = sigmoid(-1.0)


def probation(n: int) -> int:
    """Rows ignored at the start of a file of n rows."""
    return min(int(math.floor(0.15 * n)), 750)


@dataclass(frozen=True, slots=True)
class ScoredFile:
    """One file prepared for scoring: per-row window id (-1 outside) and row values."""

    scores: np.ndarray       # anomaly score per scored row (rows >= P)
    window: np.ndarray       # window index (global) per scored row, -1 for outside
    value: np.ndarray        # TP value (inside) or FP value (outside), before weights applied
    n_windows: int


def prepare(scores: Sequence[float] | np.ndarray, windows: Sequence[tuple[int, int]],
            a_tp: float, a_fp: float, offset: int = 0) -> ScoredFile:
    """Per-row values of one file for one profile; `windows` are row ranges [a, b] inclusive."""
    s = np.asarray(scores, dtype=float)
    n = len(s)
    p = probation(n)
    win = np.full(n, -1, dtype=np.int64)
    val = np.zeros(n)
    wins = sorted(windows)
    for k, (a, b) in enumerate(wins):
        w = b - a + 1
        for i in range(a, b + 1):
            win[i] = offset + k
            val[i] = a_tp * sigmoid(-(b - i + 1) / w) / F_MINUS_1
    # False-positive values: relative to the most recent window that ended before i.
    prev_end, prev_w = -1, 0
    k = 0
    for i in range(n):
        while k < len(wins) and wins[k][1] < i:
            prev_end, prev_w = wins[k][1], wins[k][1] - wins[k][0] + 1
            k += 1
        if win[i] >= 0:
            continue
        if prev_end < 0:
            val[i] = -a_fp
        else:
            z = (i - prev_end) / max(prev_w - 1, 1)
            val[i] = a_fp * sigmoid(z)
    return ScoredFile(s[p:], win[p:], val[p:], len(wins))


@dataclass(frozen=True, slots=True)
class SweepResult:
    """Best raw score over thresholds, the normalised score and what it took."""

    raw: float
    score: float
    threshold: float
    windows_found: int
    n_windows: int
    fp_rows: int


def sweep(files: Sequence[ScoredFile], a_fn: float, a_tp: float = 1.0) -> SweepResult:
    """Exact sweep over every distinct score: the threshold maximising S (ties: highest T)."""
    n_windows = sum(f.n_windows for f in files)
    s_null = -a_fn * n_windows
    s_perfect = a_tp * n_windows
    if not files:
        return SweepResult(0.0, 0.0, math.inf, 0, 0, 0)
    sc = np.concatenate([f.scores for f in files])
    wi = np.concatenate([f.window for f in files])
    va = np.concatenate([f.value for f in files])
    order = np.argsort(-sc, kind="stable")
    sc, wi, va = sc[order], wi[order], va[order]
    best_in = np.full(max(n_windows, 1), -np.inf)
    s = s_null
    best = (s_null, math.inf, 0, 0)
    found = fps = 0
    i, n = 0, len(sc)
    sc_l, wi_l, va_l = sc.tolist(), wi.tolist(), va.tolist()
    while i < n:
        t = sc_l[i]
        while i < n and sc_l[i] == t:
            k = wi_l[i]
            v = va_l[i]
            if k < 0:
                s += v
                fps += 1
            elif best_in[k] == -np.inf:
                s += v + a_fn
                best_in[k] = v
                found += 1
            elif v > best_in[k]:
                s += v - best_in[k]
                best_in[k] = v
            i += 1
        if s > best[0] + 1e-12:
            best = (s, t, found, fps)
    raw, thr, wf, fp = best
    norm = 100.0 * (raw - s_null) / (s_perfect - s_null) if n_windows else 0.0
    return SweepResult(raw, norm, thr, wf, n_windows, fp)


def score_corpus(per_file: Sequence[tuple[np.ndarray, Sequence[tuple[int, int]]]],
                 profile: str = "standard") -> SweepResult:
    """Score (scores, windows-as-rows) pairs of many files under one profile."""
    a_tp, a_fp, a_fn = PROFILES[profile]
    prepared = []
    offset = 0
    for scores, wins in per_file:
        f = prepare(scores, wins, a_tp, a_fp, offset)
        offset += f.n_windows
        prepared.append(f)
    return sweep(prepared, a_fn, a_tp)
