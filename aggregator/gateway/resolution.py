"""Which resolution answers a range: raw points while they are kept, else the finest rollup tier.

A query without a step over a range that starts before raw retention would fail; instead it is
answered from the finest tier that still holds its start, and the response says which (header
`X-Legion-Resolution`). Ranges read whole (the anomaly ranking) start at that tier's bucket.
"""

from __future__ import annotations

from legion.aggregator.gateway.store_reader import StoreReader
from legion.kernel.errors import QueryError

RESOLUTION_HEADER = "X-Legion-Resolution"
# (source, step probed, bucket width) finest first; a 1 s step can only be answered from raw.
_CANDIDATES: tuple[tuple[str, int, int | None], ...] = (
    ("raw", 1000, None), ("1m", 60_000, 60_000), ("1h", 3_600_000, 3_600_000),
    ("1d", 86_400_000, 86_400_000))


def finest_holding(store: StoreReader, since_ms: int | None, until_ms: int | None
                   ) -> tuple[str, int | None]:
    """(source, bucket width or None for raw) of the finest source holding `since_ms`."""
    if since_ms is None:
        return "raw", None
    last: QueryError | None = None
    for source, probe, width in _CANDIDATES:
        try:
            if store.plan(probe, "avg", since_ms, until_ms) == source:
                return source, width
        except QueryError as exc:
            last = exc
    raise QueryError(f"no tier holds data from {since_ms} ms: {last}")
