"""End-to-end ingest throughput against the raw Curve transport ceiling, plus recovery figures.

    python bench/ingest.py [--secs 10] [--senders 2]

1. ceiling: the same frames through the same Curve PUB→SUB sockets, counted by a bare receiver
   (no decode, no store);
2. end to end: `legionctl aggregator run` (Curve, ZAP, decode, validate, identity check, one
   DuckDB transaction per ~100 ms, acks) — points/s from the aggregator's own counters;
   for 100- and 1000-point batches, from several sender processes;
3. recovery: aggregator restart → first live batch stored; backlog drain rate after an outage.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from legion.cli.client import ApiClient  # noqa: E402
from legion.cli.setup_cmds import add_agent_key  # noqa: E402
from legion.config import load_config  # noqa: E402
from legion.curve import client_socket, load_public, load_secret, server_socket  # noqa: E402
from legion.proto import Envelope, MetricsBatch, encode  # noqa: E402
from tests.conftest import make_setup  # noqa: E402

PY = [sys.executable, "-m", "legion.cli"]


def make_frames(node: str, points: int, count: int) -> list[bytes]:
    """`count` distinct batches (seq 1..count) of `points` points: 50 series × points/50 times."""
    n_series = min(50, points)
    names = tuple(f"bench_metric_{i}_percent" for i in range(n_series))
    reps = points // n_series
    now = int(time.time() * 1000)
    name_idx = np.tile(np.arange(n_series, dtype=np.uint32), reps)
    label_idx = np.zeros(points, dtype=np.uint32)
    frames = []
    rng = np.random.default_rng(0)
    for seq in range(1, count + 1):
        ts = np.repeat(now - (count - seq) * 1000 + np.arange(reps, dtype=np.int64) * 10,
                       n_series)
        batch = MetricsBatch(names, ((("host", node),),), name_idx, label_idx,
                             np.round(rng.uniform(0, 100, points), 1), ts)
        frames.append(encode(Envelope("metrics", node, 1, seq, now, batch)))
    return frames


def sender(cfg_path: str, node: str, frames: list[bytes], secs: float, go: mp.Event) -> None:
    cfg = load_config(cfg_path)
    ctx = zmq.Context()
    sock = client_socket(ctx, zmq.PUB, load_public(cfg.path(cfg.agent.server_public_key_path)),
                         load_secret(cfg.path(cfg.agent.keys_dir) / f"{node}.key_secret"))
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.connect(cfg.agent.aggregator_endpoint)
    time.sleep(1.0)  # slow joiner
    go.wait()
    end = time.monotonic() + secs
    i = 0
    while time.monotonic() < end and i < len(frames):
        try:
            sock.send(frames[i], zmq.NOBLOCK)
            i += 1
        except zmq.Again:
            time.sleep(0.0005)  # back-pressure: wait rather than drop
    time.sleep(1.0)
    sock.close(linger=2000)
    ctx.term()


def ceiling(cfg_path: Path, nodes: list[str], frames: dict[str, list[bytes]], points: int,
            secs: float) -> float:
    """Points/s through the bare Curve transport (receiver counts frames, nothing more)."""
    cfg = load_config(cfg_path)
    from legion.aggregator.auth import KeyRegistry, start_authenticator

    ctx = zmq.Context()
    auth = start_authenticator(ctx, KeyRegistry(cfg.path(cfg.aggregator.authorized_keys_dir)))
    sub = server_socket(ctx, zmq.SUB, load_secret(cfg.path(cfg.aggregator.secret_key_path)))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 10_000)
    sub.bind(cfg.aggregator.ingest_bind)
    go = mp.Event()
    ps = [mp.Process(target=sender, args=(str(cfg_path), n, frames[n], secs, go)) for n in nodes]
    for p in ps:
        p.start()
    time.sleep(1.5)
    go.set()
    got, t0, last = 0, time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < secs + 3:
        if sub.poll(200):
            while True:
                try:
                    sub.recv(zmq.NOBLOCK, copy=False)
                    got += 1
                    last = time.monotonic()
                except zmq.Again:
                    break
        elif got and time.monotonic() - last > 1.0:
            break
    for p in ps:
        p.join()
    sub.close(0)
    auth.stop()
    ctx.term()
    return got * points / max(1e-9, last - t0)


def start_aggregator(cfg_path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(PY + ["aggregator", "run", "--config", str(cfg_path)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_api(client: ApiClient, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return client.get("/api/v1/status")
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    raise SystemExit("aggregator did not come up")


def end_to_end(cfg_path: Path, nodes: list[str], frames: dict[str, list[bytes]], secs: float,
               log: Path) -> tuple[float, dict]:
    cfg = load_config(cfg_path)
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip())
    agg = start_aggregator(cfg_path, log)
    try:
        wait_api(client)
        go = mp.Event()
        ps = [mp.Process(target=sender, args=(str(cfg_path), n, frames[n], secs, go))
              for n in nodes]
        for p in ps:
            p.start()
        time.sleep(1.5)
        base = client.get("/api/v1/status")["ingest"]["points_accepted"]
        t0 = time.monotonic()
        go.set()
        samples = []
        while time.monotonic() - t0 < secs + 5:
            time.sleep(0.5)
            st = client.get("/api/v1/status")["ingest"]
            samples.append((time.monotonic() - t0, st["points_accepted"] - base))
            if len(samples) > 3 and samples[-1][1] == samples[-3][1] and samples[-1][1] > 0:
                break
        for p in ps:
            p.join()
        # rate over the busy part: from go until the last increase
        busy = [s for s in samples if s[1] > 0]
        last_inc = max(busy, key=lambda s: s[1]) if busy else (secs, 0)
        rate = last_inc[1] / max(1e-9, last_inc[0])
        return rate, client.get("/api/v1/status")["ingest"]
    finally:
        agg.send_signal(signal.SIGTERM)
        agg.wait(30)


def recovery(tmp: Path) -> dict:
    """Restart-to-live time and backlog drain rate with real node agents."""
    cfg_path = make_setup(tmp / "rec", collection_interval=0.1,
                          agent={"collectors": ["cpu", "memory", "load"],
                                 "resend_timeout_secs": 1.0})
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "r1")
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip())
    log = tmp / "rec.log"
    agent = subprocess.Popen(PY + ["agent", "run", "--config", str(cfg_path), "--node", "r1"],
                             stdout=open(tmp / "agent.log", "ab"), stderr=subprocess.STDOUT)
    outage = 30.0
    time.sleep(outage)  # a backlog of 30 s at 10 batches/s = ~300 batches
    t_start = time.monotonic()
    agg = start_aggregator(cfg_path, log)
    wait_api(client)
    t_api = time.monotonic() - t_start
    first_live = drained_at = None
    target = None
    while time.monotonic() - t_start < 120:
        nodes = {n["node"]: n for n in client.get("/api/v1/nodes")}
        n = nodes.get("r1")
        if n and first_live is None and n["last_seen_ms"] / 1000 > time.time() - 1:
            first_live = time.monotonic() - t_start
            target = n["last_seq"]
        if n and target is not None and n["missing"] == 0 and n["last_seq"] >= target:
            drained_at = time.monotonic() - t_start
            backlog = target
            break
        time.sleep(0.2)
    agent.send_signal(signal.SIGTERM)
    agent.wait(30)
    agg.send_signal(signal.SIGTERM)
    agg.wait(30)
    return {"outage_secs": outage, "api_up_secs": round(t_api, 2),
            "restart_to_live_secs": round(first_live or -1, 2),
            "backlog_batches": target, "drained_secs": round(drained_at or -1, 2),
            "drain_batches_per_sec": round(backlog / drained_at, 1) if drained_at else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secs", type=float, default=10.0)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--no-recovery", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="legion-bench-ingest-"))
    results = {}
    for points in (100, 1000):
        cfg_path = make_setup(tmp / f"p{points}")
        cfg = load_config(cfg_path)
        nodes = [f"s{i}" for i in range(args.senders)]
        for n in nodes:
            add_agent_key(cfg, n)
        # enough distinct batches for the run (rate-limited by the sockets anyway)
        count = int(2_500_000 * args.secs / points / args.senders) + 10
        frames = {n: make_frames(n, points, count) for n in nodes}
        ceil = ceiling(cfg_path, nodes, frames, points, args.secs)
        e2e, st = end_to_end(cfg_path, nodes, frames, args.secs, tmp / f"agg-{points}.log")
        results[points] = {"ceiling_points_per_s": round(ceil), "e2e_points_per_s": round(e2e),
                           "ratio": round(e2e / ceil, 3) if ceil else None,
                           "commit_seconds_avg": st["commit_seconds_avg"],
                           "rejected": st["rejected_total"]}
        print(f"{points:>5}-point batches  ceiling {ceil:>12,.0f} pts/s   end-to-end "
              f"{e2e:>12,.0f} pts/s   ratio {e2e / ceil if ceil else 0:.2f}", flush=True)
    if not args.no_recovery:
        results["recovery"] = recovery(tmp)
        print("recovery", json.dumps(results["recovery"]))
    print("targets: >= 1,000,000 pts/s with 1000-point batches; >= 0.50 of the ceiling")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
