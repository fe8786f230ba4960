"""The default detector: kNN shape novelty + seasonal median/MAD outliers + level shifts.

Each member computes its own raw surprise and its own calibrated tail probability (-log10 p);
the ensemble takes the most surprising member after a per-member discount in decades (the MAD
member fires on things the kNN member partly sees already, so it only adds what is well beyond
its own history: outliers against the daily pattern). The shift member is not discounted
(`shift_discount=0`): a sustained level change is what kNN sees least, and on the NAB dev
subset 0 and -0.15 decades score the same while 0.15 and 0.3 lose 1.5 and 2.7 points.
The kNN member is the plain 5th neighbour explained away by its recurrence view (`blocks=4`,
see knn.py): a shape seen at two earlier times is not new.
Agreement (`agree=0.95`): the most surprising member's log-rarity plus 0.95 x the runner-up's
(when positive). Two members that both find the point rare are stronger evidence than one alone
(for independent members the joint -log10 p would be the sum; `agree` < 1 because they are not
independent: they all see the same values), so a point that only one member calls rare needs to be
rarer to score as high.
Multiplicity cost (`cost=0.45` decades, subtracted from every point): the best of three members
plus agreement is not a calibrated -log10 p (on the NAB dev subset and the synthetic node its
90th percentile is 1.4-1.7 decades instead of 1.0; Bonferroni for the best of 3 would be
log10 3 = 0.48), so without it the fixed alert threshold 0.8 fires several times as often as
"1 in 1,600" says (bench/multivar_node.py: 0.29 false alarms/day at `agree=0.8`, cost 0; 0.00
with the cost).
Chosen by measurement on the NAB dev subset (docs/detector-evaluation.md); one parameter set
for every series.
"""

from __future__ import annotations

from typing import Any

from legion.analytics.detectors.base import StreamingDetector
from legion.analytics.detectors.knn import KnnDetector
from legion.analytics.detectors.mad import MadDetector
from legion.analytics.detectors.shift import ShiftDetector


class EnsembleDetector(StreamingDetector):
    """Top member + `agree` x runner-up - `cost`, over (kNN with recurrence view,
    MAD - mad_discount, shift - shift_discount) in log-rarity, then debounced."""

    name = "ensemble"

    def __init__(self, mad_discount: float = 1.0, shift_discount: float = 0.0, agree: float = 0.95,
                 blocks: int = 4, cost: float = 0.45, rarity_window: int = 2000,
                 decades: float = 4.0, debounce: int = 100) -> None:
        super().__init__(rarity_window, decades, debounce, mad_discount=mad_discount,
                         shift_discount=shift_discount, agree=agree, blocks=blocks, cost=cost)
        self.mad_discount, self.shift_discount = mad_discount, shift_discount
        self.agree, self.cost = float(agree), float(cost)
        self.knn = KnnDetector(k=5, episodes=False, blocks=blocks, rarity_window=rarity_window,
                               decades=decades, debounce=0)
        self.mad = MadDetector(rarity_window=rarity_window, decades=decades, debounce=0)
        self.shift = ShiftDetector(rarity_window=rarity_window, decades=decades, debounce=0)

    def logp(self, ts_ms: int, value: float) -> float:
        """-log10 tail probability: the top member + `agree` x the runner-up - `cost`."""
        a = self.knn.logp(ts_ms, value)
        b = self.mad.logp(ts_ms, value) - self.mad_discount
        c = self.shift.logp(ts_ms, value) - self.shift_discount
        if a < b:
            a, b = b, a
        if b < c:
            b = c
            if a < b:
                a, b = b, a
        return a + self.agree * max(b, 0.0) - self.cost

    def refit(self) -> bool:
        """Retrain the members that have a model (kNN); MAD and shift are rolling statistics."""
        return self.knn.refit()

    def _get_state(self) -> dict[str, Any]:
        return {"knn": self.knn.get_state(), "mad": self.mad.get_state(),
                "shift": self.shift.get_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.knn.set_state(state["knn"])
        self.mad.set_state(state["mad"])
        self.shift.set_state(state["shift"])
