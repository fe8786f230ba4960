"""Lose nothing: real processes killed with SIGKILL, real sockets, a real DuckDB file.

Every test ends by reading the database file directly (the aggregator is stopped by then) and
checking that each agent's batches 1..last are stored exactly once, with their points.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from legion.aggregator.store.packing import count_raw
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.spool.spool import Spool
from legion.node_agent.state import SeqAllocator
from tests.conftest import LEGIONCTL, make_setup, wait_for

pytestmark = pytest.mark.timeout(240)

# Resends after 1 s (0.8 s with jitter) leave no room for gathering commits (which must stay
# below the earliest resend): these tests compare stores exactly, so each batch commits at once.
FAST = {"collection_interval": 0.25,
        "agent": {"resend_timeout_secs": 1.0, "collectors": ["cpu", "memory", "load"]},
        "aggregator": {"commit_max_delay_ms": 0}}


def setup(tmp_path: Path, nodes: list[str], **over: object) -> Path:
    merged = {**FAST, **over}
    for section in ("agent", "aggregator"):
        merged[section] = {**FAST[section], **over.get(section, {})}  # type: ignore[dict-item]
    cfg_path = make_setup(tmp_path / "legion", **merged)
    cfg = load_config(cfg_path)
    for n in nodes:
        add_agent_key(cfg, n)
    return cfg_path


def nodes_now(cfg_path: Path) -> dict[str, dict]:
    out = subprocess.run(LEGIONCTL + ["nodes", "--config", str(cfg_path), "--format", "json"],
                         capture_output=True, text=True, timeout=30)
    return {n["node"]: n for n in json.loads(out.stdout)} if out.returncode == 0 else {}


def last_allocated(cfg_path: Path, node: str) -> tuple[int, int]:
    """(epoch, last seq handed out) of a stopped agent, from its persisted state."""
    cfg = load_config(cfg_path)
    st = SeqAllocator.open(cfg.path(cfg.agent.state_dir) / node)
    try:
        return st.epoch, st.peek_next_seq() - 1
    finally:
        st.close()


def drained(cfg_path: Path, want: dict[str, tuple[int, int]]) -> bool:
    """Every node's stored last_seq is past `want` in the same epoch, and nothing is missing."""
    seen = nodes_now(cfg_path)
    for node, (epoch, last) in want.items():
        n = seen.get(node)
        if not n or n["epoch"] != epoch or n["last_seq"] <= last or n["missing"] != 0:
            return False
    return True


def assert_exactly_once(cfg_path: Path, want: dict[str, tuple[int, int]]) -> None:
    """Read the DuckDB file: seqs 1..last all present once; points equal the batches' sums."""
    cfg = load_config(cfg_path)
    con = duckdb.connect(str(cfg.path(cfg.storage.db_path)), read_only=True)
    try:
        for node, (epoch, last) in want.items():
            seqs = [r[0] for r in con.execute(
                "SELECT seq FROM batches WHERE node = ? AND epoch = ? ORDER BY seq",
                [node, epoch]).fetchall()]
            assert len(seqs) == len(set(seqs)), f"{node}: duplicate batches"
            expected = set(range(1, last + 1))
            assert expected <= set(seqs), f"{node}: lost {sorted(expected - set(seqs))[:10]}"
            batch_points = con.execute("SELECT sum(points) FROM batches WHERE node = ?",
                                       [node]).fetchone()[0]
            ids = [r[0] for r in con.execute("SELECT id FROM series WHERE node = ?",
                                             [node]).fetchall()]
            stored_points = count_raw(con, ids)  # rows and packed chunks alike
            assert batch_points == stored_points, f"{node}: points stored twice or lost"
    finally:
        con.close()


