"""The read path: series selection, query planning over raw and the rollup tiers, top-k.

Stepped queries work on whole step buckets: `since` is rounded down and `until` up to a multiple
of the step (bucket timestamps are bucket starts, aligned to the Unix epoch, so 1d buckets are UTC
days). That makes a tier exact whenever the step is a multiple of its width, so the planner reads
the coarsest such tier that still holds the range, and raw otherwise. Minutes whose rollups are
not yet recomputed (`dirty_minutes`) are read from raw in the same snapshot, so a tier answer is
never stale. A range that starts before the chosen source's retention horizon is refused with a
StoreError that says what is kept, never answered with a silent gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from legion.aggregator.store.columns import objects
from legion.aggregator.store.packing import RawSource
from legion.aggregator.store.schema import TIERS
from legion.kernel.errors import QueryError, StoreError

BASIC_AGGS = ("avg", "min", "max", "sum", "count", "last")
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
AGGS = BASIC_AGGS + tuple(PERCENTILES)

_FINAL = {"avg": "sum(sum) / sum(count)", "min": "min(min)", "max": "max(max)",
          "sum": "sum(sum)", "count": "sum(count)", "last": "arg_max(last, last_ts)"}
# Only the partial columns an aggregation needs are computed (arg_max is not free).
_NEEDS = {"avg": ("sum", "count"), "min": ("min",), "max": ("max",), "sum": ("sum",),
          "count": ("count",), "last": ("last_ts", "last")}
_FROM_RAW = {"min": "min(p.value)", "max": "max(p.value)", "sum": "sum(p.value)",
             "count": "count(*)", "last_ts": "max(p.ts)", "last": "arg_max(p.value, p.ts)"}
_FROM_TIER = {"min": "min(r.min)", "max": "max(r.max)", "sum": "sum(r.sum)",
              "count": "sum(r.count)", "last_ts": "max(r.last_ts)",
              "last": "arg_max(r.last, r.last_ts)"}


def _cols(agg: str, exprs: Mapping[str, str]) -> str:
    return ", ".join(f"{exprs[c]} AS {c}" for c in _NEEDS[agg])
_RAW = {"avg": "avg(value)", "min": "min(value)", "max": "max(value)", "sum": "sum(value)",
        "count": "count(*)", "last": "arg_max(value, ts)",
        **{k: f"quantile_cont(value, {q})" for k, q in PERCENTILES.items()}}


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One series' identity."""

    id: int
    node: str
    metric: str
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a query reads: `source` is 'raw' or a tier name; [lo, hi) in ms (None = open)."""

    source: str
    lo: int | None
    hi: int | None


def select_series(cur: duckdb.DuckDBPyConnection, metric: str | None = None,
                  node: str | None = None, labels: Mapping[str, str] | None = None,
                  glob: str | None = None) -> list[SeriesRow]:
    """Series matching an exact metric (or a glob), a node and label equalities."""
    where, args = ["TRUE"], []
    if metric is not None:
        where.append("name = ?")
        args.append(metric)
    if glob is not None and glob != "*":
        where.append("name GLOB ?")
        args.append(glob)
    if node is not None:
        where.append("node = ?")
        args.append(node)
    for k, v in (labels or {}).items():
        where.append("labels[?] = ?")
        args += [str(k), str(v)]
    rows = cur.execute(f"SELECT id, node, name, labels FROM series WHERE {' AND '.join(where)} "
                       "ORDER BY node, name, labels_key", args).fetchall()
    return [SeriesRow(int(r[0]), r[1], r[2], dict(r[3])) for r in rows]


def plan(step_ms: int | None, agg: str, lo: int | None, hi: int | None,
         kept: Mapping[str, int], whole: bool = False, tiers: bool = True) -> Plan:
    """Choose the coarsest source that answers exactly and still holds [lo, hi)."""
    if agg not in AGGS:
        raise QueryError(f"unknown aggregation {agg!r}; use one of {', '.join(AGGS)}")
    if agg in BASIC_AGGS and tiers:
        for tier in ("1d", "1h", "1m"):
            width = TIERS[tier]
            exact = (all(x is None or x % width == 0 for x in (lo, hi)) if whole
                     else step_ms is not None and step_ms % width == 0)
            if not exact:
                continue
            if lo is not None and lo < kept.get(tier, 0):
                # Finer tiers keep less, so none of them holds the start either.
                raise QueryError(
                    f"range starts at {lo} ms but the {tier} tier keeps data only since "
                    f"{kept.get(tier, 0)} ms; use a coarser step or a later since")
            return Plan(tier, lo, hi)
    if lo is not None and lo < kept.get("raw", 0):
        hint = ("percentiles need raw points" if agg in PERCENTILES
                else "use a step that is a multiple of 1m, 1h or 1d to read the rollups")
        raise QueryError(f"range starts at {lo} ms but raw points are kept only since "
                         f"{kept['raw']} ms; {hint}")
    return Plan("raw", lo, hi)


def aligned(step_ms: int | None, since_ms: int | None, until_ms: int | None
            ) -> tuple[int | None, int | None]:
    """The range a stepped query reads: `since` down and `until` up to whole steps (no step:
    as given)."""
    if step_ms is None:
        return since_ms, until_ms
    if step_ms <= 0:
        raise QueryError(f"step must be positive (got {step_ms} ms)")
    return (None if since_ms is None else since_ms // step_ms * step_ms,
            None if until_ms is None else -(-until_ms // step_ms) * step_ms)


def stepped(cur: duckdb.DuckDBPyConnection, sel: list[SeriesRow], step_ms: int | None,
            agg: str, since_ms: int | None, until_ms: int | None, kept: Mapping[str, int],
            group_by: str | None = None, tiers: bool = True
            ) -> tuple[Plan, list[tuple[Any, int, float]]]:
    """Aggregate per (series or group, step bucket); step None = one bucket for the range."""
    whole = step_ms is None
    lo, hi = aligned(step_ms, since_ms, until_ms)
    p = plan(step_ms, agg, lo, hi, kept, whole=whole, tiers=tiers)
    if not sel:
        return p, []
    ids = [s.id for s in sel]
    direct = group_by is None and len(ids) <= DIRECT_MAX
    bucket = "0" if whole else f"{{t}} // {step_ms} * {step_ms}"
    rng = _range_sql(lo, hi)
    if not direct:
        cur.register("_q_grp", {"sid": np.asarray(ids, np.int32),
                                "g": objects([group_key(s, group_by) for s in sel])})
    try:
        # One snapshot for the dirty list and the read, so a concurrent write cannot slip
        # between them.
        cur.execute("BEGIN TRANSACTION")
        try:
            if p.source == "raw":
                with RawSource(cur, ids, lo, hi) as points:
                    g, src, filt = _src(points, "p", ids, direct)
                    rows = cur.execute(f"""
                        SELECT {g} AS g, {bucket.format(t='p.ts')} AS b, {_RAW[agg]} AS v
                        FROM {src} WHERE {filt} AND {rng.format(t='p.ts')}
                        GROUP BY ALL ORDER BY g, b""").fetchall()
            else:
                # Dirty minutes are never packed (packing waits for them), so the tier SQL
                # reads them from `points` alone.
                dirty = [int(r[0]) for r in cur.execute(
                    "SELECT DISTINCT minute FROM dirty_minutes").fetchall()]
                done = dict(cur.execute(
                    "SELECT tier, max(kept_since_ms) FROM tier_state "
                    "WHERE tier IN ('hours_done', 'days_done') GROUP BY tier").fetchall())
                rows = cur.execute(_tier_sql(p.source, bucket, rng, agg, ids, direct,
                                             dirty, done)).fetchall()
        finally:
            cur.execute("COMMIT")
    except duckdb.Error as exc:
        raise StoreError(f"query failed: {exc}") from exc
    finally:
        if not direct:
            cur.unregister("_q_grp")
    return p, [(r[0] if not direct else str(r[0]), int(r[1]), float(r[2]))
               for r in rows if r[2] is not None]


DIRECT_MAX = 2000
"""Up to this many series (without grouping) are filtered with an IN list, no join."""


def _src(table: str, alias: str, ids: list[int], direct: bool) -> tuple[str, str, str]:
    """(group expression, FROM clause, filter) for reading `table` for the selected series."""
    if direct:
        return (f"{alias}.series_id", f"{table} {alias}",
                f"{alias}.series_id IN ({', '.join(str(int(i)) for i in ids)})")
    return "g.g", f"{table} {alias} JOIN _q_grp g ON {alias}.series_id = g.sid", "TRUE"


def _ints(values: list[int] | set[int]) -> str:
    return "(" + ", ".join(str(int(v)) for v in sorted(values)) + ")"


def _tier_sql(tier: str, bucket: str, rng: str, agg: str, ids: list[int], direct: bool,
              dirty: list[int], done: Mapping[str, int]) -> str:
    """SQL for a stepped query on `tier`: each minute of the range is read from exactly one
    source, the coarsest that covers it: a materialised day without dirty minutes from 1d (tier
    1d only), else a materialised hour without dirty minutes from 1h (tiers 1h and 1d), else a
    rolled minute from 1m, else (a dirty minute) from raw."""
    days_done = done.get("days_done", 0) if tier == "1d" else 0
    hours_done = done.get("hours_done", 0) if tier in ("1h", "1d") else 0
    d_days = {m * 60_000 // 86_400_000 * 86_400_000 for m in dirty}
    d_hours = {m * 60_000 // 3_600_000 * 3_600_000 for m in dirty}

    def not_in(expr: str, values: set[int] | list[int]) -> str:
        return f" AND {expr} NOT IN {_ints(values)}" if values else ""

    def in_(expr: str, values: set[int]) -> str:
        return f" OR {expr} IN {_ints(values)}" if values else ""

    day, hour = "r.bucket // 86400000 * 86400000", "r.bucket // 3600000 * 3600000"
    not_by_day = f"({day} >= {days_done}{in_(day, d_days)})"
    not_by_hour = f"({hour} >= {hours_done}{in_(hour, d_hours)})"
    sources = []
    if days_done:
        sources.append(("rollup_1d", f"r.bucket < {days_done}{not_in('r.bucket', d_days)}"))
    if hours_done:
        sources.append(("rollup_1h", f"{not_by_day} AND r.bucket < {hours_done}"
                                     f"{not_in('r.bucket', d_hours)}"))
    sources.append(("rollup_1m", f"{not_by_day} AND {not_by_hour}"
                                 f"{not_in('r.bucket // 60000', dirty)}"))
    parts = []
    for table, cond in sources:
        g, src, filt = _src(table, "r", ids, direct)
        parts.append(f"""
        SELECT {g} AS g, {bucket.format(t='r.bucket')} AS b, {_cols(agg, _FROM_TIER)}
        FROM {src} WHERE {filt} AND {rng.format(t='r.bucket')} AND {cond}
        GROUP BY ALL""")
    if dirty:
        gp, srcp, filtp = _src("points", "p", ids, direct)
        lo_d, hi_d = min(dirty) * 60_000, (max(dirty) + 1) * 60_000
        parts.append(f"""
            SELECT {gp} AS g, {bucket.format(t='p.ts')} AS b,
                   {_cols(agg, _FROM_RAW)}
            FROM {srcp} WHERE {filtp} AND {rng.format(t='p.ts')}
              AND p.ts >= {lo_d} AND p.ts < {hi_d} AND p.ts // 60000 IN {_ints(dirty)}
            GROUP BY ALL""")
    return f"""
        WITH parts AS ({' UNION ALL '.join(parts)})
        SELECT g, b, {_FINAL[agg]} AS v FROM parts GROUP BY g, b ORDER BY g, b"""


def _range_sql(lo: int | None, hi: int | None) -> str:
    conds = ["TRUE"]
    if lo is not None:
        conds.append(f"{{t}} >= {int(lo)}")
    if hi is not None:
        conds.append(f"{{t}} < {int(hi)}")
    return " AND ".join(conds)


GROUP_SEP = "\x1f"
"""Separates the values of a multi-key group (`group_by="node,cpu"`) in a group key."""


def group_keys(group_by: str) -> list[str]:
    """The keys of a group_by: label keys and/or "node", comma-separated ("*": none)."""
    return [] if group_by == "*" else [k.strip() for k in group_by.split(",")]


def group_key(s: SeriesRow, group_by: str | None) -> str:
    """The group a series falls in: its id without grouping, else its values of the keys."""
    if group_by is None:
        return str(s.id)
    if group_by == "*":
        return "*"
    return GROUP_SEP.join(s.node if k == "node" else s.labels.get(k, "")
                          for k in group_keys(group_by))


def raw_points(cur: duckdb.DuckDBPyConnection, sel: list[SeriesRow], since_ms: int | None,
               until_ms: int | None, kept_raw: int) -> list[tuple[int, int, float]]:
    """Raw (series_id, ts, value) rows in range, ordered by series then time."""
    if since_ms is not None and since_ms < kept_raw:
        raise QueryError(f"range starts at {since_ms} ms but raw points are kept only since "
                         f"{kept_raw} ms; add a step (1m, 1h or 1d) to read the rollups")
    if not sel:
        return []
    ids = [s.id for s in sel]
    try:
        # One snapshot: a pack step moves points into chunks in one transaction.
        cur.execute("BEGIN TRANSACTION")
        try:
            with RawSource(cur, ids, since_ms, until_ms) as points:
                _, src, filt = _src(points, "p", ids, direct=True)
                rows = cur.execute(
                    f"SELECT p.series_id, p.ts, p.value FROM {src} WHERE {filt} AND "
                    f"{_range_sql(since_ms, until_ms).format(t='p.ts')} "
                    "ORDER BY p.series_id, p.ts").fetchall()
        finally:
            cur.execute("COMMIT")
    except duckdb.Error as exc:
        raise StoreError(f"query failed: {exc}") from exc
    return [(int(a), int(b), float(c)) for a, b, c in rows]

