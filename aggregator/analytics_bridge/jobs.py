"""Job bookkeeping of the analytics bridge: per-series detector state, pending jobs, re-dispatch.

The bridge (bridge.py) owns the sockets (PUSH bound at `analytics.jobs_bind`, PULL at
`analytics.results_bind`, both Curve servers); it hands `JobBook` a `send(bytes)` callable and
feeds it every result frame. Jobs are pure functions of their content, so a job whose result has
not arrived within `timeout_secs` is simply sent again (any worker may take it), up to
`max_attempts`; the first result per job id wins and duplicates are ignored.

    d = JobBook(push.send, timeout_secs=30)
    job = d.detect_job("node-3/cpu_usage_percent", ts, values)   # None if nothing new
    if job: d.submit(job)
    ...  res = d.on_result(pull.recv())   # Result to store, or None (duplicate / unknown)
    ...  d.resend_expired()               # call every analysis_interval

Model lifecycle: with `retrain_secs` every detect job asks the worker to retrain a series' model
once its last retrain is that old (in data time); `request_retrain(series)` forces it on that
series' next job (all series with None). With `models_dir`, every new state is written to
`models_dir/<folder>/<sha256 of series>.npz` (atomically, next to a `.series` file holding the
key) and loaded back at construction, so an aggregator restart continues each series' model.
`folder` is `detectors` for models of raw points and `detectors-<step>s` for models of bucket
maxima (`model_folder`): a model only ever continues on the rows it was trained on.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from legion.analytics import models
from legion.proto.jobs import Job, JobError, Result, decode_result, encode_job

log = logging.getLogger("legion.aggregator.analytics.jobs")


def model_folder(detect_step_secs: float) -> str:
    """The folder under `models_dir` of the detector models for this detect step."""
    return "detectors" if detect_step_secs == 0 else f"detectors-{int(detect_step_secs)}s"


@dataclass(slots=True)
class _Pending:
    job: Job
    frame: bytes
    sent_at: float
    attempts: int


class JobBook:
    """Tracks jobs in flight and the detector state of every series (no sockets, no threads)."""

    def __init__(self, send: Callable[[bytes], object], timeout_secs: float = 30.0,
                 max_attempts: int = 3, clock: Callable[[], float] = time.monotonic,
                 models_dir: str | Path | None = None, retrain_secs: float = 0.0,
                 folder: str = "detectors") -> None:
        self.send, self.timeout, self.max_attempts, self.clock = (send, timeout_secs,
                                                                  max_attempts, clock)
        self.pending: dict[str, _Pending] = {}
        self.state: dict[str, tuple[bytes, int]] = {}   # series -> (model file, last scored ts)
        self.in_flight: dict[str, str] = {}              # series -> job id (one detect at a time)
        self.stats = {"sent": 0, "resent": 0, "given_up": 0, "results": 0, "duplicates": 0,
                      "failed": 0, "bad_frames": 0, "models_loaded": 0, "bad_models": 0,
                      "models_saved": 0}
        self._ids = itertools.count(1)
        self.model_of: dict[str, str] = {}              # series -> detector name of its state
        self.retrain_secs = float(retrain_secs)
        self._retrain: set[str] = set()
        self.models_dir = Path(models_dir) / folder if models_dir else None
        if self.models_dir is not None:
            self.load_models()

    # ---- model files ------------------------------------------------------------------------
    def _model_path(self, series: str) -> Path:
        assert self.models_dir is not None
        return self.models_dir / (hashlib.sha256(series.encode()).hexdigest()[:40] + ".npz")

    def load_models(self) -> int:
        """Load every saved series state from `models_dir` (unreadable files are skipped)."""
        assert self.models_dir is not None
        n = 0
        for p in sorted(self.models_dir.glob("*.npz")):
            try:
                series = p.with_suffix(".series").read_text(encoding="utf-8")
                data = p.read_bytes()
                rec = models.loads(data)
            except (OSError, UnicodeDecodeError, models.ModelError) as exc:
                log.warning("event=model_unreadable path=%s error=%s", p, exc)
                self.stats["bad_models"] += 1
                continue
            self.state[series] = (data, rec.trained_to_ms)
            self.model_of[series] = rec.name
            n += 1
        self.stats["models_loaded"] += n
        return n

    def _save_model(self, series: str, data: bytes) -> None:
        p = self._model_path(series)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            key = p.with_suffix(".series")
            if not key.exists():
                key.write_text(series, encoding="utf-8")
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
            self.stats["models_saved"] += 1
        except OSError as exc:  # a full disk must not stop scoring
            log.warning("event=model_save_failed series=%s error=%s", series, exc)

    def request_retrain(self, series: str | None = None) -> None:
        """Retrain on the next detect job of `series` (None: of every series)."""
        if series is None:  # series without a state yet get a fresh model anyway
            self._retrain.update(list(self.state))
        else:
            self._retrain.add(series)

    def detect_job(self, series: str, ts_ms: np.ndarray, values: np.ndarray,
                   model: str = "ensemble", warmup: int = 0) -> Job | None:
        """A detect job for the points after the series' last scored one (None: nothing to do)."""
        if series in self.in_flight:
            return None  # keep a series' jobs in order: its state chains job to job
        ts = np.asarray(ts_ms, np.int64)
        v = np.asarray(values, float)
        st = self.state.get(series)
        if st is not None and self.model_of.get(series, model) != model:
            st = None  # the configured detector changed: start a fresh model for this series
        if st is not None:
            keep = ts > st[1]
            ts, v = ts[keep], v[keep]
        if len(ts) == 0:
            return None
        params: dict[str, object] = {}
        if self.retrain_secs > 0:
            params["retrain_ms"] = int(self.retrain_secs * 1000)
        if series in self._retrain:
            params["retrain_now"] = True
            self._retrain.discard(series)
        return Job(f"d{next(self._ids)}", "detect", series, ts, v, model, params=params,
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
                self.model_of[p.job.series] = p.job.model
                if self.models_dir is not None:
                    self._save_model(p.job.series, res.state)
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
