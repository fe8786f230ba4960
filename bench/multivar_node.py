"""The multivariate node detector against per-metric detectors on a synthetic node with faults.

    python bench/multivar_node.py [--seeds 3] [--days 14]

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

STEP_MS = 300_000
PER_DAY = 288
KINDS = ("spike", "decouple", "leak", "joint", "latency", "freeze")
NAMES = ("cpu", "load1", "mem", "disk", "rx", "resp")


def make_node(days: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """(ts_ms, x (n, 6), events [(kind, start, end)]) of one synthetic node."""
    rng = np.random.default_rng(seed)
    n = days * PER_DAY
    t = np.arange(n)
    day = np.sin(2 * np.pi * (t % PER_DAY) / PER_DAY - np.pi / 2)
    cpu = 35 + 20 * np.clip(day, -0.3, 1) + rng.normal(0, 3, n)
    cpu += np.convolve(rng.normal(0, 1.5, n), np.ones(6) / 6, "same")   # slow wander
    load = cpu / 25 + rng.normal(0, 0.08, n)
    mem = 55 + 3 * np.sin(2 * np.pi * t / (3 * PER_DAY)) + rng.normal(0, 0.4, n)
    disk = 40 + 0.002 * t + rng.normal(0, 0.05, n)
    rx = 2e6 * (0.5 + cpu / 60) * np.exp(rng.normal(0, 0.15, n))
    resp = 120 * np.exp(cpu / 40) + rng.normal(0, 8, n)
    x = np.c_[cpu, load, mem, disk, rx, resp]
    sd = np.std(x[:PER_DAY], axis=0)
    events: list[tuple[str, int, int]] = []
    taken = np.zeros(n, bool)
    for kind in KINDS * 2:
        length = {"spike": 1, "decouple": 12, "leak": 36, "joint": 24, "latency": 6,
                  "freeze": 36}[kind]
        while True:
            a = int(rng.integers(3 * PER_DAY, n - 100))
            if not taken[max(0, a - 150):a + length + 150].any():
                break
        b = a + length
        taken[a:b] = True
        if kind == "spike":
            x[a, 0] += 35
        elif kind == "decouple":
            x[a:b, 1] *= 2.5
        elif kind == "leak":
            x[a:b, 2] += 0.4 * np.arange(1, length + 1)
        elif kind == "joint":
            for j in (0, 1, 4, 5):
                x[a:b, j] += 1.5 * sd[j]
        elif kind == "latency":
            x[a:b, 5] *= 2.0
        else:
            x[a:b, [0, 1, 4]] = x[a - 1, [0, 1, 4]]
        events.append((kind, a, b))
    return np.int64(1_700_000_000_000) + t.astype(np.int64) * STEP_MS, x, sorted(
        events, key=lambda e: e[1])


def node_scores(name: str, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Node score per tick: `multivar` on the vector, others the max over per-metric scores."""
    if name == "multivar":
        return make_detector("multivar").score_matrix(ts, x)
    return np.max([make_detector(name).score(ts, x[:, j]) for j in range(x.shape[1])], axis=0)


def evaluate(scores: np.ndarray, events: list[tuple[str, int, int]], thr: float = 0.8
             ) -> tuple[dict[str, int], float]:
    """(detected events per kind, false alarms per day after the warm-up days)."""
    hit = dict.fromkeys(KINDS, 0)
    quiet = np.ones(len(scores), bool)
    quiet[:3 * PER_DAY] = False  # warm-up days are not scored either way
    for kind, a, b in events:
        hit[kind] += int(scores[a:b + 6].max() >= thr)
        quiet[a:b + 24] = False
    fa = float((scores[quiet] >= thr).sum()) / (quiet.sum() / PER_DAY)
    return hit, fa


def warm_up_alarms(scores: np.ndarray, thr: float = 0.8) -> int:
    """Points at or above thr in the first 3 days (no fault is injected there): what a new
    node costs in alerts while its detectors learn."""
    return int((scores[:3 * PER_DAY] >= thr).sum())


def main() -> None:
    """Run every detector on every seed and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--detectors", default="multivar,ensemble,mad")
    args = ap.parse_args()
    names = [d for d in args.detectors.split(",") if d in DETECTORS]
    total = {d: (dict.fromkeys(KINDS, 0), 0.0, 0.0, 0) for d in names}
    for seed in range(args.seeds):
        ts, x, events = make_node(args.days, seed)
        for d in names:
            t0 = time.perf_counter()
            s = node_scores(d, ts, x)
            el = time.perf_counter() - t0
            hit, fa = evaluate(s, events)
            h, f, e, w = total[d]
            total[d] = ({k: h[k] + hit[k] for k in KINDS}, f + fa / args.seeds, e + el,
                        w + warm_up_alarms(s))
    n_each = 2 * args.seeds
    print(f"{args.seeds} seeds x {args.days} days x 6 metrics; detected / {n_each} per kind "
          "at score >= 0.8")
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
