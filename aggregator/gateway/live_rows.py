"""The hub's live rows: the newest point of every fleet series, from store reads and commits.

Rows have the shape of `Store.latest()` (ts_ms, node, metric, labels, value). Commits pushed by
the store arrive on its writer thread (`push`, thread-safe); the hub's event loop folds them in
(`drain`) before each rebuild. A newer point of a series always wins, whatever the order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

RowKey = tuple[str, str, tuple[tuple[str, str], ...]]


def row_key(r: Mapping[str, Any]) -> RowKey:
    """(node, metric, sorted label pairs): one series."""
    return (r["node"], r["metric"], tuple(sorted((r.get("labels") or {}).items())))


class LiveRows:
    """Newest row per series; `push` from any thread, everything else on the event loop."""

    def __init__(self) -> None:
        self._rows: dict[RowKey, Mapping[str, Any]] = {}
        self._pushed: deque[tuple[Mapping[str, Any], ...]] = deque()

    def push(self, rows: tuple[Mapping[str, Any], ...]) -> None:
        """Queue the rows of one commit (thread-safe; folded in by `drain`)."""
        self._pushed.append(rows)

    def drain(self) -> None:
        """Fold every queued commit in."""
        while self._pushed:
            self.merge(self._pushed.popleft())

    def replace(self, rows: Iterable[Mapping[str, Any]], keep_newer: bool) -> None:
        """A store read becomes the live set; with `keep_newer`, a row the read lacks or holds
        older (committed after the read began) is kept."""
        old, self._rows = self._rows, {row_key(r): r for r in rows}
        if keep_newer:
            self.merge(old.values())

    def merge(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Take each row that is newer than the one held for its series."""
        for r in rows:
            k = row_key(r)
            cur = self._rows.get(k)
            if cur is None or r["ts_ms"] > cur["ts_ms"]:
                self._rows[k] = r

    def values(self) -> list[Mapping[str, Any]]:
        """The live rows."""
        return list(self._rows.values())
