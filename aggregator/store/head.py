"""The query head: the newest minutes of the rollup tiers in memory, so recent stepped queries
never touch DuckDB (like Prometheus' head block).

Per minute, one float64 block of shape (series capacity, 6): min, max, sum, count, last_ts,
last, indexed by series id. It is loaded once from the 1m tier (and from raw for the minutes
still dirty) by the first query that could use it, while writes wait; after that every write
adds its points (`apply`, on the writer thread, right after COMMIT), so the head holds exactly
what the tiers hold. It keeps the newest minutes that fit `storage.query_head_mib`, and at most
`storage.query_head_hours` of them (plus `ALIGN_MINUTES`), and covers [start, now): a query
whose aligned range starts before `start`, reads raw, or has no step goes to DuckDB. The bound
in time is what keeps a small install's head small: at one agent's 116 series the MiB bound
alone was reached after ~8 days (64 MiB); 24 h (the dashboard's longest range) is ~8 MiB.
Answers equal the tier SQL's; float sums may differ in the last bits (the same values added in
another order).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import numpy as np

from legion.aggregator.store.query import DIRECT_MAX, SeriesRow, aligned, group_key, plan

MIN, MAX, SUM, COUNT, LAST_TS, LAST = range(6)
MINUTE_MS = 60_000
NOW_MAX_CELLS = 20_000
"""The most (minutes x series) a query that must not wait combines (about 2 ms here): more
is left to a worker thread."""
ALIGN_MINUTES = 60
"""Minutes kept beyond `query_head_hours`: a range of exactly that many hours, aligned down to
its step (up to an hour), still starts inside the head."""
_EMPTY = np.array([np.inf, -np.inf, 0.0, 0.0, -np.inf, np.nan])
FIRST_CAPACITY = 64
"""Series rows per minute block at least (the load sizes them to the series ids, writes double
them as series come): one agent's 116 series take 117-row minutes (5.5 KiB), not 1,024-row
ones (48 KiB, 2.8 MiB an hour toward `query_head_mib`; issue 17, docs/peers.md)."""

_ROLLED_SQL = """
    SELECT series_id AS s, bucket AS b, min AS mn, max AS mx, sum AS sm, count::DOUBLE AS n,
           last_ts::DOUBLE AS lt, last AS l
    FROM rollup_1m WHERE bucket >= {start}"""
_DIRTY_SQL = """
    SELECT series_id AS s, ts // 60000 * 60000 AS b, min(value) AS mn, max(value) AS mx,
           sum(value) AS sm, count(*)::DOUBLE AS n, max(ts)::DOUBLE AS lt,
           arg_max(value, ts) AS l
    FROM points WHERE ts >= {lo} AND ts < {hi} AND ts // 60000 IN ({minutes})
    GROUP BY ALL"""
"""The 1m source as the tier SQL reads it: rolled minutes from `rollup_1m` (possibly several
partial rows per series and minute), dirty minutes from raw (never packed, so `points`)."""
_COLS = ("mn", "mx", "sm", "n", "lt", "l")


class QueryHead:
    """Recent minute partials of every series, bounded to `budget_bytes`."""

    def __init__(self, budget_bytes: int, max_hours: float = 0.0) -> None:
        self.budget = budget_bytes
        self.span_minutes = int(max_hours * 60) + ALIGN_MINUTES if max_hours > 0 else 0
        self.gate = threading.Lock()  # held by a write (commit + apply) and by the load
        self._lock = threading.Lock()  # guards the blocks
        # One array for all minutes, so a query gathers its (minutes x series) in one indexing
        # (a block per minute cost ~3 us per minute and query): slot -> (cap, 6).
        self._ring = np.empty((0, FIRST_CAPACITY, 6))
        self._slots: dict[int, int] = {}  # minute start (ms) -> its slot in _ring
        self._free: list[int] = []  # slots of _ring no minute holds
        self._minutes: list[int] = []  # the keys of _slots, sorted
        self._cap = FIRST_CAPACITY
        self.start: int | None = None  # None: not loaded; else held completely from here
        self.loads = 0
        self.hits = 0  # queries answered here

    # ---- feeding ---------------------------------------------------------------------------
    def apply(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
        """Add one committed write's points (sorted by series, then time); call under `gate`."""
        if self.start is None or not ts.shape[0]:
            return
        keep = ts >= self.start
        if not keep.all():
            sid, ts, val = sid[keep], ts[keep], val[keep]
        minute = ts // MINUTE_MS * MINUTE_MS
        with self._lock:
            self._grow(int(sid.max()) + 1 if sid.shape[0] else 0)
            for m in np.unique(minute).tolist():
                pick = minute == m
                v, t = val[pick], ts[pick].astype(np.float64)
                self._merge(m, sid[pick].astype(np.int64), (v, v, v, np.ones_like(v), t, v))
            self._evict()

    def _merge(self, m: int, s: np.ndarray, parts: tuple[np.ndarray, ...]) -> None:
        """Fold partials (min, max, sum, count, last_ts, last per row; rows sorted by series,
        then last_ts) into minute `m`'s block."""
        mn, mx, sm, n, lt, last = parts
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        ends = np.r_[starts[1:], s.shape[0]] - 1
        u = s[starts]
        blk = self._block(m)
        blk[u, MIN] = np.minimum(blk[u, MIN], np.minimum.reduceat(mn, starts))
        blk[u, MAX] = np.maximum(blk[u, MAX], np.maximum.reduceat(mx, starts))
        blk[u, SUM] += np.add.reduceat(sm, starts)
        blk[u, COUNT] += np.add.reduceat(n, starts)
        newer = lt[ends] >= blk[u, LAST_TS]
        blk[u[newer], LAST_TS] = lt[ends][newer]
        blk[u[newer], LAST] = last[ends][newer]

    def _block(self, m: int) -> np.ndarray:
        """Minute `m`'s (cap, 6) partials, a view into the ring (a fresh, empty slot if new)."""
        slot = self._slots.get(m)
        if slot is None:
            if not self._free:  # doubling, up to a slot past the budget (`_evict` packs)
                n = self._ring.shape[0]
                more = max(1, min(n, self.max_minutes() + 1 - n))
                self._ring = np.concatenate([self._ring, np.empty((more, *self._ring.shape[1:]))])
                self._free = list(range(n + more - 1, n - 1, -1))
            slot = self._slots[m] = self._free.pop()
            self._ring[slot] = _EMPTY
            bisect.insort(self._minutes, m)
        block: np.ndarray = self._ring[slot]
        return block

    def _grow(self, need: int) -> None:
        """Room for series ids below `need`: fewer minutes fit the budget, the oldest go."""
        if need <= self._cap:
            return
        old, self._cap = self._cap, max(need, 2 * self._cap)
        self._evict(repack=False)
        self._repack(old)

    def _repack(self, old_cap: int) -> None:
        """A ring of exactly the minutes held, at the current capacity (`old_cap`: the one
        the held minutes have)."""
        grown = np.empty((len(self._minutes), self._cap, 6))
        grown[:, old_cap:] = _EMPTY
        grown[:, :old_cap] = self._ring[[self._slots[m] for m in self._minutes]]
        self._ring, self._free = grown, []
        self._slots = {m: i for i, m in enumerate(self._minutes)}

    def max_minutes(self, cap: int | None = None) -> int:
        """How many minute blocks fit the budget at the current (or `cap`) series capacity, at
        most `span_minutes` (when bounded in time)."""
        fit = max(1, self.budget // (6 * 8 * max(self._cap, cap or 0)))
        return min(fit, self.span_minutes) if self.span_minutes else fit

    def _evict(self, repack: bool = True) -> None:
        """Keep the newest minutes that fit; a ring grown past them by a write that opened
        several minutes at once is packed again (the budget holds after every write)."""
        extra = len(self._minutes) - self.max_minutes()
        if extra > 0:
            for m in self._minutes[:extra]:
                self._free.append(self._slots.pop(m))
                self.start = max(self.start or 0, m + MINUTE_MS)
            del self._minutes[:extra]
        if repack and self._ring.shape[0] > self.max_minutes() + 1:
            self._repack(self._cap)

    def load(self, cur: duckdb.DuckDBPyConnection, series_cap: int) -> None:
        """Fill from the file (the newest minutes that fit); call under `gate`, no write
        running, so that every later write is applied exactly once."""
        self._cap = max(self._cap, series_cap)
        k = self.max_minutes()
        cur.execute("BEGIN TRANSACTION")
        try:
            newest = [int(r[0]) for r in cur.execute(
                "SELECT DISTINCT b FROM (SELECT bucket AS b FROM rollup_1m UNION "
                "SELECT DISTINCT minute * 60000 FROM dirty_minutes) ORDER BY b DESC LIMIT ?",
                [k + 1]).fetchall()]
            # All of them fit: from the start of time; else from the k-th newest minute.
            start = 0 if len(newest) <= k else newest[k - 1]
            dirty = sorted(int(r[0]) for r in cur.execute(
                "SELECT DISTINCT minute FROM dirty_minutes").fetchall())
            parts = [cur.execute(_ROLLED_SQL.format(start=int(start))).fetchnumpy()]
            if dirty:
                parts.append(cur.execute(_DIRTY_SQL.format(
                    lo=max(int(start), dirty[0] * MINUTE_MS), hi=(dirty[-1] + 1) * MINUTE_MS,
                    minutes=", ".join(map(str, dirty)))).fetchnumpy())
        finally:
            cur.execute("COMMIT")
        cols = {c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in ("s", "b", *_COLS)}
        if dirty:  # rolled rows of dirty minutes are stale: the tier SQL reads those from raw
            rolled = len(parts[0]["s"])
            stale = np.isin(cols["b"][:rolled] // MINUTE_MS, dirty)
            keep = np.r_[~stale, np.ones(cols["s"].shape[0] - rolled, bool)]
            cols = {c: a[keep] for c, a in cols.items()}
        order = np.lexsort((cols["lt"], cols["s"], cols["b"]))
        b, sid = cols["b"][order].astype(np.int64), cols["s"][order].astype(np.int64)
        fields = tuple(np.asarray(cols[c], np.float64)[order] for c in _COLS)
        with self._lock:
            self._ring = np.empty((0, self._cap, 6))
            self._slots, self._free, self._minutes = {}, [], []
            self._grow(int(sid.max()) + 1 if sid.shape[0] else 0)
            # run starts of each minute, and the end (an empty file: no runs at all)
            bounds = np.flatnonzero(np.r_[True, b[1:] != b[:-1], True][:b.shape[0] + 1])
            for i, j in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                self._merge(int(b[i]), sid[i:j], tuple(f[i:j] for f in fields))
            self.start = start
            self.loads += 1
            self._evict()

    def nbytes(self) -> int:
        """Bytes the minutes held take (the ring may have a free slot or so beside them)."""
        with self._lock:
            return len(self._minutes) * self._cap * 6 * 8

    # ---- reading ---------------------------------------------------------------------------
    def stepped(self, sel: list[SeriesRow], step_ms: int, agg: str, since_ms: int | None,
                until_ms: int | None, kept: Mapping[str, int], group_by: str | None,
                ensure_loaded: Callable[[int], None] | None, wait: bool = True
                ) -> list[tuple[Any, int, float]] | None:
        """`query.stepped`'s rows when the head holds the whole range read from a tier, else
        None (the caller asks DuckDB). Raises what `query.plan` raises. Without `wait` (for an
        event loop: `Store.query_now`) it also answers None rather than wait for a write's
        `apply` or combine more than `NOW_MAX_CELLS`; without `ensure_loaded`, when not
        loaded."""
        lo, hi = aligned(step_ms, since_ms, until_ms)
        p = plan(step_ms, agg, lo, hi, kept)
        if p.source == "raw" or lo is None:
            return None
        if self.start is None and ensure_loaded is not None:
            ensure_loaded(lo)
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            if self.start is None or lo < max(self.start, kept.get("1m", 0)):
                return None
            if not sel:
                self.hits += 1
                return []
            held = self._minutes
            minutes = held[bisect.bisect_left(held, lo):
                           len(held) if hi is None else bisect.bisect_left(held, hi)]
            if not minutes:
                self.hits += 1
                return []
            if not wait and len(minutes) * len(sel) > NOW_MAX_CELLS:
                return None
            slots = [self._slots[m] for m in minutes]
            if len(sel) == 1 and group_by is None:  # one series (a dashboard panel)
                self.hits += 1
                sid = sel[0].id
                if sid >= self._cap:
                    return []
                one = self._ring[slots, sid].tolist()  # (M, 6) as Python floats
                return _one_series(one, minutes, step_ms, agg, group_key(sel[0], None))
            ids = np.fromiter((s.id for s in sel), np.int64, len(sel))
            inside = ids < self._cap
            cols = np.where(inside, ids, 0)
            arr = self._ring[np.array(slots)[:, None], cols]  # (M, N, 6), one gather
            self.hits += 1
        finally:
            self._lock.release()
        if not inside.all():
            arr[:, ~inside, :] = _EMPTY
        return _combine(arr, minutes, step_ms, agg, sel, group_by)


_NEEDS = {"avg": (SUM, COUNT), "min": (MIN, COUNT), "max": (MAX, COUNT), "sum": (SUM, COUNT),
          "count": (COUNT,), "last": (LAST_TS, LAST, COUNT)}
_FIELD = {"min": MIN, "max": MAX, "sum": SUM, "last": LAST}
_FIRST = np.zeros(1, np.intp)
_UFUNC = {MIN: np.minimum, MAX: np.maximum, SUM: np.add, COUNT: np.add, LAST_TS: np.maximum}


def _reduce(parts: dict[int, np.ndarray], starts: np.ndarray, axis: int
            ) -> dict[int, np.ndarray]:
    """Combine partials (field -> 2-D array) over contiguous segments of `axis`."""
    if starts.shape[0] == next(iter(parts.values())).shape[axis]:
        return parts  # every segment is one row: nothing to combine
    out = {f: _UFUNC[f].reduceat(a, starts, axis=axis) for f, a in parts.items() if f != LAST}
    if LAST in parts:
        lt = parts[LAST_TS]
        sizes = np.diff(np.append(starts, lt.shape[axis]))
        newest = np.repeat(out[LAST_TS], sizes, axis=axis)
        out[LAST] = np.fmax.reduceat(np.where(lt == newest, parts[LAST], np.nan), starts,
                                     axis=axis)
    return out


def _segments(keys: list[Any]) -> np.ndarray:
    """Where each run of equal keys starts."""
    return np.flatnonzero([i == 0 or keys[i] != keys[i - 1] for i in range(len(keys))])


def _one_series(cells: list[list[float]], minutes: list[int], step_ms: int, agg: str,
                key: str) -> list[tuple[Any, int, float]]:
    """`_combine` for one series without grouping, in plain Python: its partials per minute
    (min, max, sum, count, last_ts, last) folded per step bucket as `_reduce` folds them (NaN
    propagates through min/max; `last` is the largest of the values at the newest `last_ts`).
    A few dozen minutes cost less this way than the NumPy calls did (docs/peers.md)."""
    folded: list[tuple[int, list[float]]] = []  # (bucket, its partials), in time order
    acc: list[float] = []
    bucket = -1
    for m, cell in zip(minutes, cells, strict=True):
        b = m // step_ms * step_ms
        if b != bucket:
            bucket, acc = b, cell
            folded.append((b, acc))
            continue
        mn, mx, sm, n, lt, last = cell
        a = acc
        if not (a[MIN] <= mn or a[MIN] != a[MIN]):  # np.minimum: NaN wins
            a[MIN] = mn
        if not (a[MAX] >= mx or a[MAX] != a[MAX]):
            a[MAX] = mx
        a[SUM] += sm
        a[COUNT] += n
        if lt > a[LAST_TS]:
            a[LAST_TS], a[LAST] = lt, last
        elif lt == a[LAST_TS] and (a[LAST] != a[LAST] or last > a[LAST]):  # np.fmax
            a[LAST] = last
    if agg == "avg":
        return [(key, b, a[SUM] / a[COUNT]) for b, a in folded if a[COUNT] > 0]
    f = COUNT if agg == "count" else _FIELD[agg]
    return [(key, b, a[f]) for b, a in folded if a[COUNT] > 0]


def _combine(arr: np.ndarray, minutes: list[int], step_ms: int, agg: str,
             sel: list[SeriesRow], group_by: str | None) -> list[tuple[Any, int, float]]:
    """Rows (group key, bucket, value) ordered as the tier SQL orders them."""
    buckets = [m // step_ms * step_ms for m in minutes]
    b_starts = _segments(buckets)
    parts = {f: arr[:, :, f] for f in _NEEDS[agg]}
    if group_by == "*":  # one group of all: fold each minute's series, then each bucket's
        whole = _reduce(_reduce(parts, _FIRST, axis=1), b_starts, axis=0)  # (B, 1)
        n1 = whole[COUNT][:, 0]
        v1 = (whole[SUM][:, 0] / np.where(n1 > 0, n1, 1.0) if agg == "avg" else
              n1 if agg == "count" else whole[_FIELD[agg]][:, 0])
        return [("*", buckets[i], v) for i, v, c in
                zip(b_starts.tolist(), v1.tolist(), n1.tolist(), strict=True) if c > 0]
    parts = _reduce(parts, b_starts, axis=0)  # (B, N)
    keys = [group_key(s, group_by) for s in sel]
    if group_by is None and len(sel) <= DIRECT_MAX:
        order = sorted(range(len(sel)), key=lambda i: sel[i].id)
    else:
        order = sorted(range(len(sel)), key=lambda i: keys[i])
    sorted_keys = [keys[i] for i in order]
    g_starts = _segments(sorted_keys)
    if order != list(range(len(sel))):
        parts = {f: a[:, order] for f, a in parts.items()}
    g = _reduce(parts, g_starts, axis=1)  # (B, G)
    n = g[COUNT]
    value = (g[SUM] / np.where(n > 0, n, 1.0) if agg == "avg" else
             n if agg == "count" else g[_FIELD[agg]])
    gi, bi = np.nonzero((n > 0).T)  # ordered by group, then bucket
    b_list, g_keys = [buckets[i] for i in b_starts.tolist()], [sorted_keys[i] for i in g_starts]
    return [(g_keys[a], b_list[b], v) for a, b, v in
            zip(gi.tolist(), bi.tolist(), value[bi, gi].tolist(), strict=True)]
