"""What is new for the bridge since its last jobs, at a cost proportional to what is new.

`NewPoints` keeps the watched series and the node vectors' columns (cached from the store's
memory and rebuilt only when the store's series count changes, never a `series` table scan per
tick), the newest timestamp each series had when it last went into a job (`taken`), and reads
only new points: a series whose newest stored point (`Store.newest_ts`, from memory) is not newer
than what it already took is never read. The reads are batched (one statement for many series
starting near the same time) and bounded per tick by a time budget; the oldest pending go first,
what is left waits for the next tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

NO_TS = int(np.iinfo(np.int64).min)
READ_GROUP_SERIES = 512  # series per read statement
READ_GROUP_SPAN_MS = 60_000  # series whose reads start this close share a statement


class SeriesRowLike(Protocol):
    """What a row of `Store.series_of` has."""

    @property
    def id(self) -> int: ...

    @property
    def node(self) -> str: ...

    @property
    def labels(self) -> dict[str, str]: ...


class NewPointsReader(Protocol):
    """The part of `Store` that answers from memory, plus the batched raw read."""

    def series_count(self) -> int: ...

    def series_of(self, metric: str) -> Sequence[SeriesRowLike]: ...

    def newest_ts(self, ids: Sequence[int]) -> list[int]: ...

    def raw_since(self, ids: Sequence[int], since_ms: int) -> list[tuple[int, int, float]]: ...


@dataclass(frozen=True)
class Want:
    """A read to make: these series' points from `since_ms` on, for `key`."""

    key: str
    ids: tuple[int, ...]
    since_ms: int


Points = dict[int, tuple[list[int], list[float]]]
"""Per series id: (timestamps, values), in time order."""
S = TypeVar("S")
Selection = tuple[list[tuple[str, S, int]], dict[str, list[tuple[int, ...]]]]
"""(key, series, series id) of each watched series; node -> series ids per vector column."""


class NewPoints(Generic[S]):
    """The cached watched set and per-series progress of one bridge (see the module doc)."""

    def __init__(self, store: NewPointsReader,
                 select: Callable[[NewPointsReader], Selection[S]]) -> None:
        """`select(store)` builds the cached sets (watched.py's `select_watched`)."""
        self._store, self._select = store, select
        self._count = -1
        self._lock = threading.Lock()
        self.watched: list[tuple[str, S, int]] = []  # (key, series, series id)
        self.node_columns: dict[str, list[tuple[int, ...]]] = {}  # node -> ids per column
        self.taken: dict[str, int] = {}  # key -> newest ts already read for it
        self.reads = 0  # series read, for tests and stats

    def refresh(self) -> None:
        """Rebuild the cached sets if the store has new series since the last rebuild."""
        n = self._store.series_count()
        with self._lock:
            if n == self._count:
                return
            self.watched, self.node_columns = self._select(self._store)
            self._count = n

    def newest(self, ids: Sequence[int]) -> list[int]:
        """Newest stored ts per series id (memory only)."""
        return self._store.newest_ts(ids) if ids else []

    def is_new(self, key: str, newest: int, since_ms: int) -> bool:
        """Whether `key` has a point at or after `since_ms` that it has not taken yet."""
        return newest != NO_TS and newest >= since_ms and newest > self.taken.get(key, NO_TS)

    def read(self, wants: list[Want], budget_s: float
             ) -> Iterator[tuple[Want, Points]]:
        """Each want with its series' points from its `since_ms` on: batched, oldest first,
        until `budget_s` is spent (the rest is read on a later tick)."""
        deadline = time.monotonic() + budget_s
        wants = sorted(wants, key=lambda w: w.since_ms)
        i = 0
        while i < len(wants) and (i == 0 or time.monotonic() < deadline):  # one group at least
            group = [wants[i]]
            n_ids = len(wants[i].ids)
            i += 1
            while (i < len(wants) and n_ids < READ_GROUP_SERIES
                   and wants[i].since_ms - group[0].since_ms <= READ_GROUP_SPAN_MS):
                group.append(wants[i])
                n_ids += len(wants[i].ids)
                i += 1
            ids = sorted({sid for w in group for sid in w.ids})
            rows = self._store.raw_since(ids, group[0].since_ms)
            self.reads += len(ids)
            by_id: Points = {}
            for sid, t, v in rows:
                ts, vals = by_id.setdefault(sid, ([], []))
                ts.append(t)
                vals.append(v)
            for w in group:
                yield w, {sid: _from(by_id.get(sid, ([], [])), w.since_ms) for sid in w.ids}

    def took(self, key: str, newest: int) -> None:
        """`key` has been read up to `newest`: not read again until it has a newer point."""
        self.taken[key] = max(newest, self.taken.get(key, NO_TS))

    def stats(self) -> Mapping[str, int]:
        """Cached set sizes and series read so far."""
        return {"watched": len(self.watched), "nodes": len(self.node_columns),
                "series_read": self.reads}


def _from(pts: tuple[list[int], list[float]], since_ms: int) -> tuple[list[int], list[float]]:
    ts, vals = pts
    if not ts or ts[0] >= since_ms:
        return ts, vals
    start = int(np.searchsorted(np.asarray(ts), since_ms))
    return ts[start:], vals[start:]
