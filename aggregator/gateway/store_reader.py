"""`StoreReader`: the part of the aggregator's `Store` the gateway reads.

`legion.aggregator.store.Store` and `legion.aggregator.remote_query.RemoteQueryStore` (remote
`query`/`series`, everything else from the local store) both satisfy it. Every call but
`query_now` blocks, so handlers make it in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from legion.aggregator.gateway.hub import LatestReader


class StoreReader(LatestReader, Protocol):
    """Read queries of the store (`Store` in docs/internals.md): what the API routes call."""

    def nodes(self) -> list[dict[str, Any]]:
        """Per-node info: first/last seen, points, epoch, last_seq, missing, dropped."""
        ...

    def series(self, node: str | None = None, metric: str | None = None
               ) -> list[dict[str, Any]]:
        """Series: id, node, metric, labels (dict)."""
        ...

    def query(self, metric: str, node: str | None = None,
              labels: Mapping[str, str] | None = None, since_ms: int | None = None,
              until_ms: int | None = None, step_ms: int | None = None, agg: str = "avg",
              group_by: str | None = None) -> list[dict[str, Any]]:
        """Points (ts_ms, node, metric, labels, value), raw or per step bucket."""
        ...

    def query_now(self, metric: str, node: str | None = None,
                  labels: Mapping[str, str] | None = None, since_ms: int | None = None,
                  until_ms: int | None = None, step_ms: int | None = None, agg: str = "avg",
                  group_by: str | None = None) -> list[dict[str, Any]] | None:
        """`query`'s rows if memory answers them at once (never blocks: the event loop calls
        it), else None."""
        ...

    def topk(self, metric: str, k: int = 10, agg: str = "avg", node: str | None = None,
             labels: Mapping[str, str] | None = None, since_ms: int | None = None,
             until_ms: int | None = None, bottom: bool = False) -> list[dict[str, Any]]:
        """The k series with the highest (or lowest) `agg` over the range."""
        ...

    def plan(self, step_ms: int | None, agg: str = "avg", since_ms: int | None = None,
             until_ms: int | None = None) -> str:
        """Which source ('raw', '1m', '1h', '1d') a stepped query would read."""
        ...
