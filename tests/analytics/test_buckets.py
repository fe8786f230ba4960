"""`bucket_max`: the offline form of the live path's bucket maxima (`legionctl detect --step`)."""

from __future__ import annotations

import numpy as np
import pytest

from legion.analytics.buckets import bucket_max


def test_maxima_of_epoch_aligned_buckets_stamped_at_their_start() -> None:
    rng = np.random.default_rng(0)
    step = 300_000
    # Irregular rows with a gap of several empty buckets, starting mid-bucket.
    ts = np.sort(1_700_000_123_000 + rng.choice(6 * 3600, 900, replace=False) * 1000)
    ts = ts[(ts < ts[0] + 3600_000) | (ts > ts[0] + 7200_000)]
    vals = rng.normal(0, 1, len(ts))
    starts, maxima = bucket_max(ts, vals, step)
    expect: dict[int, float] = {}
    for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
        s = t - t % step
        expect[s] = max(expect.get(s, -np.inf), v)
    assert starts.tolist() == sorted(expect)
    assert maxima.tolist() == [expect[s] for s in sorted(expect)]
    assert all(s % step == 0 for s in starts.tolist())
    assert len(starts) < (ts[-1] - ts[0]) // step  # the empty buckets are absent


def test_edge_cases() -> None:
    starts, maxima = bucket_max(np.array([], dtype=np.int64), np.array([]), 1000)
    assert len(starts) == 0 and len(maxima) == 0
    starts, maxima = bucket_max(np.array([999, 1000, 1999, 2000]), np.array([5., 1., 3., 2.]),
                                1000)
    assert starts.tolist() == [0, 1000, 2000] and maxima.tolist() == [5., 3., 2.]
    with pytest.raises(ValueError, match="step_ms"):
        bucket_max(np.array([1]), np.array([1.0]), 0)
