"""The query head fed before the commit (store/head_ahead.py): while ingest gathers low-rate
batches for `commit_max_delay_ms`, a batch whose series are stored goes into the head at once,
is not fed again at its commit, and a failed commit drops the head (reloaded from the file).
Real DuckDB files and the real query head."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from legion.aggregator.store import IncomingBatch, Store
from legion.kernel.errors import StoreError
from tests.aggregator.test_query_head import MIN, batches
from tests.aggregator.test_query_now import loaded_store

Q = {"metric": "cpu_percent", "agg": "count", "step_ms": MIN, "group_by": "*"}


def counts(store: Store, lo: int, hi: int) -> tuple[Any, Any]:
    """Points per minute of `cpu_percent` from the head, and from DuckDB alone."""
    q = {**Q, "since_ms": lo, "until_ms": hi}
    head = store.query_now(**q)
    keep, store.head = store.head, None
    try:
        duck = store.query(**q)
    finally:
        store.head = keep
    return ([(r["ts_ms"], r["value"]) for r in head] if head is not None else None,
            [(r["ts_ms"], r["value"]) for r in duck])


def next_batches(end: int) -> list[IncomingBatch]:
    """Two more ticks of the same series (seqs after `loaded_store`'s)."""
    return batches(np.random.default_rng(9), end, end + 20_000, 10_000, 1_000)


def feed_next_ahead(store: Store, end: int) -> list[IncomingBatch]:
    """Load the head, then feed it `next_batches` ahead of their commit; returns them."""
    store.query(**Q, since_ms=end - 5 * MIN, until_ms=end + MIN)  # loads the head
    more = next_batches(end)
    for b in more:
        store.feed_ahead(b)
    return more


def assert_dropped_then_stored_once(store: Store, end: int, more: list[IncomingBatch]) -> None:
    """The head reloaded after `more` went back out holds none of them; written, once each."""
    store.query(**Q, since_ms=end - 5 * MIN, until_ms=end + MIN)  # reloads the head
    head, duck = counts(store, end - 2 * MIN, end + MIN)
    assert head is not None and head == duck and end not in dict(head)
    store.write(more)  # the agents resend: stored once, counted once
    head, duck = counts(store, end - 2 * MIN, end + MIN)
    assert head == duck and dict(head)[end] == 18


def test_fed_ahead_is_queryable_before_its_commit_and_counted_once(tmp_path: Path) -> None:
    store, end = loaded_store(tmp_path / "a.duckdb")
    try:
        more = feed_next_ahead(store, end)
        head, duck = counts(store, end - 2 * MIN, end + MIN)
        assert head is not None and duck != head  # the head has them, DuckDB not yet
        assert dict(head)[end] == 2 * 3 * 3  # 2 ticks x 3 nodes x 3 cpus
        store.write(more)
        head, duck = counts(store, end - 2 * MIN, end + MIN)
        assert head == duck  # once each, not twice
    finally:
        store.close()


def test_a_batch_with_a_new_series_waits_for_its_commit(tmp_path: Path) -> None:
    store, end = loaded_store(tmp_path / "b.duckdb")
    try:
        store.query(**Q, since_ms=end - 5 * MIN, until_ms=end + MIN)
        fresh = batches(np.random.default_rng(3), end, end + 10_000, 10_000, 1, nodes=("new",))
        store.feed_ahead(fresh[0])
        assert counts(store, end - MIN, end + MIN)[0] == counts(store, end - MIN, end + MIN)[1]
        store.write(fresh)
        head, duck = counts(store, end - MIN, end + MIN)
        assert head == duck and dict(head)[end] == 3
    finally:
        store.close()


class FailingCommit:
    """The real connection, whose next COMMIT is rolled back and reported as failed: stands in
    for a disk that fails at that moment (test_store_full_disk.py runs a real one, slowly)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.armed = True

    def execute(self, sql: str, *args: object) -> Any:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            self.con.execute("ROLLBACK")
            raise duckdb.IOException("injected: could not write the WAL")
        # the writer's INSERTs read its numpy columns by name from the calling frame
        caller = sys._getframe(1)
        names = {**caller.f_locals, "_con_": self.con, "_sql_": sql, "_args_": args}
        return eval("_con_.execute(_sql_, *_args_)", caller.f_globals, names)  # noqa: S307

    def __getattr__(self, name: str) -> object:
        return getattr(self.con, name)


def test_a_failed_commit_drops_what_went_ahead(tmp_path: Path) -> None:
    store, end = loaded_store(tmp_path / "c.duckdb")
    try:
        more = feed_next_ahead(store, end)
        real = store._writer._con  # noqa: SLF001 - the write connection, wrapped once
        store._writer._con = FailingCommit(real)  # type: ignore[assignment]  # noqa: SLF001
        with pytest.raises(StoreError, match="injected"):
            store.write(more)
        store._writer._con = real  # noqa: SLF001
        assert_dropped_then_stored_once(store, end, more)
    finally:
        store.close()


def test_a_write_refused_before_the_store_drops_what_went_ahead(tmp_path: Path) -> None:
    # a sink that refuses a group fails the write before the store sees it (sinks/table.py)
    store, end = loaded_store(tmp_path / "d.duckdb")
    try:
        more = feed_next_ahead(store, end)
        store.unfeed(more)
        assert_dropped_then_stored_once(store, end, more)
    finally:
        store.close()
