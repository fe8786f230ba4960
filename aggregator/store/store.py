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
from legion.aggregator.store import query as q
from legion.aggregator.store import rejected, retention
from legion.aggregator.store.commits import CommitNotice, Listener, commit_feed
from legion.aggregator.store.head import QueryHead
from legion.aggregator.store.head_ahead import HeadAhead
from legion.aggregator.store.health import StoreHealth, reopen
from legion.aggregator.store.idle_checkpoint import WriterLoad
from legion.aggregator.store.light_gate import LightRoundGate
from legion.aggregator.store.query_methods import QueryMethods
from legion.aggregator.store.rounds import CHECKPOINT_COST_GUESS, MaintenanceRounds
from legion.aggregator.store.schema import DB_ALIAS, TIERS, open_database
from legion.aggregator.store.seqindex import SeqIndex
from legion.aggregator.store.types import BatchKey, IncomingBatch, WriteResult
from legion.aggregator.store.writer import StoreWriter
from legion.kernel.errors import StoreError

log = logging.getLogger("legion.aggregator.store")


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Store(MaintenanceRounds, QueryMethods):
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
