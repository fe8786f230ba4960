"""Aggregator-side job bookkeeping: per-series detector state, pending jobs, timeouts, re-dispatch.

The aggregator owns the sockets (PUSH bound at `analytics.jobs_bind`, PULL at
`analytics.results_bind`, both Curve servers); it hands `Dispatcher` a `send(bytes)` callable and
feeds it every result frame. Jobs are pure functions of their content, so a job whose result has
not arrived within `timeout_secs` is simply sent again (any worker may take it), up to
`max_attempts`; the first result per job id wins and duplicates are ignored.

    d = Dispatcher(push.send, timeout_secs=30)
    job = d.detect_job("node-3/cpu_usage_percent", ts, values)   # None if nothing new
    if job: d.submit(job)
    ...  res = d.on_result(pull.recv())   # Result to store, or None (duplicate / unknown)
    ...  d.resend_expired()               # call every analysis_interval
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from legion.analytics.jobs import Job, JobError, Result, decode_result, encode_job


@dataclass(slots=True)
class _Pending:
    job: Job
    frame: bytes
    sent_at: float
    attempts: int


class Dispatcher:
    """Tracks jobs in flight and the detector state of every series (no sockets, no threads)."""

    def __init__(self, send: Callable[[bytes], object], timeout_secs: float = 30.0,
                 max_attempts: int = 3, clock: Callable[[], float] = time.monotonic) -> None:
        self.send, self.timeout, self.max_attempts, self.clock = (send, timeout_secs,
                                                                  max_attempts, clock)
        self.pending: dict[str, _Pending] = {}
        self.state: dict[str, tuple[bytes, int]] = {}   # series -> (model file, last scored ts)
        self.in_flight: dict[str, str] = {}              # series -> job id (one detect at a time)
        self.stats = {"sent": 0, "resent": 0, "given_up": 0, "results": 0, "duplicates": 0,
                      "failed": 0, "bad_frames": 0}
        self._ids = itertools.count(1)

    def detect_job(self, series: str, ts_ms: np.ndarray, values: np.ndarray,
                   model: str = "ensemble", warmup: int = 0) -> Job | None:
        """A detect job for the points after the series' last scored one (None: nothing to do)."""
        if series in self.in_flight:
            return None  # keep a series' jobs in order: its state chains job to job
        ts = np.asarray(ts_ms, np.int64)
        v = np.asarray(values, float)
        st = self.state.get(series)
        if st is not None:
            keep = ts > st[1]
            ts, v = ts[keep], v[keep]
        if len(ts) == 0:
            return None
        return Job(f"d{next(self._ids)}", "detect", series, ts, v, model,
                   state=st[0] if st else None, warmup=0 if st else warmup)

    def forecast_job(self, series: str, ts_ms: np.ndarray, values: np.ndarray, horizon: int,
                     thresholds: list[float] | None = None, model: str = "auto") -> Job:
        """A forecast job (stateless)."""
        return Job(f"f{next(self._ids)}", "forecast", series, np.asarray(ts_ms, np.int64),
                   np.asarray(values, float), model, horizon=horizon,
                   thresholds=list(thresholds or []))

    def submit(self, job: Job) -> None:
        """Send a job and remember it until its result arrives."""
        frame = encode_job(job)
        self.pending[job.job_id] = _Pending(job, frame, self.clock(), 1)
        if job.kind == "detect":
            self.in_flight[job.series] = job.job_id
        self.send(frame)
        self.stats["sent"] += 1

    def on_result(self, data: bytes) -> Result | None:
        """Accept a result frame; returns it when it is the first for a job we sent."""
        try:
            res = decode_result(data)
        except JobError:
            self.stats["bad_frames"] += 1
            return None
        p = self.pending.pop(res.job_id, None)
        if p is None:
            self.stats["duplicates"] += 1
            return None
        self.stats["results"] += 1
        if p.job.kind == "detect":
            self.in_flight.pop(p.job.series, None)
            if res.ok and res.state is not None:
                last = int(p.job.ts_ms[-1])
                self.state[p.job.series] = (res.state, last)
        if not res.ok:
            self.stats["failed"] += 1
        return res

    def resend_expired(self) -> int:
        """Send again every job older than the timeout; give up after max_attempts."""
        now = self.clock()
        n = 0
        for jid, p in list(self.pending.items()):
            if now - p.sent_at < self.timeout:
                continue
            if p.attempts >= self.max_attempts:
                del self.pending[jid]
                self.in_flight.pop(p.job.series, None)
                self.stats["given_up"] += 1
                continue
            p.attempts += 1
            p.sent_at = now
            self.send(p.frame)
            self.stats["resent"] += 1
            n += 1
        return n
