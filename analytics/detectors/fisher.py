"""The ensemble's members combined by Fisher's method: no fitted weights, discounts or costs.

Each member (kNN with its recurrence view, MAD, shift; exactly the `ensemble` members) gives a
calibrated tail probability p_i of this point for this series. Fisher's method turns the three
into one: X = -ln(p_1 p_2 p_3) and, were the members independent, P(X' >= X) = e^-X (1 + X +
X^2/2) (a chi-square with 6 degrees of freedom). The score is -log10 of that, over `decades`,
then debounced like every detector. So 0.8 means "1 in 1,600 points" of the *combined*
evidence, by construction rather than by a fitted multiplicity cost: on the quiet stretches of
the NAB dev files 0.67 points per 1,000 reach 0.8 against 0.63 nominal (the `ensemble`: 0.85).

The members are not independent (they see the same values), which makes the combination
somewhat liberal; it has no constant to absorb that. Measured with the leave-one-category-out
protocol (`bench/nab.py --cv ablations`, docs/detector-evaluation.md) it scores below the `ensemble`
on the dev files, so it is an opt-in alternative with four fewer tuned constants, not the default.
"""

from __future__ import annotations

import math

from legion.analytics.detectors.ensemble import EnsembleDetector

LN10 = math.log(10.0)


def fisher_log10(lps: tuple[float, ...]) -> float:
    """-log10 of Fisher's combined p-value of three -log10 p-values (each clipped at 0)."""
    x = LN10 * sum(max(lp, 0.0) for lp in lps)
    return (x - math.log1p(x + x * x / 2.0)) / LN10


class FisherEnsembleDetector(EnsembleDetector):
    """kNN (with recurrence view) + MAD + shift, combined by Fisher's method, debounced."""

    name = "fisher"

    def __init__(self, blocks: int = 4, rarity_window: int = 2000, decades: float = 4.0,
                 debounce: int = 100) -> None:
        super().__init__(mad_discount=0.0, shift_discount=0.0, agree=0.0, blocks=blocks,
                         cost=0.0, rarity_window=rarity_window, decades=decades,
                         debounce=debounce)
        self._params = {"blocks": blocks, "rarity_window": rarity_window, "decades": decades,
                        "debounce": debounce}

    def logp(self, ts_ms: int, value: float) -> float:
        """-log10 of the combined tail probability of the three members."""
        return fisher_log10((self.knn.logp(ts_ms, value), self.mad.logp(ts_ms, value),
                             self.shift.logp(ts_ms, value)))
