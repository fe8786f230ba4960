"""The store's health: notice a database DuckDB has invalidated, reopen it, report free disk.

DuckDB invalidates an attached database when a checkpoint fails half-way (a full disk, for one):
every later statement then fails with "has been invalidated ... Detach and reattach it", for
good, while the process lives on. `StoreHealth` remembers that state; `reopen` closes the
connection and opens the file again (the WAL replays what was committed), retried at most
every `REOPEN_RETRY_SECS` from the writer thread until it succeeds, e.g. once space is back.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from legion.kernel.errors import StoreError

if TYPE_CHECKING:
    from legion.aggregator.store.store import Store

log = logging.getLogger("legion.aggregator.store")

REOPEN_RETRY_SECS = 1.0
"""At most one reopen attempt per this many seconds while the database is invalidated."""


def _chain_says(exc: BaseException, text: str) -> bool:
    """Whether `exc` or an error it was raised from (a few links deep) contains `text`."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if text in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_invalidated(exc: BaseException) -> bool:
    """Whether a (chained) error says DuckDB invalidated the database."""
    return _chain_says(exc, "has been invalidated")


def is_checkpoint_busy(exc: BaseException) -> bool:
    """Whether a checkpoint failed only because another transaction was active (retry it)."""
    return _chain_says(exc, "other write transactions active")


class StoreHealth:
    """State of the store: `ok` or `invalidated` (with why and since when), reopen counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = "ok"
        self.error = ""
        self.since_ms = 0
        self.reopens = 0
        self.reopen_failures = 0
        self._next_try = 0.0

    def note_error(self, exc: BaseException) -> None:
        """Record a failed statement; an invalidating one switches the state (logged once)."""
        if not is_invalidated(exc) or self.state == "invalidated":
            return
        with self._lock:
            self.state, self.error = "invalidated", _first_line(exc)
            self.since_ms = int(time.time() * 1000)
            self._next_try = 0.0
        log.error("event=store_invalidated action=reopen_when_possible error=%s", self.error)

    def due(self) -> bool:
        """Whether the writer should try to reopen now."""
        return self.state == "invalidated" and time.monotonic() >= self._next_try

    def reopened(self) -> None:
        """Record a successful reopen."""
        with self._lock:
            down = (time.time() * 1000 - self.since_ms) / 1000
            self.state, self.error, self.reopens = "ok", "", self.reopens + 1
        log.warning("event=store_reopened after_seconds=%.1f", down)

    def reopen_failed(self, exc: BaseException) -> None:
        """Record a failed reopen; the next try waits REOPEN_RETRY_SECS."""
        with self._lock:
            self.reopen_failures += 1
            self._next_try = time.monotonic() + REOPEN_RETRY_SECS
        log.debug("event=store_reopen_failed error=%s", _first_line(exc))

    def report(self, path: Path) -> dict[str, Any]:
        """For `status`: state, error, since, reopens, and the free space beside the file."""
        try:
            usage = shutil.disk_usage(path.parent)
            disk: dict[str, int | None] = {"disk_free_bytes": usage.free,
                                           "disk_total_bytes": usage.total}
        except OSError:
            disk = {"disk_free_bytes": None, "disk_total_bytes": None}
        with self._lock:
            return {"state": self.state, "error": self.error, "since_ms": self.since_ms,
                    "reopens": self.reopens, "reopen_failures": self.reopen_failures, **disk}


def reopen(store: Store) -> None:
    """Close the store's connection and open the file again; raise StoreError on failure."""
    from legion.aggregator.store.schema import open_database
    from legion.aggregator.store.writer import StoreWriter

    with store._cursor_lock:  # noqa: SLF001 - same package; readers wait for the new connection
        old, store._con = store._con, None  # noqa: SLF001
        if old is not None:
            try:
                old.close()
            except Exception as exc:  # noqa: BLE001 - an invalidated connection may refuse
                log.debug("event=store_close_failed error=%s", exc)
        key = store._encryption_key()  # noqa: SLF001
        try:
            con = open_database(store.path, key)
        except StoreError as exc:
            store.health.reopen_failed(exc)
            raise
        if key is not None:  # as Store.__init__: the archive's key, derived from the same one
            derived = base64.b64encode(hashlib.sha256(b"legion-archive:" + key.encode()).digest())
            con.execute(f"PRAGMA add_parquet_key('legion_archive', '{derived.decode()}')")
        writer = StoreWriter(con, store._lock, rollups=store.config.rollups_enabled)  # noqa: SLF001
        try:
            writer.load()
            store._refresh_kept(con)  # noqa: SLF001
        except BaseException as exc:
            con.close()
            store.health.reopen_failed(exc)
            raise
        with store._lock:  # noqa: SLF001
            store._con, store._writer = con, writer  # noqa: SLF001
    store.health.reopened()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
