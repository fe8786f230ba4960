"""Seqs acked `rejected` survive an aggregator kill -9: `missing` stays exact after a restart.

A real `legionctl aggregator run` process, real Curve sockets on loopback, a real DuckDB file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import zmq

from legion.cli.setup_cmds import add_agent_key
from legion.cli.config import load_config
from tests.aggregator.curve_peer import CurvePeer, series_batch
from tests.conftest import LEGIONCTL, make_setup, wait_for

pytestmark = pytest.mark.timeout(180)


def node_row(cfg_path: Path, node: str) -> dict[str, int] | None:
    out = subprocess.run(LEGIONCTL + ["nodes", "--config", str(cfg_path), "--format", "json"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return None
    return next((n for n in json.loads(out.stdout) if n["node"] == node), None)


def test_rejected_seqs_are_not_missing_after_kill9(tmp_path: Path, procs) -> None:
    # Production commit gathering (what `legionctl init` writes, 3 s): the suite's kill -9 test
    # on the default commit timing (make_setup commits at once elsewhere; the demo tests and the
    # Ansible fleet also run on the defaults).
    cfg_path = make_setup(tmp_path / "legion", gather_commits=True,
                          aggregator={"max_series_per_node": 5})
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "n1")
    agg = procs("aggregator", "run", "--config", str(cfg_path), name="agg")
    ctx = zmq.Context()
    peer = CurvePeer(ctx, cfg, "n1")
    try:
        peer.connect(timeout=60)  # seq 1: one series
        peer.send(2, series_batch("wide_value", 0, 10))  # 10 new series > 5: refused whole
        wait_for(lambda: (peer.pump(100), 2 in peer.acks["rejected"])[1], 60)
        peer.send(3, series_batch("wide_value", 0, 2))
        wait_for(lambda: (peer.pump(100), 3 in peer.acks["committed"])[1], 60)
        # the rejected ack went out only once seq 2 was written down: kill at once
        agg.kill9()
    finally:
        peer.close()
        ctx.destroy(linger=0)
    procs("aggregator", "run", "--config", str(cfg_path), name="agg-again")
    row = wait_for(lambda: node_row(cfg_path, "n1"), 60, interval=0.5)
    assert (row["last_seq"], row["missing"], row["rejected"]) == (3, 0, 1), row
