"""Fixed-step buckets of a series, as the live path detects on them: the max of each bucket,
buckets aligned to the epoch and stamped at their start (`analytics.detect_step_secs`)."""

from __future__ import annotations

import numpy as np


def bucket_max(ts_ms: np.ndarray, values: np.ndarray, step_ms: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(bucket starts in ms, the max of each bucket) for time-ordered rows; buckets without a
    row are absent, as in the store's stepped queries."""
    if step_ms < 1:
        raise ValueError(f"step_ms must be >= 1, got {step_ms}")
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.asarray(values, dtype=float)
    if len(ts) == 0:
        return ts.copy(), vals.copy()
    starts = ts // step_ms * step_ms
    first = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
    return starts[first], np.maximum.reduceat(vals, first)
