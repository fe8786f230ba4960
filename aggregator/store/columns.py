"""Columns handed to DuckDB as a dict of numpy arrays, which it scans in place.

The store used to build pyarrow tables for every insert. DuckDB reads a dict of 1-D numpy
arrays the same way (by name, as a replacement scan, or through `register`), at least as fast
for the store's few numeric columns (measured per insert: 116 rows 0.45-0.49 vs 0.60 ms CPU,
1,000 rows 0.61 vs 0.71-0.78), and without pyarrow, which cost the aggregator ~30 MiB of RSS
(issue 17, docs/peers.md). Strings, lists of blobs and label lists go in as object arrays.
No masked arrays: DuckDB 1.5 (the `encryption` extra) reads their masked entries as values
when pandas is kept out; NULLs are written with a sentinel and `nullif` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

Columns = dict[str, np.ndarray]
"""Column name -> 1-D numpy array, all of one length: what DuckDB scans as a table."""


def points(sid: Any, ts: Any, val: Any) -> Columns:
    """(series_id int32, ts int64, value float64), the shape of `points` rows."""
    return {"series_id": np.asarray(sid, np.int32), "ts": np.asarray(ts, np.int64),
            "value": np.asarray(val, np.float64)}


def objects(values: Iterable[Any]) -> np.ndarray:
    """A 1-D object array of `values` (strings, bytes, lists), never widened to 2-D."""
    items: Sequence[Any] = values if isinstance(values, Sequence) else list(values)
    out = np.empty(len(items), object)
    for i, v in enumerate(items):  # one by one: equal-length lists would make a 2-D array
        out[i] = v
    return out


def num_rows(cols: Columns) -> int:
    """Rows in `cols` (0 for no columns)."""
    return next((int(a.shape[0]) for a in cols.values()), 0)
