"""End-to-end ingest throughput against the raw Curve transport ceiling, plus recovery figures.

    python bench/ingest.py [--secs 10] [--senders 2]

1. ceiling: the same frames through the same Curve PUB→SUB sockets, counted by a bare receiver
   (no decode, no store);
2. end to end: `legionctl aggregator run` (Curve, ZAP, decode, validate, identity check, one
   DuckDB transaction per ~100 ms, acks) — points/s from the aggregator's own counters;
   for 100- and 1000-point batches, from several sender processes;
3. recovery: aggregator restart → first live batch stored; backlog drain rate after an outage;
4. the real agent path under overload (`--agent-path`): senders built from the node agent's own
   `Spool` + `Delivery` (append before send, acks, resends) offer batches as fast as they can.

Every offered point is accounted for: stored (the aggregator's per-node `points`), rejected (the
aggregator's counted reasons), lost in ZeroMQ (frames the senders handed to their PUB socket that
the aggregator never received), or evicted by an agent spool (its `batches_dropped_total`); the
remainder is printed as `unaccounted` and must be 0. The bare senders set `ZMQ_XPUB_NODROP`, so a
PUB socket at its high-water mark raises `zmq.Again` (and the sender waits) instead of dropping.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from legion.cli.client import ApiClient  # noqa: E402
from legion.cli.config import load_config  # noqa: E402
from legion.cli.setup_cmds import add_agent_key  # noqa: E402
from legion.kernel.curve import client_socket, load_public, load_secret, server_socket  # noqa: E402
from legion.proto import Envelope, MetricsBatch, encode  # noqa: E402
from tests.conftest import make_setup  # noqa: E402

PY = [sys.executable, "-m", "legion.cli"]
SAMPLE_SECS = 0.1
"""How often `end_to_end` reads the stored count (one `/api/v1/nodes` call each)."""
SETTLE_SECS = 2.0
"""The stored count unchanged this long (and an empty queue): everything offered has arrived."""


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


def connect_and_wait(sock: zmq.Socket, endpoint: str, timeout: float = 30.0) -> None:
    """Connect an XPUB socket and wait for the subscriber's subscription: a publisher drops
    what it sends before then (the slow joiner), whatever its options."""
    sock.connect(endpoint)
    if sock.poll(int(timeout * 1000)):
        sock.recv()


def sender(cfg_path: str, node: str, frames: list[bytes], secs: float, go: mp.Event,
           out: mp.Queue) -> None:
    """Offer frames for `secs` with back-pressure; puts (node, frames handed to ZeroMQ) on out."""
    cfg = load_config(cfg_path)
    ctx = zmq.Context()
    # XPUB: a PUB that shows the subscription arriving (see connect_and_wait)
    sock = client_socket(ctx, zmq.XPUB, load_public(cfg.path(cfg.agent.server_public_key_path)),
                         load_secret(cfg.path(cfg.agent.keys_dir) / f"{node}.key_secret"))
    sock.setsockopt(zmq.SNDHWM, 1000)
    # Without this a publisher at its HWM drops silently and never raises zmq.Again.
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    connect_and_wait(sock, cfg.agent.aggregator_endpoint)
    go.wait()
    end = time.monotonic() + secs
    i = 0
    while time.monotonic() < end and i < len(frames):
        try:
            sock.send(frames[i], zmq.NOBLOCK)
            i += 1
        except zmq.Again:
            time.sleep(0.0005)  # back-pressure: wait rather than drop
    out.put((node, i))
    time.sleep(1.0)
    sock.close(linger=10_000)
    ctx.term()


def agent_sender(cfg_path: str, node: str, frames: list[bytes], secs: float, go: mp.Event,
                 out: mp.Queue) -> None:
    """The node agent's delivery path at full speed: spool append, send (no NODROP, as the
    agent), acks, resends; then drain until the spool is empty or 60 s pass."""
    from legion.kernel.spool.spool import Spool
    from legion.node_agent.agent import MAX_RESENDS_PER_TICK
    from legion.node_agent.delivery import Delivery
    from legion.proto import KIND_ACK, Ack, decode

    logging.getLogger("legion").setLevel(logging.ERROR)  # one overflow line per eviction
    cfg = load_config(cfg_path)
    ctx = zmq.Context()
    pub_key = load_public(cfg.path(cfg.agent.server_public_key_path))
    keypair = load_secret(cfg.path(cfg.agent.keys_dir) / f"{node}.key_secret")
    pub = client_socket(ctx, zmq.PUB, pub_key, keypair)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.connect(cfg.agent.aggregator_endpoint)
    acks = client_socket(ctx, zmq.SUB, pub_key, keypair)
    acks.setsockopt(zmq.SUBSCRIBE, node.encode() + b"\0")
    acks.connect(cfg.agent.ack_endpoint)
    spool = Spool(Path(cfg_path).parent / "spools" / node, cfg.agent.spool_max_bytes,
                  cfg.agent.spool_sync_interval_ms, epoch=1)
    delivery = Delivery(spool, resend_timeout=cfg.agent.resend_timeout_secs)
    counts = {"sent": 0, "would_block": 0}

    def send(frame: bytes) -> None:
        try:
            pub.send(frame, zmq.NOBLOCK)
            counts["sent"] += 1
        except zmq.Again:
            counts["would_block"] += 1

    def drain_acks() -> None:
        for _ in range(1000):
            try:
                _topic, data = acks.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            env = decode(data)
            if env.kind == KIND_ACK and isinstance(env.body, Ack):
                delivery.on_ack(env.body)

    def resend() -> None:
        for _seq, frame in delivery.due_resends(limit=MAX_RESENDS_PER_TICK):
            send(frame)

    time.sleep(1.0)
    go.wait()
    end = time.monotonic() + secs
    i = 0
    while time.monotonic() < end and i < len(frames):
        spool.append(i + 1, frames[i])
        send(frames[i])
        delivery.on_sent(i + 1)
        i += 1
        if i % 10 == 0:  # one agent "tick" per 10 batches
            drain_acks()
            resend()
            spool.sync_if_due()
    drain_end = time.monotonic() + 60
    while spool.stats()["spool_records"] and time.monotonic() < drain_end:
        drain_acks()
        resend()
        time.sleep(0.05)
    st = spool.stats()
    out.put((node, {"offered": i, **counts, "resends": delivery.counters["resends_total"],
                    "evicted": st["batches_dropped_total"], "left_in_spool": st["spool_records"]}))
    spool.close()
    pub.close(linger=0)
    acks.close(linger=0)
    ctx.term()


def ceiling(cfg_path: Path, nodes: list[str], frames: dict[str, list[bytes]], points: int,
            secs: float) -> float:
    """Points/s through the bare Curve transport (receiver counts frames, nothing more)."""
    cfg = load_config(cfg_path)
    from legion.aggregator.allowlist import KeyRegistry, start_authenticator

    ctx = zmq.Context()
    auth = start_authenticator(ctx, KeyRegistry(cfg.path(cfg.aggregator.authorized_keys_dir)))
    sub = server_socket(ctx, zmq.SUB, load_secret(cfg.path(cfg.aggregator.secret_key_path)))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 10_000)
    sub.bind(cfg.aggregator.ingest_bind)
    go, out = mp.Event(), mp.Queue()
    ps = [mp.Process(target=sender, args=(str(cfg_path), n, frames[n], secs, go, out))
          for n in nodes]
    for p in ps:
        p.start()
    time.sleep(1.5)
    go.set()
    got, t0, last = 0, time.monotonic(), time.monotonic()
    reports: list[int] = []
    while time.monotonic() - t0 < secs + 60:  # until every frame handed to ZeroMQ arrived
        if sub.poll(200):
            while True:
                try:
                    sub.recv(zmq.NOBLOCK, copy=False)
                    got += 1
                    last = time.monotonic()
                except zmq.Again:
                    break
        while not out.empty():
            reports.append(out.get()[1])
        if len(reports) == len(nodes) and (got >= sum(reports) or time.monotonic() - last > 3):
            break
    sent = sum(reports)
    for p in ps:
        p.join()
    sub.close(0)
    auth.stop()
    ctx.term()
    if sent != got:
        print(f"  ceiling: {sent - got} of {sent} frames lost in ZeroMQ", flush=True)
    return got * points / max(1e-9, last - t0)


def start_aggregator(cfg_path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(PY + ["aggregator", "run", "--config", str(cfg_path)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_api(client: ApiClient, timeout: float = 90) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return client.get("/api/v1/status")
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    raise SystemExit("aggregator did not come up")


def end_to_end(cfg_path: Path, nodes: list[str], frames: dict[str, list[bytes]], secs: float,
               log: Path, points: int, agent_path: bool = False,
               on_go: Callable[[int], None] | None = None,
               on_done: Callable[[int], None] | None = None) -> tuple[float, dict, dict]:
    """Stored points/s through `legionctl aggregator run`, its ingest counters, and the
    accounting of every offered point; `on_go` gets the aggregator's pid when the senders
    start, `on_done` at every sample where the stored count grew, so its last call is the
    moment everything offered had been stored (e.g. to read its CPU time up to then).

    The stored count is sampled every `SAMPLE_SECS` and the rate is the final count over the
    time of the first sample that saw it: a run that stores everything within the first half
    second is no longer reported as `points / 0.5 s`, and the aggregator's idle time while the
    loop waits for the count to settle is not charged to ingest."""
    cfg = load_config(cfg_path)
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip())
    agg = start_aggregator(cfg_path, log)
    try:
        wait_api(client)
        go, out = mp.Event(), mp.Queue()
        target = agent_sender if agent_path else sender
        ps = [mp.Process(target=target, args=(str(cfg_path), n, frames[n], secs, go, out))
              for n in nodes]
        for p in ps:
            p.start()
        time.sleep(1.5)
        base = client.get("/api/v1/status")["ingest"]
        if on_go is not None:
            on_go(agg.pid)
        t0 = time.monotonic()
        go.set()
        samples: list[tuple[float, int]] = []
        reports: dict[str, object] = {}
        settle = int(SETTLE_SECS / SAMPLE_SECS)
        while time.monotonic() - t0 < secs + 150:  # bounded: senders drain for <= 60 s
            time.sleep(SAMPLE_SECS)
            while not out.empty():
                node, rep = out.get()
                reports[node] = rep
            stored = sum(n["points"] for n in client.get("/api/v1/nodes") if n["node"] in nodes)
            samples.append((time.monotonic() - t0, stored))
            if on_done is not None and stored > (samples[-2][1] if len(samples) > 1 else 0):
                on_done(agg.pid)
            if len(reports) < len(nodes) or len(samples) <= settle or stored == 0 or \
                    samples[-1][1] != samples[-1 - settle][1]:
                continue
            if client.get("/api/v1/status")["ingest"]["queue_depth"] == 0:
                break
        for p in ps:
            p.join(30)
        st = client.get("/api/v1/status")["ingest"]
        busy = [x for x in samples if x[1] > 0]
        last_inc = min((x for x in busy if x[1] == busy[-1][1]), default=(secs, 0))
        rate = last_inc[1] / max(1e-9, last_inc[0])
        return rate, st, account(reports, st, base, samples[-1][1] if samples else 0, points)
    finally:
        agg.send_signal(signal.SIGTERM)
        agg.wait(30)


def account(reports: dict, st: dict, base: dict, stored: int, points: int) -> dict:
    """Where every offered point went (points; `unaccounted` must be 0)."""
    received = st["frames_received"] - base["frames_received"]
    rejected = st["rejected_total"] - base["rejected_total"]
    if all(isinstance(r, int) for r in reports.values()):  # bare senders: what ZeroMQ took
        offered = sum(reports.values())
        acc = {"offered": offered * points, "stored": stored,
               "rejected_by_aggregator": rejected * points,
               "lost_in_zeromq": max(0, offered - received) * points}
    else:  # agent path: resends make frames != batches; count batches
        offered = sum(r["offered"] for r in reports.values())
        evicted = sum(r["evicted"] for r in reports.values())
        acc = {"offered": offered * points, "stored": stored,
               "rejected_by_aggregator": rejected * points,
               "evicted_by_agent_spool": evicted * points,
               "left_in_agent_spool": sum(r["left_in_spool"] for r in reports.values()) * points,
               "agent": reports}
        # an evicted batch may still have arrived before eviction: count it once
        acc["evicted_but_stored"] = max(0, stored + evicted * points - offered * points)
    counted = sum(v for k, v in acc.items() if k not in ("offered", "agent", "evicted_but_stored"))
    acc["unaccounted"] = acc["offered"] - counted + acc.get("evicted_but_stored", 0)
    return acc


def recovery(tmp: Path) -> dict:
    """Restart-to-live time and backlog drain rate with real node agents."""
    cfg_path = make_setup(tmp / "rec", collection_interval=0.1,
                          agent={"collectors": ["cpu", "memory", "load"],
                                 "resend_timeout_secs": 1.0},
                          aggregator={"commit_max_delay_ms": 0})  # below the 0.8 s resend
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
    ap.add_argument("--agent-path", action="store_true",
                    help="also overload the real agent path (spool + acks + resends)")
    ap.add_argument("--agent-spool-mib", type=int, default=4,
                    help="the overloaded agents' spool size (small, so eviction shows)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="legion-bench-ingest-"))
    results: dict[object, object] = {}
    runs = [(100, False), (1000, False)] + ([(1000, True)] if args.agent_path else [])
    for points, agent_path in runs:
        name = f"p{points}" + ("-agent" if agent_path else "")
        cfg_path = make_setup(tmp / name, **({"agent": {
            "spool_max_bytes": args.agent_spool_mib << 20, "resend_timeout_secs": 1.0},
            "aggregator": {"commit_max_delay_ms": 0}} if agent_path else {}))
        cfg = load_config(cfg_path)
        nodes = [f"s{i}" for i in range(args.senders)]
        for n in nodes:
            add_agent_key(cfg, n)
        # enough distinct batches for the run (rate-limited by the sockets anyway)
        count = int(2_500_000 * args.secs / points / args.senders) + 10
        frames = {n: make_frames(n, points, count) for n in nodes}
        ceil = ceiling(cfg_path, nodes, frames, points, args.secs) if not agent_path else 0.0
        e2e, st, acc = end_to_end(cfg_path, nodes, frames, args.secs, tmp / f"agg-{name}.log",
                                  points, agent_path)
        results[name] = {"ceiling_points_per_s": round(ceil), "e2e_points_per_s": round(e2e),
                         "ratio": round(e2e / ceil, 3) if ceil else None,
                         "commit_seconds_avg": st["commit_seconds_avg"],
                         "rejected": st["rejected_total"], "accounting": acc}
        print(f"{name:>10}  ceiling {ceil:>12,.0f} pts/s   end-to-end {e2e:>12,.0f} pts/s   "
              f"ratio {e2e / ceil if ceil else 0:.2f}", flush=True)
        print("   accounting (points):", json.dumps({k: v for k, v in acc.items()
                                                     if k != "agent"}), flush=True)
    if not args.no_recovery:
        results["recovery"] = recovery(tmp)
        print("recovery", json.dumps(results["recovery"]))
    print("targets: >= 1,000,000 pts/s with 1000-point batches; >= 0.50 of the ceiling")
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
