"""Series creation rate and a quiet node's commit latency during a cardinality flood.

    python bench/cardinality.py [--flood-batches 100] [--series-per-batch 1000]
                                [--max-series-per-node 0] [--max-series-per-metric 0]

1. creation: `Store.write` of batches that each bring N new series (N = 1,000 and 10,000),
   in-process on a fresh file: new series per second, against the rate of the same points for
   series already known (the baseline, measured in the same run);
2. flood: a real `legionctl aggregator run`; one node ("flood") sends --flood-batches batches of
   --series-per-batch distinct label values as fast as its Curve socket takes them, while a
   second node ("quiet") sends one small batch every 100 ms; the quiet node's commit latency
   (send -> `committed` ack) is measured before and during the flood, and the ratio printed.
   Also printed: how long the flood took to be answered (committed or rejected), what the
   aggregator counted, its commit budget (`commit_budget.py`), the aggregator's RSS before,
   at its peak during and after the flood (sampled every 50 ms), and whether the quiet node's
   latency stayed within one commit interval of its own before the flood (max and p95). The
   series limits default to 0 (off), so all the flood's series are created: the worst case.

The machine may be shared: compare ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from legion.aggregator.store import IncomingBatch, Store  # noqa: E402
from legion.cli.client import ApiClient  # noqa: E402
from legion.cli.config import load_config  # noqa: E402
from legion.cli.setup_cmds import add_agent_key  # noqa: E402
from legion.kernel.curve import client_socket, load_public, load_secret  # noqa: E402
from legion.proto import Envelope, MetricsBatch, decode, encode  # noqa: E402
from tests.conftest import make_setup  # noqa: E402

PY = [sys.executable, "-m", "legion.cli"]


def flood_batch(node: str, first: int, n: int, ts_ms: int) -> MetricsBatch:
    """One point each for `n` series `bench_flood_value{id=first..first+n-1}`."""
    labels = tuple(((("id", str(first + i)),)) for i in range(n))
    return MetricsBatch(("bench_flood_value",), labels, np.zeros(n, np.uint32),
                        np.arange(n, dtype=np.uint32), np.ones(n), np.full(n, ts_ms, np.int64))


def creation_rate(tmp: Path) -> dict:
    """New series/s from `Store.write`, and the same points for known series as baseline."""
    out = {}
    for n in (1_000, 10_000):
        store = Store(tmp / f"create-{n}.duckdb")
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        store.write([IncomingBatch("flood", 1, 1, flood_batch("flood", 0, n, now), now)])
        new = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.write([IncomingBatch("flood", 1, 2, flood_batch("flood", 0, n, now + 1), now)])
        known = time.perf_counter() - t0
        store.close()
        out[n] = {"new_series_per_s": round(n / new), "seconds_new": round(new, 3),
                  "seconds_known": round(known, 4), "ratio_new_over_known": round(new / known, 1)}
        print(f"{n:>6} new series in one write: {new:.3f} s ({n / new:,.0f} series/s); "
              f"same points, known series: {known:.4f} s; ratio {new / known:.1f}", flush=True)
    return out


class Quiet(threading.Thread):
    """Sends one small batch every 100 ms and records send -> committed-ack latency per seq."""

    def __init__(self, cfg, ctx: zmq.Context) -> None:
        super().__init__(daemon=True)
        server = load_public(cfg.path(cfg.agent.server_public_key_path))
        keys = load_secret(cfg.path(cfg.agent.keys_dir) / "quiet.key_secret")
        self.pub = client_socket(ctx, zmq.PUB, server, keys)
        self.pub.connect(cfg.agent.aggregator_endpoint)
        self.sub = client_socket(ctx, zmq.SUB, server, keys)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"quiet\0")
        self.sub.connect(cfg.agent.ack_endpoint)
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        seq = 0
        next_send = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                seq += 1
                ts = int(time.time() * 1000)
                b = MetricsBatch(("bench_quiet_value",), ((),), np.zeros(1, np.uint32),
                                 np.zeros(1, np.uint32), np.ones(1), np.full(1, ts, np.int64))
                self.sent[seq] = time.monotonic()
                self.pub.send(encode(Envelope("metrics", "quiet", 1, seq, ts, b)))
                next_send += 0.1
            if self.sub.poll(10):
                _, frame = self.sub.recv_multipart()
                env = decode(frame)
                if env.body.level == "committed":
                    t = time.monotonic()
                    for lo, hi in env.body.ranges:
                        for s in range(lo, hi + 1):
                            self.acked.setdefault(s, t)

    def latencies(self, t_from: float, t_to: float) -> list[float]:
        return sorted(self.acked.get(s, t_to) - t for s, t in self.sent.items()
                      if t_from <= t < t_to)


def pct(xs: list[float], p: float) -> float:
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else -1.0


class Rss(threading.Thread):
    """Samples one process's resident memory every 50 ms; `peak(t0, t1)` in MiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.samples.append((time.monotonic(), self.proc.memory_info().rss))
            except psutil.Error:
                return

    def peak(self, t0: float, t1: float) -> float:
        xs = [r for t, r in self.samples if t0 <= t <= t1]
        return round(max(xs) / 2**20, 1) if xs else -1.0


