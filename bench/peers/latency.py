"""End-to-end latency: a sample's timestamp at the agent -> its host's update at a WebSocket
client of the gateway (`system_health` topic), p50/p99, at 1 real agent and at N simulated hosts.

The simulated hosts are Curve PUB sockets (one key each, as agents) sending one batch per second
stamped with the wall clock at send time; the real agent is `legionctl agent run` at 1 s. Each
(host, ts_ms) is counted once, at the first update that carries it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/
sys.path.insert(0, str(HERE.parents[1]))  # the repository (tests.conftest)

import ingest as ingest_bench  # noqa: E402


def connect_hosts(cfg_path: str, nodes: list[str]) -> dict[str, zmq.Socket[Any]]:
    """One connected Curve XPUB socket per simulated host, with that host's own key."""
    from legion.cli.config import load_config
    from legion.kernel.curve import client_socket, load_public, load_secret

    cfg = load_config(cfg_path)
    ctx = zmq.Context.instance()
    server = load_public(cfg.path(cfg.agent.server_public_key_path))
    socks = {}
    for n in nodes:
        s = client_socket(ctx, zmq.XPUB, server,
                          load_secret(cfg.path(cfg.agent.keys_dir) / f"{n}.key_secret"))
        ingest_bench.connect_and_wait(s, cfg.agent.aggregator_endpoint)
        socks[n] = s
    return socks


def _hosts(cfg_path: str, nodes: list[str], secs: float, go: Any, ready: Any) -> None:
    """One batch per host per second, stamped now (CPU, memory, disk as the agent names them)."""
    from legion.proto import Sample, canonical_labels, encode_samples

    socks = connect_hosts(cfg_path, nodes)
    ready.put(len(socks))
    go.wait()
    rng = np.random.default_rng(0)
    end, seq = time.monotonic() + secs, 0
    next_tick = time.monotonic()
    while time.monotonic() < end:
        seq += 1
        for n, s in socks.items():
            now = int(time.time() * 1000)
            samples = [Sample("system_cpu_usage_percent", (), float(rng.uniform(0, 60)), now),
                       Sample("system_memory_usage_percent", (), 40.0, now),
                       Sample("system_disk_usage_percent", canonical_labels({"mount": "/"}),
                              50.0, now)]
            s.send(encode_samples(n, 1, seq, now, samples))
        next_tick += 1.0
        time.sleep(max(0.0, next_tick - time.monotonic()))
    for s in socks.values():
        s.close(linger=1000)
    zmq.Context.instance().term()


async def _listen(url: str, token: str, secs: float,
                  client: dict[str, tuple[float, float]] | None = None) -> list[float]:
    """Latencies of the first update carrying each (host, ts_ms); with `client`, also each
    one's key -> (message ts_ms, arrival) for the stage breakdown."""
    import aiohttp

    seen: set[tuple[str, int]] = set()
    lat: list[float] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s, \
            s.ws_connect(url + "/ws") as ws:
        await ws.send_str(json.dumps({"op": "subscribe", "topics": ["system_health"],
                                      "history": False}))
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                msg = await ws.receive(timeout=max(0.1, end - time.monotonic()))
            except TimeoutError:
                break
            now = time.time() * 1000
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            body = json.loads(msg.data)
            if body.get("type") != "update":
                continue
            for h in body["data"].get("hosts", []):
                key = (h["node"], int(h["ts_ms"]))
                if key not in seen:
                    seen.add(key)
                    lat.append(now - key[1])
                    if client is not None:
                        client[f"{key[0]}|{key[1]}"] = (float(body["ts_ms"]), now)
    return lat


def measure(work: Path, hosts: int, secs: float, rounds: int = 1,
            update_interval_ms: int | None = None,
            commit_interval_ms: int | None = None,
            stages: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """p50/p99 ms from sample timestamp to WebSocket update at `hosts` hosts, per round (one
    aggregator and one set of hosts; a fresh WebSocket client per round). With `stages` (a
    dict), the aggregator runs under `latency_stages.py` and `stages` receives the per-stage
    breakdown over all rounds."""
    from legion.cli.client import ApiClient
    from legion.cli.config import load_config
    from legion.cli.setup_cmds import add_agent_key
    from tests.conftest import make_setup

    work.mkdir(parents=True, exist_ok=True)
    dash = {} if update_interval_ms is None else {"update_interval_ms": update_interval_ms}
    agg = {} if commit_interval_ms is None else {"commit_interval_ms": commit_interval_ms}
    cfg_path = make_setup(work / f"lat-{hosts}", collection_interval=1.0,
                          security={"enable_tls": False}, dashboard_config=dash, aggregator=agg)
    cfg = load_config(cfg_path)
    token = (cfg_path.parent / "admin.token").read_text().strip()
    nodes = [f"h{i:03d}" for i in range(hosts)]
    for n in nodes:
        add_agent_key(cfg, n)
    stage_file = work / f"lat-{hosts}-stages.json"
    if stages is None:
        proc = ingest_bench.start_aggregator(cfg_path, work / f"lat-{hosts}-agg.log")
    else:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "latency_stages.py"), str(stage_file), "aggregator",
             "run", "--config", str(cfg_path)],
            stdout=(work / f"lat-{hosts}-agg.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
    client: dict[str, tuple[float, float]] = {}
    procs: list[Any] = []
    try:
        ingest_bench.wait_api(ApiClient(cfg, token))
        go, ready = mp.Event(), mp.Queue()
        if hosts == 1:  # the real agent
            procs.append(subprocess.Popen(
                ingest_bench.PY + ["agent", "run", "--config", str(cfg_path), "--node", nodes[0]],
                stdout=(work / "lat-agent.log").open("wb"), stderr=subprocess.STDOUT,
                start_new_session=True))
        else:
            half = len(nodes) // 2
            procs += [mp.Process(target=_hosts, args=(str(cfg_path), part,
                                                      rounds * (secs + 1) + 10, go, ready))
                      for part in (nodes[:half], nodes[half:])]
            for p in procs:
                p.start()
            for _ in procs:  # every Curve handshake done
                ready.get(timeout=120)
        go.set()
        time.sleep(3)  # first commits, first snapshot
        url = f"http://127.0.0.1:{cfg.dashboard_config.websocket_port}"
        lats = [asyncio.run(_listen(url, token, secs, client)) for _ in range(rounds)]
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                p.terminate()
                p.wait(15)
            else:
                p.join(30)
                if p.is_alive():
                    p.terminate()
        proc.terminate()
        proc.wait(30)
    if stages is not None:
        import latency_stages

        found = json.loads(stage_file.read_text())
        stages.update(latency_stages.breakdown(found, client))
        stages["raw"] = {"found": found, "client": client}
    return [{"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
             "n": float(len(lat))} if lat else
            {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0.0} for lat in lats]


if __name__ == "__main__":
    import argparse
    import os
    import shutil
    import tempfile

    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    mp.set_start_method("fork")
    ap = argparse.ArgumentParser(description="end-to-end latency with its stage breakdown")
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--secs", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--raw", type=Path, help="write every sample's stage clocks here (JSON)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="legion-latency-"))
    try:
        found: dict[str, Any] = {}
        res = measure(tmp, args.hosts, args.secs, args.rounds, stages=found)
        raw = found.pop("raw")
        if args.raw is not None:
            args.raw.write_text(json.dumps(raw))
        print(json.dumps({"hosts": args.hosts, "rounds": res, "stages": found}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
