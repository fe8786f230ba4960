"""`Store`'s maintenance on the writer thread: the light round (rollups, then packing and the
`batches` fold while something settled), the bounded maintenance round (checkpoint, rollups,
materialising 1h/1d, retention, disk cap, packing) and the checkpoints.

`MaintenanceRounds` is a base class of `Store` (store.py keeps writes, the head and cursors); it
works on the state `Store.__init__` makes, declared below. `write` runs the rounds by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import packing, retention, rollup
from legion.aggregator.store.health import StoreHealth, is_checkpoint_busy
from legion.aggregator.store.idle_checkpoint import CHECKPOINT_IDLE_WAL
from legion.aggregator.store.light_gate import LightRoundGate
from legion.aggregator.store.writer import StoreWriter
from legion.kernel.errors import StoreError

CHECKPOINT_MIN_WAL = 1 << 20
"""Below this WAL size a maintenance round does not bother to checkpoint."""
CHECKPOINT_FORCE_WAL = 8 << 20
"""From this WAL size a round checkpoints even over its budget (half of DuckDB's own trigger)."""
CHECKPOINT_COST_GUESS = 0.03
"""Seconds a checkpoint is assumed to take before the first one is measured."""


class MaintenanceRounds:
    """The rounds and checkpoints of `Store` (the writer thread only)."""

    path: Path
    config: StorageConfig
    health: StoreHealth
    light_gate: LightRoundGate
    _writer: StoreWriter
    _pacer: retention.Pacer
    _pack_cost: dict[str, float]
    _materialise_cost: dict[str, float]
    _ckpt_cost: float
    _archive_key: str | None
    _clock: Callable[[], int]

    def _open(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError  # Store's

    def _refresh_kept(self, con: duckdb.DuckDBPyConnection) -> None:
        raise NotImplementedError  # Store's

    def _archive_dir(self) -> Path | None:
        raise NotImplementedError  # Store's

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
