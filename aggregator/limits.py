"""Cardinality limits: how many distinct series one node, and one metric name, may create.

Like Prometheus' `sample_limit` (a scrape over it fails whole) and VictoriaMetrics' series
limits: a batch that would create series beyond `aggregator.max_series_per_node` or
`aggregator.max_series_per_metric` is rejected whole, before it reaches the store, with reason
`series_limit`, counted, and acknowledged `rejected` so the agent stops resending it. Batches
that only feed series already stored are always admitted: a node at its limit keeps reporting
what it had.

Acceptance (`acceptance.py`, on the receiving side) calls `admit` for each decoded batch, which
answers the series it brings (held as pending until its commit), and the writer, through the
acceptor, calls `settle` with them after that commit: series of a commit that failed are given
back. Callers serialize the two (the acceptor's lock).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from legion.aggregator.inbound import SeriesKey
from legion.proto import Labels, MetricsBatch, Reason

log = logging.getLogger("legion.aggregator.limits")

MAX_SHAPES = 4096
LOG_EVERY_SECS = 60.0
NO_NEW_SERIES: frozenset[SeriesKey] = frozenset()


class SeriesLimits:
    """Per-node and per-metric caps on distinct series (0 = no cap)."""

    def __init__(self, max_per_node: int, max_per_metric: int,
                 known: Callable[[SeriesKey], bool],
                 counts: tuple[Counter[str], Counter[str]] | None = None) -> None:
        self.max_per_node = max_per_node
        self.max_per_metric = max_per_metric
        self._known = known
        self.by_node: Counter[str] = Counter(counts[0]) if counts else Counter()
        self.by_metric: Counter[str] = Counter(counts[1]) if counts else Counter()
        self.rejected: Counter[str] = Counter()  # batches refused, by node
        self._pending: set[SeriesKey] = set()  # admitted, not yet committed
        self._shapes: set[tuple[str, tuple[str, ...], tuple[Labels, ...]]] = set()
        self._logged: dict[str, float] = {}

    def admit(self, node: str, batch: MetricsBatch) -> Reason | frozenset[SeriesKey]:
        """The reason to reject the batch whole, or the new series it brings (admitted: they
        are pending until `settle`)."""
        if len(batch) == 0:
            return NO_NEW_SERIES
        shape = (node, batch.names, batch.label_sets)
        if shape in self._shapes:  # the usual case: the same series as last tick
            return NO_NEW_SERIES
        width = len(batch.label_sets)
        pairs = np.unique(batch.name_idx.astype(np.int64) * width + batch.label_idx)
        new = [key for p in pairs.tolist()
               if not self._seen(key := (node, batch.names[p // width],
                                         batch.label_sets[p % width]))]
        if not new:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes.add(shape)
            return NO_NEW_SERIES
        per_metric = Counter(k[1] for k in new)
        over_node = self.max_per_node and self.by_node[node] + len(new) > self.max_per_node
        over_metric = [m for m, n in per_metric.items()
                       if self.max_per_metric and self.by_metric[m] + n > self.max_per_metric]
        if over_node or over_metric:
            self.rejected[node] += 1
            self._log(node, len(new), over_metric)
            return Reason.SERIES_LIMIT
        self._pending.update(new)
        self.by_node[node] += len(new)
        self.by_metric.update(per_metric)
        return frozenset(new)

    def settle(self, keys: frozenset[SeriesKey], stored: bool) -> None:
        """After the commit of a batch that brought `keys`: forget them (now stored), or give
        them back when that commit failed."""
        if not keys:
            return
        self._pending -= keys
        if not stored:
            for node, metric, _ in keys:
                self.by_node[node] -= 1
                self.by_metric[metric] -= 1

    def report(self) -> dict[str, object]:
        """For `status`: the limits and the batches refused per node."""
        return {"max_series_per_node": self.max_per_node,
                "max_series_per_metric": self.max_per_metric,
                "rejected_batches": dict(self.rejected)}

    def _seen(self, key: SeriesKey) -> bool:
        return key in self._pending or self._known(key)

    def _log(self, node: str, new: int, metrics: list[str]) -> None:
        now = time.monotonic()
        if now - self._logged.get(node, -LOG_EVERY_SECS) < LOG_EVERY_SECS:
            return
        self._logged[node] = now
        log.warning("event=series_limit node=%s series=%d new=%d max_per_node=%d metrics=%s "
                    "max_per_metric=%d action=batch_rejected", node, self.by_node[node], new,
                    self.max_per_node, ",".join(metrics[:3]) or "-", self.max_per_metric)
