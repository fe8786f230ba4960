"""Chart history of the hub's two metric topics: the newest points of each host's and agent's
chart series (`HOST_CHART_KEYS`, `AGENT_CHART_KEYS`), bounded, for snapshots.

Each series keeps at most `max_history_points`, lowered when the fleet is so large that all of
them together would pass `HISTORY_BUDGET_POINTS`; a snapshot carries at most
`SNAPSHOT_HISTORY_MAX_POINTS` (the newest of each series).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from legion.aggregator.gateway.fleet import (
    AGENT_CHART_KEYS,
    AGENT_PREFIX,
    HOST_CHART_KEYS,
    HOST_PREFIX,
    FleetBuilder,
    metric_key,
)
from legion.aggregator.gateway.live_rows import RowKey

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


class ChartRecorder:
    """Chart points while the hub does not rebuild (nobody watches): after each pushed batch or
    commit, the chart entries of the nodes it touched, from each node's live rows of the series
    chart keys come from, with the hub's `FleetBuilder` (the same folds, and counter rates that
    go on across watched and unwatched stretches). A late client's snapshot so holds a point
    per batch, as if the hub had rebuilt the fleet for each one (a watched hub records from its
    diffs, `Hub._apply`)."""

    def __init__(self, history: ChartHistory, builder: FleetBuilder) -> None:
        self.history = history
        self._builder = builder
        self._named: dict[str, bool] = {}  # metric name -> may feed a chart key
        self._charted: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}

    def record(self, pairs: Iterable[tuple[RowKey, Mapping[str, Any]]],
               rows_of: Callable[[str], Iterable[tuple[RowKey, Mapping[str, Any]]]],
               now_ms: int) -> None:
        """After `pairs` ((node, metric, labels), row) were folded into the live rows (each
        node's: `rows_of`), record the chart points of the nodes whose chart series they
        touched."""
        for node in {k[0] for k, _ in pairs if self._is_charted(k)}:
            rows = [r for k, r in rows_of(node) if self._is_charted(k)]
            system = [r for r in rows if r["metric"].startswith(HOST_PREFIX)]
            if system:
                hosts = self._builder.host_entries(system, now_ms)
                self.history.record("system_health", {"hosts": list(hosts.values())})
            agent = [r for r in rows if r["metric"].startswith(AGENT_PREFIX)]
            if agent:
                self.history.record("agent_metrics",
                                    {"agents": self._builder.assemble({}, agent, now_ms)["agents"]})

    def _is_charted(self, k: RowKey) -> bool:
        named = self._named.get(k[1])
        if named is None:
            named = self._named[k[1]] = _named(k[1])
        if not named:  # most series: one lookup by name
            return False
        charted = self._charted.get(k[1:])
        if charted is None:
            charted = self._charted[k[1:]] = _charted(k[1], k[2])
        return charted


def _named(metric: str) -> bool:
    """Whether some labels could make `metric` feed a chart key (split labels only append to
    its name; a counter's rate drops `_total`)."""
    for prefix, keys in ((HOST_PREFIX, HOST_CHART_KEYS), (AGENT_PREFIX, AGENT_CHART_KEYS)):
        if metric.startswith(prefix):
            stem = metric.removeprefix(prefix).removesuffix("_total")
            return any(k.startswith(stem) for k in keys)
    return False


def _charted(metric: str, labels: tuple[tuple[str, str], ...]) -> bool:
    """Whether a series feeds a chart key (directly, folded, or as a counter's rate)."""
    for prefix, keys in ((HOST_PREFIX, HOST_CHART_KEYS), (AGENT_PREFIX, AGENT_CHART_KEYS)):
        if metric.startswith(prefix):
            return any(k is not None and (k in keys or k.removesuffix("_total") + "_per_s" in keys)
                       for k in metric_key(metric, prefix, dict(labels)))
    return False
