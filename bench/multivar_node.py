"""The multivariate node detector against per-metric detectors on a synthetic node with faults.

    python bench/multivar_node.py [--seeds 3] [--days 14] [--step 300] [--bucket S --agg max]

A node with six metrics at a 5-minute step (daily cycle, realistic couplings): cpu %, load1
(follows cpu), memory % (slow drift), disk % (slow growth), network rx (follows cpu, noisy), p95
response time (grows with cpu). After 3 days of normal data, faults are injected (each kind
twice per seed, at random places, never overlapping):

    spike      cpu +35 for 1 point              (visible on one metric alone)
    decouple   load1 x2.5 while cpu is normal, 12 points   (a broken relation)
    leak       memory ramps +0.4 per point for 36 points   (gradual)
    joint      cpu, load, rx, response +1.5 sigma each for 24 points (small on each metric)
    latency    response time x2 with cpu normal, 6 points
    freeze     cpu, load and rx frozen at their last value for 36 points (an agent/exporter stall)

`--step` samples the same node every that many seconds instead (the live agents' default is 1 s):
the daily cycle, the slow wander and every fault keep their length in time (a leak ramps over 3
hours at any step), only the spike stays one point; the noise stays per point. `--bucket` feeds
the detectors the `--agg` (max or mean) of each bucket of that many seconds instead of every
sample, and scores the faults on the buckets they fall in (what detecting on fixed-step buckets
would give a node that samples every `--step` seconds).

Every detector runs causally with its default parameters (no labels, nothing tuned per seed):
`multivar` on the node's 6-vector, and `ensemble` / `mad` per metric with the node score = the max
over the metrics. An event counts as detected when the node score reaches 0.8 (the default
`ai_confidence_threshold`) between its start and 6 points after its end; false alarms are points
>= 0.8 outside events (and outside 24 points after each), per day of data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from legion.analytics.detectors import DETECTORS, make_detector

REF_STEP_S = 300  # the step every length below is written in (points of 5 minutes)
DAY_S = 86_400
KINDS = ("spike", "decouple", "leak", "joint", "latency", "freeze")
NAMES = ("cpu", "load1", "mem", "disk", "rx", "resp")


def make_node(days: int, seed: int, step_s: int = REF_STEP_S
              ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """(ts_ms, x (n, 6), events [(kind, start, end)]) of one synthetic node sampled every
    `step_s` seconds."""
    rng = np.random.default_rng(seed)
    k = REF_STEP_S // step_s  # points per 5 minutes
    per_day = DAY_S // step_s
    n = days * per_day
    t = np.arange(n)
    day = np.sin(2 * np.pi * (t % per_day) / per_day - np.pi / 2)
    cpu = 35 + 20 * np.clip(day, -0.3, 1) + rng.normal(0, 3, n)
    cpu += np.convolve(rng.normal(0, 1.5, n), np.ones(6 * k) / (6 * k), "same")   # slow wander
    load = cpu / 25 + rng.normal(0, 0.08, n)
    mem = 55 + 3 * np.sin(2 * np.pi * t / (3 * per_day)) + rng.normal(0, 0.4, n)
    disk = 40 + 0.002 * t / k + rng.normal(0, 0.05, n)
    rx = 2e6 * (0.5 + cpu / 60) * np.exp(rng.normal(0, 0.15, n))
    resp = 120 * np.exp(cpu / 40) + rng.normal(0, 8, n)
    x = np.c_[cpu, load, mem, disk, rx, resp]
    sd = np.std(x[:per_day], axis=0)
    events: list[tuple[str, int, int]] = []
    taken = np.zeros(n, bool)
    for kind in KINDS * 2:
        length = 1 if kind == "spike" else k * {"decouple": 12, "leak": 36, "joint": 24,
                                                  "latency": 6, "freeze": 36}[kind]
        for _ in range(10_000):
            a = int(rng.integers(3 * per_day, n - 100 * k))
            if not taken[max(0, a - 150 * k):a + length + 150 * k].any():
                break
        else:
            raise SystemExit(f"{days} days leave no room for 12 faults 150 x 5 minutes apart: "
                             "use more --days")
        b = a + length
        taken[a:b] = True
        if kind == "spike":
            x[a, 0] += 35
        elif kind == "decouple":
            x[a:b, 1] *= 2.5
        elif kind == "leak":
            x[a:b, 2] += 0.4 / k * np.arange(1, length + 1)
        elif kind == "joint":
            for j in (0, 1, 4, 5):
                x[a:b, j] += 1.5 * sd[j]
        elif kind == "latency":
            x[a:b, 5] *= 2.0
        else:
            x[a:b, [0, 1, 4]] = x[a - 1, [0, 1, 4]]
        events.append((kind, a, b))
    return np.int64(1_700_000_000_000) + t.astype(np.int64) * step_s * 1000, x, sorted(
        events, key=lambda e: e[1])


def node_scores(name: str, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Node score per tick: `multivar` on the vector, others the max over per-metric scores."""
    if name == "multivar":
        return make_detector("multivar").score_matrix(ts, x)
    return np.max([make_detector(name).score(ts, x[:, j]) for j in range(x.shape[1])], axis=0)


