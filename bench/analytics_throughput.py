"""Analytics throughput: windows scored per second per worker, and the pool from 1 to 2 workers.

    python bench/analytics_throughput.py [--jobs 40] [--points 300]

1. In-process `process(job)` rate per detector, for incremental jobs (state shipped, 60 new
   points) and cold jobs (no state, `--points` points of which the last 60 are returned).
2. Real pool: N worker processes on CurveZMQ sockets; the time to drain `--jobs` cold ensemble
   jobs with 1 and with 2 workers (ratio = scaling; bounded by the cores actually free).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from legion.analytics.worker import Worker, process
from legion.kernel.curve import create_keypair, load_secret
from legion.proto.jobs import Job, decode_result, encode_job


def series(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy daily cycle at 5-minute steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (1_600_000_000_000 + t.astype(np.int64) * 300_000,
            50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, n))


def in_process(detectors: list[str], points: int, reps: int = 5) -> None:
    """Print jobs/s and points/s for incremental and cold jobs."""
    ts, v = series(points + 60 * reps)
    print(f"{'detector':<10}{'incremental jobs/s':>20}{'points/s':>10}{'cold jobs/s':>14}")
    for name in detectors:
        warm = process(Job("w", "detect", "s", ts[:points], v[:points], name))
        t0 = time.perf_counter()
        st = warm.state
        for i in range(reps):
            a = points + 60 * i
            st = process(Job("i", "detect", "s", ts[a:a + 60], v[a:a + 60], name, state=st)).state
        inc = reps / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(2):
            process(Job("c", "detect", "s", ts[:points], v[:points], name, warmup=points - 60))
        cold = 2 / (time.perf_counter() - t0)
        print(f"{name:<10}{inc:20.1f}{inc * 60:10.0f}{cold:14.2f}")


def _serve(jobs_ep: str, res_ep: str, server_pub: bytes, secret_path: str, name: str) -> None:
    w = Worker(jobs_ep, res_ep, server_pub, load_secret(Path(secret_path)), name=name,
               ctx=zmq.Context(), poll_ms=50)
    w.run()


def pool(workers: int, n_jobs: int, points: int) -> float:
    """Seconds to get results for n_jobs cold ensemble jobs with `workers` processes."""
    with tempfile.TemporaryDirectory() as d:
        _, srv_sec = create_keypair(Path(d), "aggregator")
        _, w_sec = create_keypair(Path(d), "worker")
        ctx = zmq.Context()
        pub, sec = load_secret(srv_sec)
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        for s in (push, pull):
            s.curve_publickey, s.curve_secretkey, s.curve_server = pub, sec, True
            s.setsockopt(zmq.LINGER, 0)
        jp = push.bind_to_random_port("tcp://127.0.0.1")
        rp = pull.bind_to_random_port("tcp://127.0.0.1")
        mpc = mp.get_context("spawn")
        procs = [mpc.Process(target=_serve, args=(f"tcp://127.0.0.1:{jp}",
                                                  f"tcp://127.0.0.1:{rp}", pub, str(w_sec),
                                                  f"w{i}"), daemon=True)
                 for i in range(workers)]
        for p in procs:
            p.start()
        ts, v = series(points)
        # Warm up until every worker has answered: PUSH hands a burst only to the peers already
        # connected, so timing before the last worker's Curve handshake measures one worker.
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(seen)} of {workers} workers connected")
            for i in range(workers):
                push.send(encode_job(Job(f"warm{i}", "detect", "s", ts[:50], v[:50], "mad")))
            for _ in range(workers):
                seen.add(decode_result(pull.recv()).worker)
            time.sleep(0.1)
        t0 = time.perf_counter()
        for i in range(n_jobs):
            push.send(encode_job(Job(f"j{i}", "detect", f"s{i}", ts, v, "ensemble",
                                     warmup=points - 60)))
        got = 0
        while got < n_jobs:
            if pull.poll(60_000):
                assert decode_result(pull.recv()).ok
                got += 1
            else:
                raise SystemExit("workers stalled")
        dt = time.perf_counter() - t0
        for p in procs:
            p.terminate()
            p.join(5)
        push.close()
        pull.close()
        ctx.term()
        return dt


def main(argv: list[str] | None = None) -> int:
    """Run both measurements."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--points", type=int, default=600)
    ap.add_argument("--detectors", default="mad,knn,shift,ensemble,iforest")
    a = ap.parse_args(argv)
    in_process(a.detectors.split(","), a.points)
    t1 = pool(1, a.jobs, a.points)
    t2 = pool(2, a.jobs, a.points)
    print(f"pool, {a.jobs} cold ensemble jobs of {a.points} points over CurveZMQ:")
    print(f"  1 worker : {t1:6.2f} s  {a.jobs / t1:6.1f} windows/s")
    print(f"  2 workers: {t2:6.2f} s  {a.jobs / t2:6.1f} windows/s  scaling x{t1 / t2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