def test_aggregator_killed_three_times_during_ingest(tmp_path: Path, procs) -> None:
    nodes = ["n1", "n2", "n3"]
    cfg = setup(tmp_path, nodes)
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    agents = [procs("agent", "run", "--config", str(cfg), "--node", n, name=n) for n in nodes]
    wait_for(lambda: set(nodes) <= set(nodes_now(cfg)), timeout=30, interval=0.5)
    rng = random.Random(7)
    for _ in range(3):
        time.sleep(rng.uniform(1.0, 3.0))
        agg.kill9()
        time.sleep(rng.uniform(0.2, 1.5))
        agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    time.sleep(1)
    for a in agents:
        assert a.stop() == 0
    want = {n: last_allocated(cfg, n) for n in nodes}
    assert all(last > 10 for _, last in want.values())
    # restart the agents: they resend what is still unacknowledged from their spools
    for n in nodes:
        procs("agent", "run", "--config", str(cfg), "--node", n, name=f"{n}-again")
    wait_for(lambda: drained(cfg, want), timeout=90, interval=1)
    agg.stop()
    assert_exactly_once(cfg, want)


def test_aggregator_down_then_back_drains_backlog(tmp_path: Path, procs) -> None:
    cfg = setup(tmp_path, ["n1"])
    agent = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1")
    time.sleep(6)  # ~24 batches with nobody listening
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    time.sleep(2)
    assert agent.stop() == 0
    want = {"n1": last_allocated(cfg, "n1")}
    procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1-again")
    wait_for(lambda: drained(cfg, want), timeout=60, interval=1)
    agg.stop()
    assert_exactly_once(cfg, want)


def test_agent_killed_mid_backlog(tmp_path: Path, procs) -> None:
    cfg = setup(tmp_path, ["n1"])
    agent = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1")
    time.sleep(6)
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    time.sleep(1.5)  # the backlog is draining
    agent.kill9()
    want = {"n1": last_allocated(cfg, "n1")}
    procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1-again")
    wait_for(lambda: drained(cfg, want), timeout=60, interval=1)
    agg.stop()
    assert_exactly_once(cfg, want)


def test_spool_overflow_reports_exactly_the_dropped(tmp_path: Path, procs) -> None:
    cfg = setup(tmp_path, ["n1"], agent={"spool_max_bytes": 64 * 1024,
                                         "collectors": ["cpu", "memory", "load", "network"]})
    agent = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1")
    # nobody listening: wait until the 64 KiB spool overflows (about 15 batches at 0.25 s)
    wait_for(lambda: "event=spool_overflow" in agent.output(), timeout=60, interval=0.2)
    assert agent.stop() == 0
    epoch, last = last_allocated(cfg, "n1")
    loaded = load_config(cfg)
    spool = Spool(loaded.path(loaded.agent.state_dir) / "n1" / "spool", 64 * 1024, epoch=epoch)
    dropped = spool.stats()["batches_dropped_total"]
    spool.close()
    assert dropped > 0, "the spool should have overflowed"

    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    wait_for(lambda: "aggregator" in nodes_now(cfg), timeout=30, interval=0.5)
    procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1-again")

    def settled() -> dict | None:
        n = nodes_now(cfg).get("n1")
        # the restarted agent may evict one more before its resend is acked: still counted
        return n if n and n["last_seq"] > last + 5 and n["missing"] >= dropped and \
            n["missing"] == n["dropped"] else None

    try:
        n = wait_for(settled, timeout=60, interval=1)
    except AssertionError:
        raise AssertionError(f"dropped={dropped} last={last} nodes={nodes_now(cfg)}") from None
    agg.stop()
    con = duckdb.connect(str(loaded.path(loaded.storage.db_path)), read_only=True)
    stored = {r[0] for r in con.execute(
        "SELECT seq FROM batches WHERE node='n1' AND epoch=?", [epoch]).fetchall()}
    con.close()
    lost = [s for s in range(1, last + 1) if s not in stored]
    assert len(lost) == n["dropped"] == n["missing"], "exactly the dropped batches are missing"
    assert lost == list(range(1, len(lost) + 1)), "the oldest batches go first"
