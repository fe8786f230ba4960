"""The contextOSE detector `context` (analytics/detectors/context.py): the vectorised context
memory against a loop-by-loop reading of contextOSE, what it learns, its rest period, state,
and its protocol shortcut. (The contract of every detector: tests/analytics/test_detectors.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from legion.analytics import models
from legion.analytics.detectors import make_detector
from legion.analytics.detectors.context import NEURON, ContextDetector

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import nab_cv  # noqa: E402
import nab_members  # noqa: E402

STEP_MS = 300_000
Facts = tuple[int, ...]


class LoopContext:
    """contextOSE's context memory read loop by loop (dicts and lists, no numpy), as the
    reference the vectorised `ContextDetector._step` must equal."""

    def __init__(self, max_left: int = 7, max_active: int = 15) -> None:
        self.max_left, self.max_active = max_left, max_active
        self.semis: tuple[list[Facts], list[Facts]] = ([], [])
        self.index: tuple[dict[Facts, int], dict[Facts, int]] = ({}, {})
        self.by_fact: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
        self.left_ctx: list[dict[int, int]] = []
        self.count: list[int] = []
        self.zero: list[bool] = []
        self.group: Facts = ()
        self.lcross: dict[int, list[int]] = {}
        self.new_ctx = -1

    def cross(self, side: int, facts: Facts) -> dict[int, list[int]]:
        hit: dict[int, list[int]] = {}
        for f in facts:
            for s in self.by_fact[side].get(f, []):
                hit.setdefault(s, []).append(f)
        return {s: hit[s] for s in sorted(hit)}

    def semi(self, side: int, facts: Facts) -> int:
        if facts not in self.index[side]:
            self.index[side][facts] = len(self.semis[side])
            self.semis[side].append(facts)
            for f in facts:
                self.by_fact[side].setdefault(f, []).append(self.index[side][facts])
            if side == 0:
                self.left_ctx.append({})
        return self.index[side][facts]

    def remember(self, left: Facts, right: Facts, zero: bool) -> bool:
        lid, rid = self.semi(0, left), self.semi(1, right)
        if rid in self.left_ctx[lid]:
            if zero:
                self.zero[self.left_ctx[lid][rid]] = True
            return False
        self.left_ctx[lid][rid] = len(self.count)
        self.count.append(0)
        self.zero.append(zero)
        if zero:
            self.new_ctx = len(self.count) - 1
        return True

    def step(self, facts: Facts) -> tuple[float, float]:
        pot0 = (self.group, facts) if self.group and facts else None
        new = self.remember(self.group, facts, True) if pot0 else False
        rcross = self.cross(1, facts)
        active, selected, pot = [], 0, []
        for lid, lm in self.lcross.items():
            full = len(lm) == len(self.semis[0][lid])
            for rid, c in self.left_ctx[lid].items():
                if c == self.new_ctx:
                    continue
                rm = rcross.get(rid)
                if full:
                    selected += 1
                    if rm is not None and len(rm) == len(self.semis[1][rid]):
                        self.count[c] += 1
                        active.append((self.count[c], c))
                        continue
                if rm is not None and self.zero[c] and new and len(lm) <= self.max_left:
                    pot.append((tuple(lm), tuple(rm)))
        self.new_ctx = -1
        uniq = set(pot) | ({pot0} if pot0 else set())
        share_active = len(active) / selected if selected else 0.0
        top = sorted(active)[-self.max_active:]
        self.group = tuple(sorted(set(facts) | {NEURON + c for _, c in top}))
        added = sum(self.remember(lf, rf, False) for lf, rf in pot) + int(new)
        self.lcross = self.cross(0, self.group)
        return share_active, (added / len(uniq) if new and uniq else 0.0)


def _cycle(n: int, seed: int, period: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (t.astype(np.int64) * STEP_MS,
            50 + 10 * np.sin(2 * np.pi * t / period) + rng.normal(0, 1.0, n))


def test_vectorised_context_memory_equals_the_loop_reading() -> None:
    ts, v = _cycle(500, seed=4)
    v[300:320] += 12
    det = ContextDetector(calibrated=False)
    ref = LoopContext()
    det.lo, det.hi = float(v.min()), float(v.max())  # fixed range: the same facts for both
    for x in v.tolist():
        q = min(7, int((x - det.lo) / ((det.hi - det.lo) / 7)))
        facts = tuple(2 * k + ((q >> k) & 1) for k in range(3))
        assert det._step(facts) == ref.step(facts)
    assert det.ctx_count.view().tolist() == ref.count
    assert len(ref.count) > 200  # the memory really grew (the comparison is not trivial)


def test_a_learnt_sequence_is_expected_and_a_new_one_is_not() -> None:
    pattern = np.array([0, 1, 3, 7, 6, 4, 2, 5], float)  # 8 levels in a fixed order
    v = np.tile(pattern, 120)
    v[800:808] = pattern[::-1]  # the same values in an order never seen
    s = ContextDetector(calibrated=False, rest=1).score(np.arange(len(v)) * STEP_MS, v)
    assert s[600:800].max() < 0.3
    assert s[800:808].max() >= 0.5


def test_rest_period_silences_the_points_after_a_high_raw_score() -> None:
    ts, v = _cycle(300, seed=1)
    det = ContextDetector(calibrated=False, rest=30)
    s = det.score(ts, v)
    assert not s[:30].any()  # the history starts at 1.0 (contextOSE's start-up rest)
    raw = ContextDetector(calibrated=False, rest=1).score(ts, v)
    for i in np.flatnonzero(raw >= 0.75):
        assert not s[i + 1:i + 30].any()


def test_state_round_trip_mid_series_through_a_model_file(tmp_path: Path) -> None:
    ts, v = _cycle(900, seed=2)
    v[800] += 40
    for calibrated, cut in ((True, 517), (False, 517), (True, 700)):  # 700: range fixed
        whole = ContextDetector(calibrated=calibrated).score(ts, v)
        det = ContextDetector(calibrated=calibrated)
        first = det.score(ts[:cut], v[:cut])
        path = models.save(tmp_path / "c.npz", models.detector_record(det))
        rest = models.restore_detector(models.load(path)).score(ts[cut:], v[cut:])
        assert np.array_equal(np.r_[first, rest], whole)


def test_quantisation_range_is_fixed_after_range_points() -> None:
    ts, v = _cycle(400, seed=8)
    v[350] = 500.0
    det = ContextDetector(calibrated=False, range_points=300)
    det.score(ts, v)
    assert det.hi == v[:300].max() and det.lo == v[:300].min()
    running = ContextDetector(calibrated=False, range_points=0)
    running.score(ts, v)
    assert running.hi == 500.0


def test_protocol_trace_recombines_to_the_detector() -> None:
    ts, v = _cycle(700, seed=3)
    v[500] += 30
    v[200] = np.nan
    tr = nab_members.member_trace("context", ts, v)
    assert np.isnan(tr[200])
    five = np.vstack([np.zeros((4, len(v))), tr])
    five[0, 200] = np.nan
    assert np.array_equal(nab_cv.recombine(five, nab_members.alone("context")),
                          make_detector("context", calibrated=True).score(ts, v))
