"""Analytics worker: PULL jobs from the aggregator, run them, PUSH results back (CurveZMQ).

    aggregator                               worker (any host, no database)
    PUSH bind analytics.jobs_bind    ──job──▶ PULL connect   ─┐ process(job) -> Result
    PULL bind analytics.results_bind ◀─res── PUSH connect   ◀─┘

Both aggregator sockets are Curve servers (ZAP allowlist of worker keys); the worker is a Curve
client with its own keypair. `process(job)` is a pure function of the job, so the aggregator may
re-dispatch a job whose result did not arrive in time and simply keep the first result per
job id. `run_pool` runs N worker processes (`legionctl analytics run --workers N`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from legion.analytics import models
from legion.analytics.config import WorkerSettings
from legion.kernel.curve import client_socket, create_keypair, load_public, load_secret
from legion.kernel.errors import LegionError
from legion.proto.jobs import Job, JobError, Result, decode_job, encode_result

log = logging.getLogger("legion.analytics.worker")
WORKER_KEY = "worker"


def process(job: Job, worker: str = "local") -> Result:
    """Run one job; failures become `ok=False` results (never exceptions)."""
    t0 = time.perf_counter()
    try:
        if job.kind == "detect":
            res = _detect(job, worker)
        else:
            res = _forecast(job, worker)
    except (LegionError, ValueError, KeyError, TypeError) as exc:
        res = Result(job.job_id, job.kind, job.series, False, worker, error=f"{exc}")
    res.elapsed_ms = (time.perf_counter() - t0) * 1000
    return res


def _detect(job: Job, worker: str) -> Result:
    from legion.analytics.detectors import make_detector

    params = dict(job.params)
    # Lifecycle (not detector parameters): retrain when the model's last retrain is older than
    # `retrain_ms` of data time, or now with `retrain_now`; data time keeps `process` pure.
    retrain_ms = int(params.pop("retrain_ms", 0) or 0)
    retrain_now = bool(params.pop("retrain_now", False))
    prev = models.loads(job.state) if job.state else None
    if prev is not None:
        if prev.name != job.model:
            raise ValueError(f"state is for {prev.name!r}, job asks for {job.model!r}")
        det = models.restore_detector(prev)
        start, first_ms, version = 0, prev.trained_from_ms, prev.version
        retrained_ms = prev.retrained_ms or prev.trained_from_ms
    else:
        det = make_detector(job.model, **params)
        start = min(max(job.warmup, 0), len(job.values))
        first_ms = int(job.ts_ms[0]) if len(job.ts_ms) else 0
        version, retrained_ms = 1, first_ms
    if job.values.ndim == 2:  # a node job: one row of metrics per tick
        score_matrix = getattr(det, "score_matrix", None)
        if score_matrix is None:
            raise ValueError(f"detector {job.model!r} scores single series, not node rows")
        scores = score_matrix(job.ts_ms, job.values)
    else:
        scores = det.score(job.ts_ms, job.values)
    last_ms = int(job.ts_ms[-1]) if len(job.ts_ms) else (prev.trained_to_ms if prev else 0)
    if len(job.ts_ms) and (retrain_now or (retrain_ms > 0 and last_ms - retrained_ms
                                           >= retrain_ms)):
        refit = getattr(det, "refit", None)
        if refit is not None and refit():
            version += 1
        retrained_ms = last_ms
    state = models.dumps(models.detector_record(det, first_ms, last_ms, version,
                                                retrained_ms=retrained_ms))
    return Result(job.job_id, job.kind, job.series, True, worker, ts_ms=job.ts_ms[start:],
                  scores=scores[start:], state=state)


def _forecast(job: Job, worker: str) -> Result:
    from legion.analytics.forecasters import AutoForecaster, make_forecaster, time_to_threshold

    if job.horizon <= 0:
        raise ValueError("forecast job needs horizon > 0")
    if len(job.values) < 2:
        raise ValueError("forecast job needs at least two points")
    model: Any = (AutoForecaster(horizon=job.horizon, **job.params) if job.model == "auto"
                  else make_forecaster(job.model, **job.params))
    fc = model.fit(job.ts_ms, job.values).predict(job.horizon)
    etas = []
    for thr in job.thresholds:
        e = time_to_threshold(fc, thr)
        etas.append({"threshold": thr, "eta_ms": e.eta_ms, "earliest_ms": e.earliest_ms,
                     "latest_ms": e.latest_ms, "text": e.describe(int(job.ts_ms[-1]))})
    return Result(job.job_id, job.kind, job.series, True, worker,
                  forecast={"ts_ms": fc.ts_ms, "mean": fc.mean, "lower": fc.lower,
                            "upper": fc.upper, "model": fc.model}, etas=etas)


class Worker:
    """One worker loop over two Curve client sockets; `start()`/`stop()` run it in a thread."""

    def __init__(self, jobs_endpoint: str, results_endpoint: str, server_public: bytes,
                 keypair: tuple[bytes, bytes], name: str = "worker",
                 ctx: zmq.Context[zmq.Socket[Any]] | None = None, poll_ms: int = 200) -> None:
        self.jobs_endpoint, self.results_endpoint = jobs_endpoint, results_endpoint
        self.server_public, self.keypair = server_public, keypair
        self.name, self.poll_ms = name, poll_ms
        self.ctx = ctx or zmq.Context.instance()
        self.stats = {"processed": 0, "failed": 0, "expired": 0, "bad_jobs": 0,
                      "results_dropped": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the loop in a background thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"analytics-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, deadline: float = 5.0) -> None:
        """Ask the loop to finish its current job and return (idempotent, safe before start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(deadline)
            self._thread = None

    def run(self) -> None:
        """The loop: receive a job, process it, send the result; until stop()."""
        pull = client_socket(self.ctx, zmq.PULL, self.server_public, self.keypair)
        push = client_socket(self.ctx, zmq.PUSH, self.server_public, self.keypair)
        pull.setsockopt(zmq.RCVHWM, 16)  # don't hoard jobs other workers could take
        push.setsockopt(zmq.SNDHWM, 1000)
        try:
            pull.connect(self.jobs_endpoint)
            push.connect(self.results_endpoint)
            while not self._stop.is_set():
                if not pull.poll(self.poll_ms):
                    continue
                data = pull.recv()
                try:
                    job = decode_job(data)
                except JobError as exc:
                    self.stats["bad_jobs"] += 1
                    log.warning("event=bad_job reason=%s", str(exc)[:200])
                    continue
                if job.deadline_ms and time.time() * 1000 > job.deadline_ms:
                    self.stats["expired"] += 1
                    continue
                res = process(job, self.name)
                self.stats["processed" if res.ok else "failed"] += 1
                try:
                    push.send(encode_result(res), zmq.NOBLOCK)
                except zmq.Again:
                    # The aggregator re-dispatches jobs without results; count, never block.
                    self.stats["results_dropped"] += 1
        finally:
            pull.close(0)
            push.close(0)


def worker_keys(settings: WorkerSettings) -> tuple[bytes, tuple[bytes, bytes]]:
    """(aggregator public key, worker keypair); the keypair is made if missing."""
    keys_dir = Path(settings.keys_dir)
    secret = keys_dir / f"{WORKER_KEY}.key_secret"
    if not secret.exists():
        create_keypair(keys_dir, WORKER_KEY, node="analytics-worker")
        log.info("event=worker_key_created path=%s (authorize %s.key on the aggregator)",
                 secret, WORKER_KEY)
    return load_public(Path(settings.server_public_key_path)), load_secret(secret)


def _serve(settings: WorkerSettings, name: str) -> None:
    server_public, keypair = worker_keys(settings)
    w = Worker(settings.jobs_endpoint, settings.results_endpoint,
               server_public, keypair, name=name, ctx=zmq.Context())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    w.start()
    stop.wait()
    w.stop()


def run_pool(settings: WorkerSettings, workers: int, stop: threading.Event | None = None) -> None:
    """Run `workers` worker processes until SIGINT/SIGTERM (or `stop` is set)."""
    from legion.analytics.forecasters import TORCH_NOTE

    worker_keys(settings)  # create the keypair once, before the children race for it
    if TORCH_NOTE:
        log.info("event=note %s", TORCH_NOTE)
    ctx = mp.get_context("spawn")
    done = stop or threading.Event()
    if stop is None:  # before the children start: a Ctrl-C during start-up stops cleanly too
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
    procs = [ctx.Process(target=_serve, args=(settings, f"w{i}"), daemon=True)
             for i in range(max(1, workers))]
    for p in procs:
        p.start()
    log.info("event=started workers=%d jobs=%s results=%s", len(procs),
             settings.jobs_endpoint, settings.results_endpoint)
    try:
        while not done.wait(1.0):
            for i, p in enumerate(procs):
                if not p.is_alive():  # a crashed worker is replaced; its job is re-dispatched
                    log.warning("event=worker_restart name=w%d exitcode=%s", i, p.exitcode)
                    procs[i] = ctx.Process(target=_serve, args=(settings, f"w{i}"),
                                           daemon=True)
                    procs[i].start()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)
