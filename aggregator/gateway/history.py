"""Chart history of the hub's two metric topics: the newest points of each host's and agent's
chart series (`HOST_CHART_KEYS`, `AGENT_CHART_KEYS`), bounded, for snapshots.

Each series keeps at most `max_history_points`, lowered when the fleet is so large that all of
them together would pass `HISTORY_BUDGET_POINTS`; a snapshot carries at most
`SNAPSHOT_HISTORY_MAX_POINTS` (the newest of each series).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Any

from legion.aggregator.gateway.fleet import AGENT_CHART_KEYS, HOST_CHART_KEYS

HISTORY_BUDGET_POINTS = 2_000_000
"""All chart series together keep at most this many points (16 bytes each, ~32 MB)."""
SNAPSHOT_HISTORY_MAX_POINTS = 200_000
"""One snapshot carries at most this many history points (the newest of each series)."""


class Ring:
    """Newest (ts_ms, value) points of one series in two flat arrays (16 bytes per point)."""

    __slots__ = ("ts", "values")

    def __init__(self) -> None:
        self.ts = array("q")
        self.values = array("d")

    def append(self, ts_ms: int, value: float, keep: int) -> None:
        """Add a point; trim to `keep` points when twice that many accumulated (amortized)."""
        self.ts.append(int(ts_ms))
        self.values.append(float(value))
        if len(self.ts) > 2 * keep:
            del self.ts[:-keep]
            del self.values[:-keep]

    def last_ts(self) -> int | None:
        """Timestamp of the newest point, if any."""
        return self.ts[-1] if self.ts else None

    def points(self, limit: int) -> list[list[float]]:
        """The newest `limit` points, oldest first, as `[ts_ms, value]` pairs."""
        n = min(limit, len(self.ts))
        if n <= 0:
            return []
        return [[t, v] for t, v in zip(self.ts[-n:], self.values[-n:], strict=True)]

    def __len__(self) -> int:
        return len(self.ts)


class ChartHistory:
    """Per topic, entity and chart key, a `Ring` of its newest points."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.series: dict[str, dict[str, dict[str, Ring]]] = {
            "system_health": {}, "agent_metrics": {}}
        self._count = 0  # series kept (they are never dropped)

    def __contains__(self, topic: object) -> bool:
        return topic in self.series

    def limit(self) -> int:
        """Points kept per series: `max_points`, lowered when the fleet is huge."""
        return min(self.max_points, max(10, HISTORY_BUDGET_POINTS // max(1, self._count)))

    def record(self, topic: str, diff: Mapping[str, Any]) -> None:
        """Add the newer points of the hosts/agents in a topic update."""
        keep = self.limit()
        field, idkey, keys = (("hosts", "node", HOST_CHART_KEYS) if topic == "system_health"
                              else ("agents", "agent_id", AGENT_CHART_KEYS))
        hist = self.series[topic]
        for e in diff.get(field, ()):
            series = hist.setdefault(e[idkey], {})
            for k in keys:
                v = e["metrics"].get(k)
                if v is None:
                    continue
                ring = series.get(k)
                if ring is None:
                    ring = series[k] = Ring()
                    self._count += 1
                last = ring.last_ts()
                if last is None or last < e["ts_ms"]:
                    ring.append(e["ts_ms"], v, keep)

    def points(self, topic: str) -> dict[str, dict[str, list[list[float]]]]:
        """A snapshot's history of `topic`: per entity and key, its newest points."""
        hist = self.series[topic]
        n_series = sum(len(s) for s in hist.values())
        limit = min(self.limit(), max(10, SNAPSHOT_HISTORY_MAX_POINTS // max(1, n_series)))
        return {ent: {k: ring.points(limit) for k, ring in series.items()}
                for ent, series in hist.items()}
