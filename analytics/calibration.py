"""Streaming building blocks shared by the detectors: sorted windows, rarity calibration, debounce.

Calibration (the meaning of an anomaly score): every detector computes a raw *surprise* r_t >= 0
and hands it to `Rarity`, which estimates the tail probability p_t of seeing a surprise at least
that large given this series' own recent history of surprises (empirical rank in the body, an
exponential peaks-over-threshold tail above the 90th percentile). The score is

    score = clip(-log10(p_t) / decades, 0, 1)

so with the default `decades=4`, a score of 0.5 is a 1-in-100 event, 0.75 a 1-in-1,000 event,
0.8 a 1-in-1,600 event and 1.0 a 1-in-10,000 (or rarer) event for this series. Because the scale
is the same for every series, one threshold (e.g. `ai_confidence_threshold=0.8`) means the same
thing on a quiet and on a noisy series.
Every component here keeps its state as plain arrays/scalars (`to_state`/`from_state`), never
pickle.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any

import numpy as np


class SortedWindow:
    """The last `size` values, kept in insertion order and in sorted order (O(log n) rank)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.ring: deque[float] = deque()
        self.sorted: list[float] = []

    def push(self, x: float) -> None:
        """Add x, evicting the oldest value once full."""
        if len(self.ring) == self.size:
            old = self.ring.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.ring.append(x)
        bisect.insort(self.sorted, x)

    def __len__(self) -> int:
        return len(self.ring)

    def quantile(self, q: float) -> float:
        """Empirical quantile (nearest rank) of the window; NaN when empty."""
        n = len(self.sorted)
        if n == 0:
            return math.nan
        return self.sorted[min(n - 1, max(0, int(q * (n - 1) + 0.5)))]

    def median(self) -> float:
        """Median of the window."""
        return self.quantile(0.5)

    def count_ge(self, x: float) -> int:
        """How many values in the window are >= x."""
        return len(self.sorted) - bisect.bisect_left(self.sorted, x)

    def to_state(self) -> dict[str, Any]:
        """Plain-array state."""
        return {"size": self.size, "values": np.asarray(self.ring, dtype=float)}

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> SortedWindow:
        """Rebuild from `to_state` output."""
        w = cls(int(st["size"]))
        vals = np.asarray(st["values"], dtype=float).tolist()
        if len(vals) > w.size:  # never written so; `push` semantics: the newest `size` stay
            vals = vals[len(vals) - w.size:]
        w.ring.extend(vals)
        w.sorted = sorted(vals)  # stable: equal values in insertion order, as `push` leaves them
        return w


class Rarity:
    """Turns a raw surprise into a calibrated score in [0, 1] (see the module docstring).

    Below the `tail_q` quantile of the history the tail probability is the empirical rank; above
    it, peaks-over-threshold with an exponential tail (SPOT-style: mean excess over the quantile),
    so probabilities far beyond anything seen are still graded, even with a short history.
    The mean excess leaves out the `trim` largest excesses: a mean is not robust, and one
    earlier anomaly thousands of times the usual surprise (a traffic spike) would otherwise
    flatten the tail for the whole history window and hide the next anomaly.
    The tail's scale is taken one standard error above its estimate (`tail_se`: the mean of m
    exponential excesses is uncertain by a factor 1/sqrt(m)): a tail fitted on few excesses (a
    short or new series) is not trusted to call a point a 1-in-10,000 event; with the full 2000
    surprises (200 excesses) the scale grows by 7 %, with 100 surprises by a third.
    Until the history holds `min_history` surprises, every score is 0: a tail fitted on a few
    dozen early surprises (of a statistic whose own reference is still filling) called
    ordinary points of every new series 1-in-10,000 events.
    """

    def __init__(self, size: int = 2000, decades: float = 4.0, min_history: int = 100,
                 tail_q: float = 0.9, trim: int = 1, tail_se: bool = True) -> None:
        self.win = SortedWindow(size)
        self.decades = float(decades)
        self.min_history = int(min_history)
        self.tail_q = float(tail_q)
        self.trim = int(trim)
        self.tail_se = bool(tail_se)

    def log_p(self, r: float) -> float:
        """-log10 of the tail probability of surprise r under the history (no update)."""
        n = len(self.win)
        if n < self.min_history or not math.isfinite(r):
            return 0.0
        s = self.win.sorted
        iu = int(self.tail_q * n)
        u = s[iu]
        if r <= u:
            k = n - bisect.bisect_left(s, r)
            return -math.log10((k + 1) / (n + 1))
        tail = s[iu:max(iu + 1, n - self.trim)]
        beta = max(sum(tail) / len(tail) - u, 1e-9)
        if self.tail_se:
            beta *= 1.0 + 1.0 / math.sqrt(len(tail))
        return -math.log10((n - iu) / (n + 1)) + (r - u) / beta / math.log(10)

    def __call__(self, r: float) -> float:
        """Score of surprise r, then remember r."""
        lp = self.log_p(r)
        if math.isfinite(r):
            self.win.push(r)
        return min(1.0, max(0.0, lp / self.decades))

    def to_state(self) -> dict[str, Any]:
        """Plain-array state."""
        return {"win": self.win.to_state(), "decades": self.decades,
                "min_history": self.min_history, "tail_q": self.tail_q, "trim": self.trim,
                "tail_se": self.tail_se}

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> Rarity:
        """Rebuild from `to_state` output."""
        r = cls(1, st["decades"], st["min_history"], st["tail_q"], int(st.get("trim", 1)),
                bool(st.get("tail_se", False)))  # saved before it: as they were
        r.win = SortedWindow.from_state(st["win"])
        return r


