"""A full disk invalidates the DuckDB database; the store reopens it by itself once space is back.

Real: a 5 MB tmpfs mounted by the test (root only: skipped with the reason otherwise), a real
DuckDB file on it, a filler file that leaves 48 KiB free, a checkpoint that fails half-way.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator.commit_groups import ranges_of
from legion.aggregator.service import Aggregator
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store import health as store_health
from legion.cli.config import config_from_dict
from legion.kernel.errors import StoreError
from legion.proto import MetricsBatch
from tests.conftest import wait_for


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 5 MB tmpfs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def batch(seq: int) -> IncomingBatch:
    """2,000 points of 50 series, values that do not compress much."""
    now = int(time.time() * 1000)
    rng = np.random.default_rng(seq)
    mb = MetricsBatch(("disk_test_value",), tuple(((("k", str(k)),)) for k in range(50)),
                      np.zeros(2000, np.uint32), np.arange(2000, dtype=np.uint32) % 50,
                      rng.uniform(0, 1e6, 2000), now - 2000 + np.arange(2000, dtype=np.int64))
    return IncomingBatch("full-1", 1, seq, mb, now)


def fill(mnt: Path, leave: int) -> Path:
    """Fill the file system up to `leave` bytes free."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_invalidated_database_is_reopened_and_reported(tmpfs: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_health, "REOPEN_RETRY_SECS", 0.2)
    store = Store(tmpfs / "legion.duckdb")
    try:
        store.write([batch(1)])
        store.checkpoint()
        for seq in range(2, 30):  # ~1.5 MB in the WAL, not yet in the file
            store.write([batch(seq)])
        stored = set(range(1, 30))
        filler = fill(tmpfs, 48 * 1024)
        with pytest.raises(StoreError, match="invalidated"):
            store.checkpoint()  # fails half-way: DuckDB invalidates the database
        report = store.health.report(store.path)
        assert report["state"] == "invalidated"
        assert report["disk_free_bytes"] < 1024 * 1024

        # The aggregator's status says so instead of failing (it was HTTP 500).
        agg = Aggregator(config_from_dict({}, tmpfs).aggregator_settings())
        agg.store = store
        status = agg.status()
        assert status["store"]["state"] == "invalidated"
        assert "invalidated" in status["store"]["error"]

        # While the disk is full, writes fail (nothing acked, agents keep their spools)...
        seq = 30
        for _ in range(5):
            with pytest.raises(StoreError):
                store.write([batch(seq)])
            time.sleep(0.05)
        filler.unlink()

        # ...and once space is back, they succeed again without a restart.
        def resumed() -> bool:
            nonlocal seq
            try:
                store.write([batch(seq)])
            except StoreError:
                time.sleep(0.1)
                return False
            stored.add(seq)
            return True

        wait_for(resumed, 30)
        for s in range(seq + 1, seq + 4):
            store.write([batch(s)])
            stored.add(s)
        store.checkpoint()
        report = store.health.report(store.path)
        assert report["state"] == "ok" and report["reopens"] >= 1
        assert tuple(store.stored_ranges("full-1", 1)) == ranges_of(stored)
        assert len(store.query("disk_test_value", node="full-1")) == 2000 * len(stored)
    finally:
        store.close()


def test_the_running_aggregator_resumes_by_itself(tmp_path: Path, tmpfs: Path,
                                                  monkeypatch) -> None:
    """End to end: an agent keeps sending while the disk fills and frees; without a restart the
    aggregator stores every batch again once space is back (acked `committed`)."""
    from legion.aggregator import ingest
    from legion.cli.config import load_config
    from legion.cli.setup_cmds import add_agent_key
    from tests.aggregator.curve_peer import aggregator_with_peers
    from tests.conftest import make_setup

    monkeypatch.setattr(store_health, "REOPEN_RETRY_SECS", 0.2)
    monkeypatch.setattr(ingest, "CHECKPOINT_SECS", 0.5)
    cfg = load_config(make_setup(tmp_path / "legion",
                                 storage={"db_path": str(tmpfs / "legion.duckdb")}))
    add_agent_key(cfg, "full-1")
    with aggregator_with_peers(cfg, "full-1") as (agg, [peer]):
        filler = fill(tmpfs, 400 * 1024)  # room for a few commits, then none
        seq, saw_trouble = 1, False
        deadline = time.monotonic() + 60
        while not saw_trouble and time.monotonic() < deadline:
            seq += 1
            peer.send(seq, batch(seq).batch)
            peer.pump(100)
            st = agg.status()
            saw_trouble = st["ingest"]["commit_errors"] > 0 or st["store"]["state"] != "ok"
        assert saw_trouble, "the full disk was never noticed"
        for _ in range(10):  # the agent keeps trying while the disk is full
            seq += 1
            peer.send(seq, batch(seq).batch)
            peer.pump(100)
        filler.unlink()

        def all_committed() -> bool:
            missing = [s for s in range(2, seq + 1) if s not in peer.acks["committed"]]
            for s in missing[:20]:  # resend what is not acked, as the agent's spool does
                peer.send(s, batch(s).batch)
            peer.pump(300)
            return not missing
        wait_for(all_committed, 120, interval=0.5)
        st = agg.status()
        print(f"commit errors {st['ingest']['commit_errors']}, reopens {st['store']['reopens']}")
        assert st["store"]["state"] == "ok" and st["store"]["disk_free_bytes"] > 1024 * 1024
        assert agg.store.stored_ranges("full-1", 1) == [(1, seq)]
