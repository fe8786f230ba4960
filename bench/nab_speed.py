"""Incremental jobs per second per worker, the throughput issue 14 asks of a detector (>= 25).

A job is what the aggregator sends a worker for a live series: the model state of the last job
plus 60 new points (`legion.analytics.worker.process`, the worker's own code path: state
decoded, points scored, state encoded). Measured in this process on a noisy daily cycle at
5-minute steps after a cold job of `warm` points, as bench/analytics_throughput.py does.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from legion.analytics.worker import process
from legion.proto.jobs import Job

JOB_POINTS = 60


def incremental_jobs_per_s(name: str, warm: int = 2000, jobs: int = 20,
                           params: dict[str, Any] | None = None) -> float:
    """Jobs per second of `jobs` consecutive incremental jobs of 60 points each (`params`: the
    detector's constructor parameters, e.g. {"adaptive": True} for `art`)."""
    n = warm + JOB_POINTS * jobs
    rng = np.random.default_rng(0)
    t = np.arange(n)
    ts = 1_600_000_000_000 + t.astype(np.int64) * 300_000
    vals = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, n)
    res = process(Job("warm", "detect", "s", ts[:warm], vals[:warm], name, dict(params or {})))
    if not res.ok:
        raise RuntimeError(f"{name}: {res.error}")
    state = res.state
    t0 = time.perf_counter()
    for i in range(jobs):
        a = warm + JOB_POINTS * i
        res = process(Job(f"j{i}", "detect", "s", ts[a:a + JOB_POINTS], vals[a:a + JOB_POINTS],
                          name, state=state))
        state = res.state
    return jobs / (time.perf_counter() - t0)
