"""`Store`: the one DuckDB file of the aggregator, one writer thread, queries from any thread."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import packing, rejected, retention, rollup
from legion.aggregator.store import query as q
from legion.aggregator.store.commits import CommitNotice, Listener, commit_feed
from legion.aggregator.store.head import QueryHead
from legion.aggregator.store.head_ahead import HeadAhead
from legion.aggregator.store.health import StoreHealth, is_checkpoint_busy, reopen
from legion.aggregator.store.idle_checkpoint import CHECKPOINT_IDLE_WAL, WriterLoad
from legion.aggregator.store.light_gate import LightRoundGate
from legion.aggregator.store.query_methods import QueryMethods
from legion.aggregator.store.schema import DB_ALIAS, TIERS, open_database
from legion.aggregator.store.seqindex import SeqIndex
from legion.aggregator.store.types import BatchKey, IncomingBatch, WriteResult
from legion.aggregator.store.writer import StoreWriter
from legion.kernel.errors import StoreError

CHECKPOINT_MIN_WAL = 1 << 20
"""Below this WAL size a maintenance round does not bother to checkpoint."""
CHECKPOINT_FORCE_WAL = 8 << 20
"""From this WAL size a round checkpoints even over its budget (half of DuckDB's own trigger)."""
CHECKPOINT_COST_GUESS = 0.03
"""Seconds a checkpoint is assumed to take before the first one is measured."""

log = logging.getLogger("legion.aggregator.store")


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Store(QueryMethods):
    """DuckDB storage: exactly-once batches, series, raw points, rollup tiers, retention.

    One thread calls `write` (and `maintain`, `checkpoint`); any thread may call the query
    methods, each of which uses its own cursor. Timestamps in and out are ms since the epoch::

        store = Store("legion.duckdb")
        result = store.write([IncomingBatch("web-1", 1, 1, batch, now_ms)])
        store.query("system_cpu_usage_percent", node="web-1", step_ms=60_000, agg="max")
    """

    def __init__(self, db_path: str | Path, config: StorageConfig | None = None, *,
                 clock_ms: Callable[[], int] = _wall_ms,
                 timer_s: Callable[[], float] | None = None) -> None:
        """`clock_ms` is the store's notion of now (settling, retention, packing). `timer_s`
        (seconds) schedules the rounds that `write` runs by itself every `rollup_interval_ms`
        and `maintenance_interval_secs`: by default `time.monotonic`, or the injected clock
        when one is given, so that a store on a fixed clock does exactly what its caller asks
        whatever the real time a run takes (on a slow machine a light round inside `write`
        packed late points a test had just written). Step budgets stay in real time."""
        self.path = Path(db_path)
        self.config = config or StorageConfig()
        self._clock = clock_ms
        if timer_s is None:
            timer_s = time.monotonic if clock_ms is _wall_ms else (lambda: clock_ms() / 1000)
        self._timer = timer_s
        self._pacer = retention.Pacer()  # measured cost per retention step, across rounds
        self._pack_cost: dict[str, float] = {}  # raw packing: seconds per series, floor
        self._materialise_cost: dict[str, float] = {}  # seconds per 1h / 1d bucket
        self._ckpt_cost = CHECKPOINT_COST_GUESS  # seconds, measured as we go
        self._lock = threading.Lock()
        self._cursor_lock = threading.Lock()
        # (metric, node, labels) -> (series count when selected, sorted (key, id) pairs)
        self._selections: dict[tuple[Any, ...], tuple[int, list[q.SeriesRow]]] = {}
        self.health = StoreHealth()
        self.commits = commit_feed()  # listeners told what each write committed (the live hub)
        # Seqs acked `rejected` (policy, limits): never stored, so not `missing` either; kept
        # in the file too (rejected.py), loaded below.
        self.rejected_seqs = SeqIndex()
        key = self._encryption_key()
        self._con: duckdb.DuckDBPyConnection | None = open_database(self.path, key)
        self._archive_key: str | None = None
        if key is not None:  # the archive's Parquet files get a key derived from the same one
            self._archive_key = "legion_archive"
            derived = base64.b64encode(hashlib.sha256(b"legion-archive:" + key.encode()).digest())
            self._con.execute(f"PRAGMA add_parquet_key('legion_archive', '{derived.decode()}')")
        self._writer = StoreWriter(self._con, self._lock, rollups=self.config.rollups_enabled)
        self.head = (self._new_head() if self.config.rollups_enabled
                     and self.config.query_head_mib > 0 else None)
        self._ahead = HeadAhead()  # batches fed to the head before their commit
        try:
            self._writer.load()
            self.rejected_seqs.load(rejected.load_ranges(self._con))
            self._refresh_kept(self._con)
        except BaseException:
            self._con.close()
            raise
        now = self._timer()
        self._next_rollup = now + self.config.rollup_interval_ms / 1000
        self._next_maintenance = now + self.config.maintenance_interval_secs
        self._load = WriterLoad(now)  # idle_checkpoint.py: the WAL folded while ingest is idle
        self.light_gate = LightRoundGate()
        self.rollup_errors = 0

    # ---- writing (the writer thread) -------------------------------------------------------
    def write(self, batches: Sequence[IncomingBatch]) -> WriteResult:
        """Store every batch whose (node, epoch, seq) is new, in one transaction."""
        if self.health.due():
            reopen(self)
        self._open()
        began = self._timer()
        in_head: set[BatchKey] = set()
        try:
            with self.head.gate if self.head is not None else contextlib.nullcontext():
                in_head = self._ahead.take(self.head, (b.key for b in batches))
                result = self._writer.write(batches, in_head)
                self._feed_head()
        except StoreError as exc:
            self.health.note_error(exc)
            if in_head and self.head is not None:  # it holds points that were not stored
                self.head = self._new_head()
            raise
        self._load.note_write(self._timer() - began)
        if self.commits and result.stored:
            self.commits.publish(CommitNotice(frozenset(k[0] for k in result.stored),
                                              tuple(self._writer.last_write_rows())))
        now = self._timer()
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval_secs
            self._guarded(self.maintain)
        elif now >= self._next_rollup:
            self._next_rollup = now + self.config.rollup_interval_ms / 1000
            self._guarded(self._light_round)
        else:
            return result
        if self._load.idle(now):
            self._guarded(lambda: self._paced_checkpoint(self._open(), 0.0, idle=True))
        return result

    def feed_ahead(self, batch: IncomingBatch) -> None:
        """Give the query head a batch now, before its commit, when its series are all stored
        (ingest gathers batches for up to `commit_max_delay_ms` at low rates): stepped queries
        answered from the head see it at once (head_ahead.py). The writer thread only. Never
        fails: on error the head is dropped and reloaded by the next query."""
        head = self.head
        if head is None or head.start is None:  # not loaded: the load will read the commit
            return
        with head.gate:
            try:
                rows = self._writer.resolved(batch) if head.start is not None else None
                if rows is not None:
                    head.apply(*rows)
                    self._ahead.add(head, batch.key)
            except Exception as exc:  # noqa: BLE001 - only the head is off; the batch is safe
                log.error("event=query_head_failed error=%r", exc)
                self.head = self._new_head()

    def unfeed(self, batches: Sequence[IncomingBatch]) -> None:
        """After a write of `batches` failed before it reached the store (a sink refused them):
        a head holding any of them fed ahead is dropped, and reloaded by the next query."""
        if self.head is not None and self._ahead.take(self.head, (b.key for b in batches)):
            self.head = self._new_head()

    def subscribe_commits(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(CommitNotice)` on the writer thread after every write that stored
        something (see commits.py); returns the function that unsubscribes it."""
        return self.commits.subscribe(listener)

    def _light_round(self) -> None:
        """Between maintenance rounds, every `rollup_interval_ms`: the rollup pass, then pack
        steps in what is left of one budget (packing an hour of a large fleet takes many
        steps; one per maintenance round would fall behind), then `batches` fold steps."""
        budget = self.config.maintenance_budget_ms / 1000
        deadline = time.monotonic() + budget
        minutes = self.roll_up(budget)
        settled = self._settled_ms()
        if self.light_gate.may_skip(minutes, settled):  # nothing settled: light_gate.py
            return
        con = self._open()
        hours = self._materialise(con, deadline, may_overrun=False)
        packed = self._pack(con, deadline, may_overrun=minutes == 0 and not hours)
        folded = retention.fold_batches(con, self._clock(), self._pacer, deadline)
        self.light_gate.done(bool(minutes or hours or packed or folded), settled)

    def roll_up(self, budget_s: float | None = None, include_open: bool = False) -> int:
        """Recompute rollups of settled minutes written since the last pass (all of them with
        include_open); returns minutes done. Queries are exact either way."""
        con = self._open()
        if not self.config.rollups_enabled:
            return 0
        budget = self.config.maintenance_budget_ms / 1000 if budget_s is None else budget_s
        try:
            return rollup.run_pass(con, self._writer.dirty, budget, include_open=include_open,
                                   now_ms=self._clock())
        except duckdb.Error as exc:
            raise StoreError(f"rollup pass failed: {exc}") from exc

    def maintain(self, budget_s: float | None = None) -> dict[str, Any]:
        """One bounded maintenance round: a checkpoint of what earlier rounds wrote, rollups,
        materialising settled hours and days into 1h and 1d, archive and retention per tier,
        disk cap, packing raw into chunks.

        The whole round shares one deadline (`maintenance_budget_ms` unless budget_s): each step
        is sized from the measured cost of earlier ones to what is left, or not started. Only a
        round that has done nothing else makes one smallest step regardless, so no part starves.
        """
        con = self._open()
        self.light_gate.rearm()
        budget = self.config.maintenance_budget_ms / 1000 if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        took: dict[str, float] = {}
        mark = time.monotonic()

        def lap(part: str) -> None:
            nonlocal mark
            now = time.monotonic()
            took[part] = round((now - mark) * 1000, 1)
            mark = now

        # First fold what earlier rounds (and commits) left in the WAL while it is small: a
        # checkpoint cannot be split, and DuckDB's own at 16 MiB pauses far longer than a step.
        checkpointed = self._paced_checkpoint(con, deadline)
        lap("checkpoint")
        minutes = self.roll_up(max(0.0, deadline - time.monotonic()))
        lap("rollup")
        # Before retention, which never deletes 1m (1h) rows not yet materialised into 1h (1d).
        hours = self._materialise(con, deadline, may_overrun=minutes == 0 and not checkpointed)
        lap("materialise")
        report = retention.run(con, self.config, self.path, self._clock(), budget,
                               archive_dir=self._archive_dir(), archive_key=self._archive_key,
                               pacer=self._pacer, deadline=deadline,
                               may_overrun=minutes == 0 and not checkpointed and not hours)
        lap("retention")
        # Last: packing only saves space, so expiry and the cap go first. It gets what is left
        # of the budget, and more steps between rounds (`_light_round`).
        report["packed_points"] = self._pack(con, deadline, may_overrun=(
            minutes == 0 and not report["steps"] and not hours and not checkpointed))
        lap("packing")
        report["ms"] = took
        report["checkpointed"] = checkpointed
        self._writer.raw_kept_since_ms = rollup.kept_since(con, "raw")
        self._refresh_kept(con)
        report["rolled_up_minutes"] = minutes
        report["materialised"] = hours
        return report

    def pack_raw(self, budget_s: float | None = None, until_ms: int | None = None) -> int:
        """Pack settled raw points into compressed chunks (all before `until_ms` if given, else
        windows that have settled by the clock or the newest data); returns points packed.
        `maintain` does this in each round; this runs it alone, e.g. before measuring."""
        con = self._open()
        budget = self.config.maintenance_budget_ms / 1000 if budget_s is None else budget_s
        return self._pack(con, time.monotonic() + budget, may_overrun=True, until_ms=until_ms)

    def _pack(self, con: duckdb.DuckDBPyConnection, deadline: float, may_overrun: bool,
              until_ms: int | None = None) -> int:
        if not self.config.compress_raw:
            return 0
        settled = until_ms if until_ms is not None else self._settled_ms()
        dirty = self._writer.dirty if self.config.rollups_enabled else set()
        try:
            n = packing.pack(con, dirty, settled, deadline, self._pack_cost, may_overrun,
                             whole_windows=until_ms is None)
            self._writer.late_ms = packing.late_horizon(con)
        except duckdb.Error as exc:
            raise StoreError(f"packing raw points failed: {exc}") from exc
        return n

    def _settled_ms(self) -> int:
        """Data before this is settled: the clock or the newest data, minus the settle time."""
        return max(self._clock(), self._writer.newest_ms()) - packing.SETTLE_MS

    def _materialise(self, con: duckdb.DuckDBPyConnection, deadline: float,
                     may_overrun: bool) -> int:
        if not self.config.rollups_enabled:
            return 0
        try:
            return rollup.materialise(con, self._writer.dirty, self._settled_ms(), deadline,
                                      may_overrun, self._materialise_cost)
        except duckdb.Error as exc:
            raise StoreError(f"materialising the 1h/1d tiers failed: {exc}") from exc

    def _paced_checkpoint(self, con: duckdb.DuckDBPyConnection, deadline: float,
                          idle: bool = False) -> bool:
        """Checkpoint now if the WAL holds at least CHECKPOINT_MIN_WAL and the last measured
        checkpoint time fits before `deadline` (or the WAL passed CHECKPOINT_FORCE_WAL); with
        `idle` (the writer has no backlog), whenever it holds CHECKPOINT_IDLE_WAL.

        DuckDB checkpoints by itself once the WAL passes `wal_autocheckpoint` (16 MiB), inside
        whichever COMMIT crosses it (an ingest commit as likely as a maintenance step): measured
        here 150-800 ms. A checkpoint cannot be split; doing it at a round's start while the WAL
        is a few MB keeps it shorter and out of the steps that follow."""
        wal = Path(str(self.path) + ".wal")
        try:
            size = wal.stat().st_size
        except OSError:
            return False
        if size < (CHECKPOINT_IDLE_WAL if idle else CHECKPOINT_MIN_WAL):
            return False
        if (not idle and self._ckpt_cost > 0.6 * (deadline - time.monotonic())
                and size < CHECKPOINT_FORCE_WAL):
            return False
        t = time.monotonic()
        try:
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            if is_checkpoint_busy(exc):  # a query's transaction: the next round tries again
                return False
            raise StoreError(f"checkpoint failed: {exc}") from exc
        took = time.monotonic() - t
        self._ckpt_cost = took if took > self._ckpt_cost else 0.7 * self._ckpt_cost + 0.3 * took
        return True

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (what the `checkpointed` ack level promises)."""
        con = self._open()
        try:
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            self.health.note_error(exc)
            raise StoreError(f"checkpoint failed: {exc}") from exc

    def close(self) -> None:
        """Checkpoint and close (idempotent)."""
        con, self._con = self._con, None
        if con is None:
            return
        try:
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.warning("event=checkpoint_on_close_failed error=%s", exc)
        finally:
            con.close()

    # ---- rejected seqs, cursors (the query methods: query_methods.py) ----------------------
    def note_rejected(self, node: str, epoch: int, seqs: Iterable[int]) -> None:
        """Record seqs about to be acked `rejected`, in the file first: reported apart from
        `missing` by `nodes()`, across restarts. StoreError when not written (do not ack)."""
        new = sorted(s for s in {int(s) for s in seqs}
                     if not self.rejected_seqs.contains(node, int(epoch), s))
        if not new:
            return
        try:
            rejected.record(self._open(), node, int(epoch), new, self._clock())
        except StoreError as exc:
            self.health.note_error(exc)
            raise
        with self._lock:
            for s in new:
                self.rejected_seqs.add(node, int(epoch), s)

    def cursor(self) -> _Cursor:
        """A cursor of the one connection for a component's own tables (the alert journal);
        duckdb errors become StoreError."""
        return self._cursor()

    # ---- helpers ---------------------------------------------------------------------------
    def _feed_head(self) -> None:
        """Add the write just committed to the query head (under its gate); a head that
        fails is dropped and reloaded by the next query, never fails the write."""
        if self.head is None or self._writer.head_rows is None:
            return
        try:
            self.head.apply(*self._writer.head_rows)
        except Exception as exc:  # noqa: BLE001 - the points are stored; only the head is off
            log.error("event=query_head_failed error=%r", exc)
            self.head = self._new_head()

    def _new_head(self) -> QueryHead:
        return QueryHead(self.config.query_head_mib << 20, self.config.query_head_hours)

    def _refresh_kept(self, con: duckdb.DuckDBPyConnection) -> None:
        kept = {"raw": 0, **{t: 0 for t in TIERS}}
        try:
            kept.update({t: int(v) for t, v in con.execute(
                "SELECT tier, max(kept_since_ms) FROM tier_state GROUP BY tier").fetchall()})
        except duckdb.Error as exc:
            raise StoreError(f"cannot read retention state: {exc}") from exc
        with self._lock:
            self._kept_cache = kept

    def _encryption_key(self) -> str | None:
        cfg = self.config
        if not cfg.encryption_enabled:
            return None
        key = os.environ.get(cfg.encryption_key_env, "").strip()
        if not key:
            path = self._resolve(cfg.encryption_key_path)
            try:
                key = path.read_text().strip()
            except OSError as exc:
                raise StoreError(f"storage.encryption_key_path: cannot read {path} and "
                                 f"${cfg.encryption_key_env} is not set ({exc})") from exc
        if len(key) < 16:
            raise StoreError("storage encryption key: use at least 16 characters "
                             "(e.g. `openssl rand -base64 32`)")
        return key

    def _resolve(self, p: str) -> Path:
        return Path(p).expanduser()  # resolved by the config's one rule before it is handed over

    def _archive_dir(self) -> Path | None:
        if not self.config.archive_enabled:
            return None
        return self._resolve(self.config.archive_dir)

    def _guarded(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except StoreError as exc:  # the commit before it stands; the next round retries
            self.rollup_errors += 1
            self.health.note_error(exc)
            log.error("event=maintenance_failed error=%s", exc)

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"store {self.path} is closed")
        return self._con

    def _cursor(self) -> _Cursor:
        with self._cursor_lock:
            cur = self._open().cursor()
        try:
            cur.execute(f"USE {DB_ALIAS}")
        except duckdb.Error as exc:  # e.g. an invalidated database: a StoreError, noted
            cur.close()
            self.health.note_error(exc)
            raise StoreError(f"query failed: {exc}") from exc
        return _Cursor(cur)


class _Cursor:
    """A per-query cursor, closed on exit; duckdb errors become StoreError."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self.cur = cur

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.cur

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.cur.close()
        if isinstance(exc, duckdb.Error):
            raise StoreError(f"query failed: {exc}") from exc
