"""`bucket_extreme`: the offline form of the live path's bucket maxima and minima
(`legionctl detect --step`)."""

from __future__ import annotations

import numpy as np
import pytest

from legion.analytics.buckets import bucket_extreme


@pytest.mark.parametrize("agg", ["max", "min"])
def test_extremes_of_epoch_aligned_buckets_stamped_at_their_start(agg: str) -> None:
    rng = np.random.default_rng(0)
    step = 300_000
    # Irregular rows with a gap of several empty buckets, starting mid-bucket.
    ts = np.sort(1_700_000_123_000 + rng.choice(6 * 3600, 900, replace=False) * 1000)
    ts = ts[(ts < ts[0] + 3600_000) | (ts > ts[0] + 7200_000)]
    vals = rng.normal(0, 1, len(ts))
    starts, worst = bucket_extreme(ts, vals, step, agg)
    pick = max if agg == "max" else min
    expect: dict[int, float] = {}
    for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
        s = t - t % step
        expect[s] = pick(expect.get(s, v), v)
    assert starts.tolist() == sorted(expect)
    assert worst.tolist() == [expect[s] for s in sorted(expect)]
    assert all(s % step == 0 for s in starts.tolist())
    assert len(starts) < (ts[-1] - ts[0]) // step  # the empty buckets are absent


def test_edge_cases() -> None:
    starts, worst = bucket_extreme(np.array([], dtype=np.int64), np.array([]), 1000)
    assert len(starts) == 0 and len(worst) == 0
    ts, v = np.array([999, 1000, 1999, 2000]), np.array([5., 1., 3., 2.])
    starts, worst = bucket_extreme(ts, v, 1000)
    assert starts.tolist() == [0, 1000, 2000] and worst.tolist() == [5., 3., 2.]
    assert bucket_extreme(ts, v, 1000, "min")[1].tolist() == [5., 1., 2.]
    with pytest.raises(ValueError, match="step_ms"):
        bucket_extreme(np.array([1]), np.array([1.0]), 0)
    with pytest.raises(ValueError, match="agg"):
        bucket_extreme(ts, v, 1000, "avg")