def flood(tmp: Path, batches: int, per_batch: int, per_node: int, per_metric: int,
          writer_only: bool = False) -> dict:
    over: dict = {"aggregator": {"max_series_per_node": per_node,
                                 "max_series_per_metric": per_metric}}
    if writer_only:  # no alerting engine, no analytics bridge: the readers of every series
        over |= {"alerting": {"enabled": False},
                 "ai_settings": {"anomaly_detection_enabled": False,
                                 "predictive_analytics_enabled": False}}
    cfg_path = make_setup(tmp / "flood", **over)
    cfg = load_config(cfg_path)
    for n in ("flood", "quiet"):
        add_agent_key(cfg, n)
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip())
    agg = subprocess.Popen(PY + ["aggregator", "run", "--config", str(cfg_path)],
                           stdout=open(tmp / "agg.log", "ab"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    ctx = zmq.Context()
    try:
        end = time.monotonic() + 60
        while True:
            try:
                client.get("/api/v1/status")
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() > end:
                    raise SystemExit("aggregator did not come up") from None
                time.sleep(0.2)
        rss = Rss(agg.pid)
        rss.start()
        quiet = Quiet(cfg, ctx)
        quiet.start()
        fl = client_socket(ctx, zmq.PUB, load_public(cfg.path(cfg.agent.server_public_key_path)),
                           load_secret(cfg.path(cfg.agent.keys_dir) / "flood.key_secret"))
        fl.setsockopt(zmq.SNDHWM, 100_000)
        fl.connect(cfg.agent.aggregator_endpoint)
        acks = client_socket(ctx, zmq.SUB, load_public(cfg.path(cfg.agent.server_public_key_path)),
                             load_secret(cfg.path(cfg.agent.keys_dir) / "flood.key_secret"))
        acks.setsockopt(zmq.SUBSCRIBE, b"flood\0")
        acks.connect(cfg.agent.ack_endpoint)
        time.sleep(11.0)  # slow joiners; and a quiet baseline (10 s)
        now = int(time.time() * 1000)  # encoded first: the burst is what is measured
        frames = [encode(Envelope("metrics", "flood", 1, seq, now, flood_batch(
            "flood", (seq - 1) * per_batch, per_batch, now))) for seq in range(1, batches + 1)]
        t_flood = time.monotonic()
        base = quiet.latencies(t_flood - 10.0, t_flood)
        for frame in frames:
            fl.send(frame)
        answered: dict[str, set[int]] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if acks.poll(200):
                _, frame = acks.recv_multipart()
                env = decode(frame)
                got = answered.setdefault(env.body.level, set())
                for lo, hi in env.body.ranges:
                    got.update(range(lo, hi + 1))
            done = answered.get("committed", set()) | answered.get("rejected", set())
            if len(done) >= batches:
                break
        t_done = time.monotonic()
        time.sleep(3.0)
        quiet.stop.set()
        quiet.join(5)
        rss.stop.set()
        rss.join(5)
        during = quiet.latencies(t_flood, t_done)
        st = client.get("/api/v1/status")
        series = len(client.get("/api/v1/series", node="flood"))
        out = {"flood_batches": batches, "series_per_batch": per_batch,
               "flood_answered_secs": round(t_done - t_flood, 2),
               "flood_batches_committed": len(answered.get("committed", ())),
               "flood_batches_rejected": len(answered.get("rejected", ())),
               "flood_series_stored": series,
               "quiet_ms_before": {"p50": pct(base, .5), "p95": pct(base, .95),
                                   "max": pct(base, 1.0)},
               "quiet_ms_during": {"p50": pct(during, .5), "p95": pct(during, .95),
                                   "max": pct(during, 1.0)},
               "ingest": {k: v for k, v in st["ingest"].items()
                          if k in ("commits", "commit_seconds_avg", "rejected")},
               "commit_budget": {k: v for k, v in st.get("limits", {}).items()
                                 if k not in ("rejected_batches",)},
               "aggregator_rss_mib": {"before": rss.peak(t_flood - 1.0, t_flood),
                                      "peak_during": rss.peak(t_flood, t_done),
                                      "after": rss.peak(t_done + 2.0, t_done + 3.0)}}
        out["quiet_max_ratio_during_over_before"] = round(
            out["quiet_ms_during"]["max"] / max(0.1, out["quiet_ms_before"]["max"]), 1)
        interval = cfg.aggregator.commit_interval_ms
        out["commit_interval_ms"] = interval
        out["quiet_added_ms"] = {q: round(out["quiet_ms_during"][q] - out["quiet_ms_before"][q],
                                          1) for q in ("p50", "p95", "max")}
        out["within_one_interval"] = {q: out["quiet_added_ms"][q] <= interval
                                      for q in ("p95", "max")}
        return out
    finally:
        agg.send_signal(signal.SIGTERM)
        try:
            agg.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(agg.pid, signal.SIGKILL)
        ctx.destroy(linger=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flood-batches", type=int, default=100)
    ap.add_argument("--series-per-batch", type=int, default=1000)
    ap.add_argument("--max-series-per-node", type=int, default=0, help="0 = no limit")
    ap.add_argument("--max-series-per-metric", type=int, default=0, help="0 = no limit")
    ap.add_argument("--skip-creation", action="store_true", help="only the flood")
    ap.add_argument("--writer-only", action="store_true",
                    help="alerting and analytics off: isolates the ingest writer")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="legion-bench-card-"))
    results = {"creation": {} if args.skip_creation else creation_rate(tmp),
               "flood": flood(tmp, args.flood_batches, args.series_per_batch,
                              args.max_series_per_node, args.max_series_per_metric,
                              args.writer_only)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