class Debounce:
    """Report an event once: a score that is not a new high for the last `span` points is damped.

    Long anomalies otherwise raise an alert on every point (an alert storm); after this, a
    persisting anomaly keeps a damped score and only a *more* surprising point scores fully again.
    Within `burst` points of the last full score, a new high must also beat the old one by
    `burst_margin`, so a surprise that creeps up over a few points counts once, not on each step.
    """

    def __init__(self, span: int = 100, damp: float = 0.5, burst: int = 5,
                 burst_margin: float = 0.1) -> None:
        self.span = int(span)
        self.damp = float(damp)
        self.burst = int(burst)
        self.burst_margin = float(burst_margin)
        self.recent: deque[float] = deque(maxlen=max(1, self.span))
        self.since = 1 << 30  # points since the last full (undamped) score

    def __call__(self, s: float) -> float:
        """Damped score for raw score s."""
        if self.span <= 0:
            return s
        self.since += 1
        top = max(self.recent) if self.recent else -1.0
        self.recent.append(s)
        if s > top and not (self.since <= self.burst and s < top + self.burst_margin):
            self.since = 0
            return s
        return s * self.damp

    def to_state(self) -> dict[str, Any]:
        """Plain-array state."""
        return {"span": self.span, "damp": self.damp, "burst": self.burst,
                "burst_margin": self.burst_margin, "since": min(self.since, 1 << 30),
                "recent": np.asarray(self.recent, float)}

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> Debounce:
        """Rebuild from `to_state` output."""
        d = cls(int(st["span"]), float(st["damp"]), int(st["burst"]), float(st["burst_margin"]))
        d.recent.extend(np.asarray(st["recent"], float).tolist())
        d.since = int(st["since"])
        return d


def _kth_deviation(s: list[float], med: float, k: int) -> float:
    """The k-th smallest (0-based) |x - med| over the sorted list s, in O(log n): the deviations
    below med (read leftwards from the split) and above it are two sorted runs; binary search
    for how many of the k + 1 smallest come from the lower run."""
    split = bisect.bisect_left(s, med)
    na, nb = split, len(s) - split
    lo, hi = max(0, k + 1 - nb), min(k + 1, na)
    while lo < hi:
        i = (lo + hi) // 2
        j = k + 1 - i
        if j > 0 and med - s[split - 1 - i] < s[split + j - 1] - med:
            lo = i + 1
        else:
            hi = i
    j = k + 1 - lo
    a = med - s[split - lo] if lo > 0 else -math.inf
    b = s[split + j - 1] - med if j > 0 else -math.inf
    return max(a, b)


def robust_scale(win: SortedWindow, floor: float) -> tuple[float, float]:
    """(median, MAD*1.4826) of a window, the scale floored at `floor`.

    The MAD is read from the sorted window in O(log n) (`_kth_deviation`), with the same values
    and the same even-count mean as `np.median(np.abs(values - med))`, so scores are unchanged.
    """
    med = win.median()
    n = len(win)
    if n < 3:
        return med, floor
    s = win.sorted
    if n % 2:
        mid = _kth_deviation(s, med, n // 2)
    else:
        mid = (_kth_deviation(s, med, n // 2 - 1) + _kth_deviation(s, med, n // 2)) / 2
    return med, max(mid * 1.4826, floor)


def spread_floor(spread: Any, level: Any) -> Any:
    """A floor for robust scales: 1/1000 of the series' 5-95 % spread, and 1e-9 of its level
    (float precision, not a sensitivity). Not 1/1000 of the level itself: a score must not depend
    on where zero is (the same series in Celsius and in Kelvin, or a byte counter with a large
    offset, scores the same); bench/nab_perturb.py measures it. Floats or numpy arrays."""
    return 1e-3 * spread + 1e-9 * (abs(level) + 1.0)
