"""Fixed-step buckets of a series, as the live path detects on them: the worst value of each
bucket (its max, or its min where low is bad), buckets aligned to the epoch and stamped at their
start (`analytics.detect_step_secs`)."""

from __future__ import annotations

import numpy as np

_REDUCE = {"max": np.maximum, "min": np.minimum}
BUCKET_AGGS = tuple(_REDUCE)


def bucket_extreme(ts_ms: np.ndarray, values: np.ndarray, step_ms: int, agg: str = "max"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(bucket starts in ms, the max or min of each bucket) for time-ordered rows; buckets
    without a row are absent, as in the store's stepped queries."""
    if step_ms < 1:
        raise ValueError(f"step_ms must be >= 1, got {step_ms}")
    if agg not in _REDUCE:
        raise ValueError(f"agg must be one of {', '.join(BUCKET_AGGS)}, got {agg!r}")
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.asarray(values, dtype=float)
    if len(ts) == 0:
        return ts.copy(), vals.copy()
    starts = ts // step_ms * step_ms
    first = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
    return starts[first], _REDUCE[agg].reduceat(vals, first)
