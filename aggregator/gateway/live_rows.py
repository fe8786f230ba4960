"""The hub's live rows: the newest point of every fleet series, from store reads and pushes.

Rows have the shape of `Store.latest()` (ts_ms, node, metric, labels, value). Pushes arrive on
the ingest or store writer thread (`push`, `push_batch`: thread-safe); the hub's event loop folds
them in (`drain`) before each rebuild. A newer point of a series always wins, whatever the order.
Rows are kept per node, and the nodes whose rows changed since the hub last asked are `dirty`:
the hub rebuilds only those.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from legion.aggregator.store.types import IncomingBatch

RowKey = tuple[str, str, tuple[tuple[str, str], ...]]
LIVE_PREFIXES = ("system_", "agent_")
"""Metric prefixes the fleet is built from."""


def row_key(r: Mapping[str, Any]) -> RowKey:
    """(node, metric, sorted label pairs): one series."""
    return (r["node"], r["metric"], tuple(sorted((r.get("labels") or {}).items())))


def batch_rows(item: IncomingBatch) -> list[dict[str, Any]]:
    """The newest point of each fleet series in one batch, as live rows."""
    return [r for _, r in keyed_batch_rows(item)]


def keyed_batch_rows(item: IncomingBatch) -> list[tuple[RowKey, dict[str, Any]]]:
    """`batch_rows` with each row's key (a batch's label sets are canonical already: sorted
    pairs, so the key needs no sorting)."""
    b = item.batch
    live = [i for i, name in enumerate(b.names) if name.startswith(LIVE_PREFIXES)]
    if not live:
        return []
    newest: dict[tuple[int, int], tuple[int, float]] = {}
    keep = set(live)
    for n, lb, v, t in zip(b.name_idx.tolist(), b.label_idx.tolist(), b.values.tolist(),
                           b.ts_ms.tolist(), strict=True):
        if n in keep:
            cur = newest.get((n, lb))
            if cur is None or t >= cur[0]:
                newest[(n, lb)] = (t, v)
    node = item.node
    return [((node, b.names[n], b.label_sets[lb]),
             {"ts_ms": t, "node": node, "metric": b.names[n], "labels": dict(b.label_sets[lb]),
              "value": v}) for (n, lb), (t, v) in newest.items()]


class LiveRows:
    """Newest row per series, per node; `push`/`push_batch` from any thread, everything else
    on the event loop."""

    def __init__(self) -> None:
        self._nodes: dict[str, dict[RowKey, Mapping[str, Any]]] = {}
        self._pushed: deque[tuple[Mapping[str, Any], ...] | IncomingBatch] = deque()
        self.dirty: set[str] = set()
        self.dirty_prefixes: set[str] = set()  # of the rows taken since `take_dirty`
        self._with: dict[str, set[str]] = {p: set() for p in LIVE_PREFIXES}  # prefix -> nodes

    def push(self, rows: tuple[Mapping[str, Any], ...]) -> None:
        """Queue the rows of one commit (thread-safe; folded in by `drain`)."""
        self._pushed.append(rows)

    def push_batch(self, item: IncomingBatch) -> None:
        """Queue one accepted batch (thread-safe; its rows are made and folded in by `drain`)."""
        self._pushed.append(item)

    def drain(self, observe: Callable[[Sequence[tuple[RowKey, Mapping[str, Any]]]], None]
              | None = None) -> None:
        """Fold every queued commit or batch in, in order; `observe` gets each one's keyed rows
        after it is folded in (the hub's chart history)."""
        while self._pushed:
            got = self._pushed.popleft()
            pairs: Sequence[tuple[RowKey, Mapping[str, Any]]] = keyed_batch_rows(got) \
                if isinstance(got, IncomingBatch) \
                else [(row_key(r), r) for r in got]
            self._merge_keyed(pairs)
            if observe is not None:
                observe(pairs)

    def replace(self, rows: Iterable[Mapping[str, Any]], keep_newer: bool) -> None:
        """A store read becomes the live set; with `keep_newer`, a row the read lacks or holds
        older (committed after the read began) is kept. Every node is dirty after it."""
        old, self._nodes = self._nodes, {}
        self._with = {p: set() for p in LIVE_PREFIXES}
        self.merge(rows)
        if keep_newer:
            self.merge(r for rows_of in old.values() for r in rows_of.values())
        self.dirty = set(self._nodes) | set(old)
        self.dirty_prefixes = set(LIVE_PREFIXES)

    def merge(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Take each row that is newer than the one held for its series."""
        self._merge_keyed((row_key(r), r) for r in rows)

    def _merge_keyed(self, pairs: Iterable[tuple[RowKey, Mapping[str, Any]]]) -> None:
        for k, r in pairs:
            node = self._nodes.get(k[0])
            if node is None:
                node = self._nodes[k[0]] = {}
            cur = node.get(k)
            if cur is None or r["ts_ms"] > cur["ts_ms"]:
                node[k] = r
                self.dirty.add(k[0])
                for p, nodes in self._with.items():
                    if k[1].startswith(p):
                        self.dirty_prefixes.add(p)
                        if cur is None:
                            nodes.add(k[0])

    def values(self) -> list[Mapping[str, Any]]:
        """The live rows."""
        return [r for rows in self._nodes.values() for r in rows.values()]

    def rows(self, prefix: str, nodes: Iterable[str] | None = None) -> list[Mapping[str, Any]]:
        """The live rows whose metric starts with `prefix` (one of `LIVE_PREFIXES`), of `nodes`
        or of every node."""
        having = self._with[prefix]
        return [r for n in (having if nodes is None else having.intersection(nodes))
                for r in self._nodes[n].values() if r["metric"].startswith(prefix)]

    def items_of(self, node: str) -> Iterable[tuple[RowKey, Mapping[str, Any]]]:
        """One node's (key, row) pairs."""
        return self._nodes.get(node, {}).items()

    def take_dirty(self) -> set[str]:
        """The nodes changed since the last call (then none are; `dirty_prefixes` says which
        kinds of rows changed until this call)."""
        dirty, self.dirty = self.dirty, set()
        self.dirty_prefixes = set()
        return dirty
