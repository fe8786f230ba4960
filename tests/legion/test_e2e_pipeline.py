"""End to end over real processes and sockets: init → keys → aggregator + agent → query."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.curve import client_socket, create_keypair, load_public, load_secret
from legion.proto import Envelope, MetricsBatch, Sample, encode
from tests.conftest import LEGIONCTL, wait_for

pytestmark = pytest.mark.timeout(120)


def cli_json(config: Path, *args: str) -> object:
    """Run `legionctl ARGS --config F --format json` as a real subprocess; parse its stdout."""
    out = subprocess.run(LEGIONCTL + list(args) + ["--config", str(config), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cli_json_or_none(config: Path, *args: str) -> object:
    out = subprocess.run(LEGIONCTL + list(args) + ["--config", str(config), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_agent_metrics_reach_query(setup_dir: Path, procs) -> None:
    cfg = load_config(setup_dir)
    add_agent_key(cfg, "web-1")
    agg = procs("aggregator", "run", "--config", str(setup_dir))
    agent = procs("agent", "run", "--config", str(setup_dir), "--node", "web-1")
    started = time.time()

    def fresh_points() -> list:
        rows = cli_json_or_none(setup_dir, "query", "system_cpu_usage_percent",
                                "--node", "web-1", "--since", "1m")
        return [r for r in rows or [] if r["node"] == "web-1"]

    rows = wait_for(fresh_points, timeout=30, interval=1)
    assert {"ts", "node", "metric", "labels", "value"} <= set(rows[0])
    assert rows[0]["metric"] == "system_cpu_usage_percent"
    assert all(0.0 <= r["value"] <= 100.0 for r in rows)
    assert any(r["labels"].get("cpu") is not None for r in rows), "per-core series expected"
    newest = max(r["ts"] for r in rows)
    assert newest >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(started - 60))

    nodes = cli_json(setup_dir, "nodes")
    web = next(n for n in nodes if n["node"] == "web-1")
    assert web["points"] > 0 and web["last_seen"]

    stepped = cli_json(setup_dir, "query", "system_cpu_usage_percent", "--node", "web-1",
                       "--since", "5m", "--step", "1m", "--agg", "max")
    assert stepped and all(0.0 <= r["value"] <= 100.0 for r in stepped)

    status = cli_json(setup_dir, "status")
    assert status["ingest"]["batches_accepted"] > 0

    # table and csv render too, and errors are one line on stderr with exit code != 0
    table = subprocess.run(LEGIONCTL + ["nodes", "--config", str(setup_dir)],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "web-1" in table.stdout
    bad = subprocess.run(LEGIONCTL + ["query", "x", "--step", "banana", "--config",
                                      str(setup_dir)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:")
    assert agent.stop() == 0 and agg.stop() == 0


def _raw_pub(cfg, keypair) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    server = load_public(cfg.path(cfg.agent.server_public_key_path))
    sock = client_socket(ctx, zmq.PUB, server, keypair)
    sock.connect(cfg.agent.aggregator_endpoint)
    return ctx, sock


def _batch(node: str, seq: int) -> bytes:
    now = int(time.time() * 1000)
    return encode(Envelope("metrics", node, 1, seq, now, MetricsBatch.from_samples(
        [Sample("test_value_total", (), float(seq), now)])))


def test_identity_and_garbage_are_rejected_and_counted(setup_dir: Path, procs,
                                                       tmp_path: Path) -> None:
    cfg = load_config(setup_dir)
    add_agent_key(cfg, "good")
    procs("aggregator", "run", "--config", str(setup_dir))
    wait_for(lambda: cli_json_or_none(setup_dir, "status"), timeout=30)

    # 1. a key that is not in the allowlist: the handshake fails, nothing is stored
    _, rogue_secret = create_keypair(tmp_path / "rogue", "rogue", node="rogue")
    ctx1, rogue = _raw_pub(cfg, load_secret(rogue_secret))
    # 2. an authorized key claiming another node's name, plus garbage and a valid batch
    good_keys = load_secret(cfg.path(cfg.agent.keys_dir) / "good.key_secret")
    ctx2, good = _raw_pub(cfg, good_keys)
    seq = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seq += 1
        rogue.send(_batch("rogue", seq))
        good.send(_batch("someone-else", seq))
        good.send(b"\x93garbage")
        good.send(_batch("good", seq))
        time.sleep(0.2)
        st = cli_json(setup_dir, "status")["ingest"]
        if st["rejected"].get("node_mismatch", 0) >= 2 and \
                st["rejected"].get("bad_msgpack", 0) + st["rejected"].get(
                    "mistyped_field", 0) >= 2 and st["batches_accepted"] >= 2:
            break
    st = cli_json(setup_dir, "status")["ingest"]
    assert st["rejected"].get("node_mismatch", 0) >= 2, st
    assert st["batches_accepted"] >= 2, st  # the aggregator kept running and storing
    nodes = {n["node"] for n in cli_json(setup_dir, "nodes")}
    assert "good" in nodes
    assert "rogue" not in nodes and "someone-else" not in nodes
    for s, c in ((rogue, ctx1), (good, ctx2)):
        s.close(0)
        c.term()


def test_unauthorized_agent_process_stores_nothing(setup_dir: Path, procs,
                                                   tmp_path: Path) -> None:
    cfg = load_config(setup_dir)
    add_agent_key(cfg, "good")
    # a key for "intruder" exists on the agent side but was never authorized
    add_agent_key(cfg, "intruder")
    (cfg.path(cfg.aggregator.authorized_keys_dir) / "intruder.key").unlink()
    procs("aggregator", "run", "--config", str(setup_dir))
    procs("agent", "run", "--config", str(setup_dir), "--node", "intruder", name="intruder")
    procs("agent", "run", "--config", str(setup_dir), "--node", "good", name="good")
    wait_for(lambda: any(n["node"] == "good" for n in cli_json_or_none(
        setup_dir, "nodes") or []), timeout=30, interval=1)
    time.sleep(3)
    assert "intruder" not in {n["node"] for n in cli_json(setup_dir, "nodes")}


def test_aggregator_refuses_to_start_without_keys(setup_dir: Path) -> None:
    out = subprocess.run(LEGIONCTL + ["aggregator", "run", "--config", str(setup_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "no authorized agent keys" in out.stderr


def test_cli_config_error_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "monitoring_config.json"
    bad.write_text(json.dumps({"collection_interval": -1, "agent": {"bogus": 1}}))
    out = subprocess.run(LEGIONCTL + ["nodes", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "collection_interval" in out.stderr and "agent.bogus" in out.stderr
