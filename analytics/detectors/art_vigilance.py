"""ARTime's adaptive dual vigilance, for the `art` detector (`ArtDetector(adaptive=True)`).

ARTime (Mark Hampton) runs a dual-vigilance fuzzy ART: a view whose best match reaches the
upper vigilance `rho_ub` refines that category, one that reaches only the lower vigilance
`rho_lb` founds a category of the same cluster, and one below `rho_lb` founds a new cluster:
that is the anomaly event. Both vigilances move online (`AdaptiveVigilance.detect`, ARTime's
constants):

* `rho_ub` = the running mean of the best match, capped at 0.97;
* every half trend window (and one mask span after an anomaly) `rho_lb` rises by 19 % of its gap
  to the lowest match of the last half window when every match cleared it, else falls by half
  the mean shortfall below `rho_ub` (shortfalls over 0.05, each capped at 0.37; at least 0.005),
  never below the mean match of past anomalies nor above `rho_ub`;
* the initial vigilance is the mean match of the second half of the probationary views learnt at
  0.8 in order of their summed cosine similarity (`initial_rho`); the probation is then replayed
  at that vigilance with no events;
* an event is masked for `mask` views after an anomaly and after a new category or a vigilance
  change (until `mask` views pass without a new category), unless its match is below 0.9 (in the
  anomaly mask) or 0.7 (otherwise) of the last anomaly's match.

The range the view features are scaled by is that of the probation, then fixed (ARTime is
given the file's min and max in advance; a live series is not, and a range that keeps growing
re-scales every learnt category).

The event's confidence is ARTime's without its energy term: 0.35 (rho_ub - A) / (1 - A) +
0.65 (rho_lb - A) / (1 - A). Departures: views are per point (ARTime's are per downsampled
sample), so the trend window (`probation` views) and the mask (1.5 windows of bins, in points)
are counted in points; the probation is a fixed number of points (ARTime's is 15 % of the file,
which a live series does not know; 600 is that of a 4,000-point file).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

INITIAL_RHO = 0.8
UB_CAP = 0.97
Train = Callable[[np.ndarray, float, float], tuple[int, float]]  # (view, lb, ub) -> (cat, A)


def similarity_order(views: np.ndarray) -> np.ndarray:
    """Order of the views by their summed cosine similarity to all others (ARTime's)."""
    norms = np.linalg.norm(views, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    sim = (views @ views.T) / np.outer(safe, safe)
    zero_i, zero_j = norms[:, None] == 0, norms[None, :] == 0
    sim = np.where(zero_i & ~zero_j, 1 - norms[None, :], sim)
    sim = np.where(zero_j & ~zero_i, 1 - norms[:, None], sim)
    sim = np.where(zero_i & zero_j, 1.0, sim)
    np.fill_diagonal(sim, 1.0)
    order: np.ndarray = np.argsort(sim.sum(axis=0), kind="stable")
    return order


def initial_rho(views: np.ndarray, train: Train) -> float:
    """Mean best match of the second half of the views learnt at 0.8 in similarity order
    (`train` learns into a fresh category set)."""
    matches = [train(views[k], INITIAL_RHO, INITIAL_RHO)[1] for k in similarity_order(views)]
    return float(np.mean(matches[len(views) // 2 - 1:]))


class AdaptiveVigilance:
    """The online state of ARTime's vigilances and event masks (see the module docstring)."""

    def __init__(self, probation: int, mask: int) -> None:
        self.probation, self.mask = int(probation), int(mask)
        self.views: list[np.ndarray] = []  # the probationary views, until learnt
        self.done = False  # probation over
        self.rho_lb = self.rho_ub = INITIAL_RHO
        self.ub_sum, self.ub_n = 0.0, 0
        self.i = 0
        self.last_anom_i, self.last_anom_sim, self.last_rho_i = 0, 0.0, 0
        self.mask_after_cat = False
        self.no_new_cat = 0
        self.anom_sims: list[float] = []
        self.sims: deque[float] = deque([1.0] * (self.probation // 2 + 1),
                                        maxlen=self.probation // 2 + 1)
        self.diffs: deque[float] = deque([0.0] * (self.probation + 1),
                                         maxlen=self.probation + 1)

    def step(self, view: np.ndarray, train: Train, reset: Callable[[], None]) -> float:
        """Confidence of an anomaly event at this view (0: none; NaN during probation)."""
        if not self.done:
            self.views.append(view)
            if len(self.views) < self.probation:
                return np.nan
            stack = np.vstack(self.views)
            self.views, self.done = [], True
            reset()
            rho = initial_rho(stack, train)
            reset()
            self.rho_lb = self.rho_ub = rho
            for v in stack:
                self.detect(v, train)
            return np.nan
        return self.detect(view, train)

    def detect(self, view: np.ndarray, train: Train) -> float:
        """ARTime's `detect!`: learn the view, return the event confidence, adapt the rhos."""
        self.i += 1
        i, trend = self.i, self.probation
        after_anom = i - self.last_anom_i
        update = after_anom == self.mask or i - self.last_rho_i >= trend // 2
        in_mask = after_anom <= self.mask
        if i > trend + self.mask and self.mask_after_cat and self.no_new_cat >= self.mask:
            self.mask_after_cat = False
        cat, a = train(view, self.rho_lb, self.rho_ub)
        self.no_new_cat = 0 if cat == -1 else self.no_new_cat + 1
        self.ub_sum += a
        self.ub_n += 1
        self.sims.append(a)
        self.diffs.append(self.rho_ub - a)
        if after_anom < self.mask and self.anom_sims:
            self.anom_sims[-1] = min(self.anom_sims[-1], a)
        below_last = a < self.last_anom_sim * (0.9 if in_mask else 0.7)
        out = 0.0
        if i > trend and cat == -1 and (not (self.mask_after_cat or in_mask) or below_last):
            f = min(0.999, a)
            out = min(1.0, (0.35 * (self.rho_ub - f) + 0.65 * (self.rho_lb - f)) / (1.0 - f))
            self.anom_sims.append(a)
            self.last_anom_sim, self.last_anom_i = a, i
        self.mask_after_cat = cat == -1 or self.mask_after_cat
        if i > trend and update:
            self._adapt()
        return out

    def _adapt(self) -> None:
        low = min(self.sims)
        ub = min(UB_CAP, self.ub_sum / self.ub_n)
        lb = self.rho_lb
        if lb <= low:
            lb += (low - lb) * 0.19
        else:
            decr = 0.0
            if self.i > 2 * self.probation:
                short = [min(0.37, d) for d in self.diffs if d > 0.05]
                decr = float(np.mean(short)) if short else 0.0
            lb -= max(0.01, decr) / 2
            if self.anom_sims:
                lb = max(float(np.mean(self.anom_sims)), lb)
        self.rho_lb, self.rho_ub = min(ub, lb), ub
        self.last_rho_i = self.i
        self.mask_after_cat = True

    def to_state(self) -> dict[str, Any]:
        """Plain state."""
        views = np.vstack(self.views) if self.views else np.empty((0, 0))
        return {"views": views, "done": int(self.done),
                "scalars": np.asarray([self.rho_lb, self.rho_ub, self.ub_sum, self.ub_n, self.i,
                                       self.last_anom_i, self.last_anom_sim, self.last_rho_i,
                                       float(self.mask_after_cat), self.no_new_cat], float),
                "anom_sims": np.asarray(self.anom_sims, float),
                "sims": np.asarray(self.sims, float), "diffs": np.asarray(self.diffs, float)}

    def load(self, st: dict[str, Any]) -> None:
        """Restore from `to_state`."""
        self.done = bool(int(st["done"]))
        views = np.asarray(st["views"], float)
        self.views = [] if self.done or not views.size else list(views)
        s = np.asarray(st["scalars"], float).tolist()
        self.rho_lb, self.rho_ub, self.ub_sum = s[0], s[1], s[2]
        self.ub_n, self.i, self.last_anom_i = int(s[3]), int(s[4]), int(s[5])
        self.last_anom_sim, self.last_rho_i = s[6], int(s[7])
        self.mask_after_cat, self.no_new_cat = bool(s[8]), int(s[9])
        self.anom_sims = np.asarray(st["anom_sims"], float).tolist()
        self.sims = deque(np.asarray(st["sims"], float).tolist(), maxlen=self.sims.maxlen)
        self.diffs = deque(np.asarray(st["diffs"], float).tolist(), maxlen=self.diffs.maxlen)
