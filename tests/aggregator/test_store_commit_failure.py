"""A failed COMMIT is reported as what happened, not as the ROLLBACK that follows it."""

from __future__ import annotations

import sys
import threading

import duckdb
import pytest

from legion.aggregator.store.schema import DB_ALIAS, open_database
from legion.aggregator.store.writer import StoreWriter
from legion.kernel.errors import StoreError
from tests.aggregator.test_store import batch


class ConflictBeforeCommit:
    """The real write connection; just before the writer's COMMIT, a second real transaction on
    the same database commits a `series` row with the id the writer is inserting, so DuckDB
    fails the writer's COMMIT with a genuine constraint conflict. (The proxy only times the
    interleaving; the conflict and the error are DuckDB's own.)"""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.armed = True

    def execute(self, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            other = self.con.cursor()
            other.execute(f"USE {DB_ALIAS}")
            other.execute("INSERT INTO series VALUES (1, 'other', 'm', '[]', MAP {}, 0)")
            other.close()
        # The writer's INSERTs read its local Arrow tables (`_w_*`) by name from the frame that
        # calls `execute` (DuckDB's replacement scans): run the call with the writer's locals.
        caller = sys._getframe(1)
        names = {**caller.f_locals, "_con_": self.con, "_sql_": sql, "_args_": args}
        return eval("_con_.execute(_sql_, *_args_)", caller.f_globals, names)  # noqa: S307

    def __getattr__(self, name: str) -> object:
        return getattr(self.con, name)


def test_failed_commit_reports_the_real_error(tmp_path):
    con = open_database(tmp_path / "legion.duckdb")
    try:
        writer = StoreWriter(ConflictBeforeCommit(con), threading.Lock())  # type: ignore[arg-type]
        writer.load()
        with pytest.raises(StoreError) as err:
            writer.write([batch("web-1", 1)])
        msg = str(err.value)
        assert "Failed to commit" in msg and "duplicate key" in msg, msg
        assert "no transaction is active" not in msg
        # nothing of the failed write is stored or remembered; the connection is usable
        assert con.execute("SELECT count(*) FROM points").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM batches").fetchone() == (0,)
        assert not writer.seqs.contains("web-1", 1, 1) and writer.series == {}
        # a statement failing before COMMIT is also reported as itself (the ROLLBACK succeeds)
        with pytest.raises(StoreError) as err2:
            writer.write([batch("web-1", 1)])
        assert "violates primary key" in str(err2.value)
        assert "no transaction is active" not in str(err2.value)
        con.execute("BEGIN TRANSACTION")  # no transaction was left open
        con.execute("ROLLBACK")
    finally:
        con.close()
