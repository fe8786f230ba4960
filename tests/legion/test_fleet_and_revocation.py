"""200 agents with their own keys at once, and a revoked key cut off within 10 s."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from tests.conftest import LEGIONCTL, make_setup, wait_for
from tests.legion.test_lose_nothing import assert_exactly_once, drained, nodes_now

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def test_200_agents_with_their_own_keys_lose_nothing(tmp_path: Path, procs) -> None:
    cfg_path = make_setup(tmp_path / "legion", collection_interval=1.0,
                          agent={"collectors": ["uptime", "load"], "resend_timeout_secs": 2.0},
                          # gathering must stay within 3/4 of the earliest resend (1.6 s)
                          aggregator={"commit_max_delay_ms": 1200})
    cfg = load_config(cfg_path)
    n_procs, per_proc = 4, 50
    names = [f"sim-{i:03d}" for i in range(n_procs * per_proc)]
    for n in names:
        add_agent_key(cfg, n)
    agg = procs("aggregator", "run", "--config", str(cfg_path), name="agg")
    stop = tmp_path / "stop"
    harnesses = []
    for p in range(n_procs):
        harnesses.append(subprocess.Popen(
            [sys.executable, "-m", "tests.legion.fleet_harness", "--config", str(cfg_path),
             "--first", str(p * per_proc), "--count", str(per_proc),
             "--report", str(tmp_path / f"want-{p}.json"), "--stop-file", str(stop)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"h{p}.log", "wb")))
    try:
        wait_for(lambda: all((tmp_path / f"want-{p}.json").exists() for p in range(n_procs)),
                 timeout=90, interval=1)
        want: dict[str, tuple[int, int]] = {}
        for p in range(n_procs):
            want.update({k: tuple(v) for k, v in json.loads(
                (tmp_path / f"want-{p}.json").read_text()).items()})
        assert len(want) == 200 and all(last >= 3 for _, last in want.values())
        try:
            wait_for(lambda: drained(cfg_path, want), timeout=120, interval=2)
        except AssertionError:
            seen = nodes_now(cfg_path)
            behind = {n: (seen.get(n), want[n]) for n in names
                      if not seen.get(n) or seen[n]["missing"] or seen[n]["last_seq"] <= want[n][1]}
            raise AssertionError(f"{len(behind)} agents not drained, e.g. "
                                 f"{list(behind.items())[:3]}") from None
    finally:
        stop.touch()
        for h in harnesses:
            h.wait(60)
    agg.stop()
    assert_exactly_once(cfg_path, want)


def test_revoked_key_is_cut_off_within_10s(tmp_path: Path, procs) -> None:
    cfg_path = make_setup(tmp_path / "legion", collection_interval=0.5,
                          agent={"collectors": ["uptime"]})
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "keep")
    add_agent_key(cfg, "evil")
    procs("aggregator", "run", "--config", str(cfg_path), name="agg")
    procs("agent", "run", "--config", str(cfg_path), "--node", "keep", name="keep")
    procs("agent", "run", "--config", str(cfg_path), "--node", "evil", name="evil")
    wait_for(lambda: {"keep", "evil"} <= set(nodes_now(cfg_path)), timeout=30, interval=0.5)
    out = subprocess.run(LEGIONCTL + ["keys", "revoke", "evil", "--config", str(cfg_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    revoked_at = time.time()
    # Once the receiver has rebound (the cut), what it accepted before is committed at once
    # (make_setup: no commit gathering), then nothing more of `evil` may come for 4 s; its
    # last batch must still be within 10 s of the revocation (instead of sleeping those 10 s).
    wait_for(lambda: rebinds(cfg_path) >= 1, timeout=60, interval=0.5)
    time.sleep(1)
    before = nodes_now(cfg_path)
    time.sleep(4)
    after = nodes_now(cfg_path)
    # the revoked node stored nothing after the cut, within 10 s; the other one goes on
    assert after["evil"]["last_seq"] == before["evil"]["last_seq"]
    assert after["evil"]["last_seen_ms"] / 1000 <= revoked_at + 10
    assert after["keep"]["last_seq"] > before["keep"]["last_seq"]


def rebinds(cfg_path: Path) -> int:
    """The running aggregator's `socket_rebinds` (0 when `legionctl status` fails)."""
    out = subprocess.run(LEGIONCTL + ["status", "--config", str(cfg_path), "--format", "json"],
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)["ingest"]["socket_rebinds"] if out.returncode == 0 else 0