def evaluate(scores: np.ndarray, events: list[tuple[str, int, int]], thr: float = 0.8,
             step_s: int = REF_STEP_S) -> tuple[dict[str, int], float]:
    """(detected events per kind, false alarms per day after the warm-up days)."""
    k, per_day = REF_STEP_S // step_s, DAY_S // step_s
    hit = dict.fromkeys(KINDS, 0)
    quiet = np.ones(len(scores), bool)
    quiet[:3 * per_day] = False  # warm-up days are not scored either way
    for kind, a, b in events:
        hit[kind] += int(scores[a:b + 6 * k].max() >= thr)
        quiet[a:b + 24 * k] = False
    fa = float((scores[quiet] >= thr).sum()) / (quiet.sum() / per_day)
    return hit, fa


def warm_up_alarms(scores: np.ndarray, thr: float = 0.8, step_s: int = REF_STEP_S) -> int:
    """Points at or above thr in the first 3 days (no fault is injected there): what a new
    node costs in alerts while its detectors learn."""
    return int((scores[:3 * DAY_S // step_s] >= thr).sum())


def bucketed(ts: np.ndarray, x: np.ndarray, events: list[tuple[str, int, int]], m: int,
             agg: str) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """The node in buckets of m samples (timestamp = the bucket's last sample; `agg` = "max" or
    "mean" per metric) and its faults in bucket indices (every bucket a fault touches)."""
    n = len(ts) // m * m
    b = x[:n].reshape(-1, m, x.shape[1])
    v = b.max(axis=1) if agg == "max" else b.mean(axis=1)
    return ts[m - 1:n:m], v, [(k, a // m, (e - 1) // m + 1) for k, a, e in events]


def main() -> None:
    """Run every detector on every seed and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--detectors", default="multivar,ensemble,mad")
    ap.add_argument("--step", type=int, default=REF_STEP_S,
                    help="seconds between samples; a divisor of 300")
    ap.add_argument("--bucket", type=int, default=0,
                    help="detect on buckets of this many seconds (a multiple of --step "
                         "dividing 300); 0: every sample")
    ap.add_argument("--agg", choices=("max", "mean"), default="max")
    args = ap.parse_args()
    if args.step <= 0 or REF_STEP_S % args.step:
        raise SystemExit(f"--step must divide {REF_STEP_S}")
    if args.bucket and (args.bucket % args.step or REF_STEP_S % args.bucket):
        raise SystemExit(f"--bucket must be a multiple of --step that divides {REF_STEP_S}")
    scored_step = args.bucket or args.step
    names = [d for d in args.detectors.split(",") if d in DETECTORS]
    total = {d: (dict.fromkeys(KINDS, 0), 0.0, 0.0, 0) for d in names}
    for seed in range(args.seeds):
        ts, x, events = make_node(args.days, seed, args.step)
        if args.bucket:
            ts, x, events = bucketed(ts, x, events, args.bucket // args.step, args.agg)
        for d in names:
            t0 = time.perf_counter()
            s = node_scores(d, ts, x)
            el = time.perf_counter() - t0
            hit, fa = evaluate(s, events, step_s=scored_step)
            h, f, e, w = total[d]
            total[d] = ({k: h[k] + hit[k] for k in KINDS}, f + fa / args.seeds, e + el,
                        w + warm_up_alarms(s, step_s=scored_step))
    n_each = 2 * args.seeds
    print(f"{args.seeds} seeds x {args.days} days x 6 metrics every {args.step} s"
          + (f", detected on the {args.agg} of {args.bucket} s buckets" if args.bucket else "")
          + f"; detected / {n_each} per kind at score >= 0.8")
    print("| detector | " + " | ".join(KINDS)
          + " | all | false alarms/day | warm-up alarms/node | s |")
    print("|---|" + "---:|" * (len(KINDS) + 4))
    for d in names:
        h, f, e, w = total[d]
        print(f"| {d} | " + " | ".join(str(h[k]) for k in KINDS)
              + f" | {sum(h.values())}/{n_each * len(KINDS)} | {f:.2f} | {w / args.seeds:.1f}"
              f" | {e:.1f} |")


if __name__ == "__main__":
    main()
