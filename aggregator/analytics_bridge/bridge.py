"""Feeds the analytics worker pool: windows out over PUSH, scores and forecasts back over PULL.

Every `analysis_interval` the dispatcher sends a detect job for each watched series that has new
rows (only the new rows plus the detector state from the previous result, so any worker can take
any job). The rows are the maxima of whole `analytics.detect_step_secs` buckets (bucketed.py,
default 300 s: the time scale the detectors were measured on), or with a step of 0 the raw points
(a series with no point newer than its last job is not even read: new_points.py);
every `analytics.forecast_interval_secs` a forecast job per `prediction_config` entry. The job
bookkeeping (state per series, jobs in flight, re-dispatch after `analytics.job_timeout_secs`,
first result wins) is `JobBook` (jobs.py), which series are analysed and the store queries that
build their jobs are watched.py; this module adds the sockets, the loop and what becomes of
results.

Results become ordinary series of node `analytics` (so they are stored, rolled up, retained and
queried like everything else): `legion_anomaly_score` and `legion_anomaly_flag` (1 when the score
reaches `analytics.anomaly_threshold`) with labels `node`, `metric` plus the source series' own
labels. The anomaly rate of a series over a range is the average of its flag.

With `ai_settings.ml_threshold_adjustment` the bridge also keeps a learned normal band per watched
series (`BandBook`, band_book.py, `self.bands`): recomputed from the store every
`ai_settings.model_retrain_interval` and on `request_retrain`, saved in
`analytics.models_dir/bands`, reloaded at construction, read by the gateway's `/api/v1/bands`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.analytics_bridge.band_book import BandBook
from legion.aggregator.analytics_bridge.bucketed import BucketedDetect
from legion.aggregator.analytics_bridge.jobs import JobBook, model_folder
from legion.aggregator.analytics_bridge.new_points import NewPoints
from legion.aggregator.analytics_bridge.watched import (
    ANALYTICS_NODE,
    Known,
    WatchedSeries,
    schedule_detect,
    schedule_forecasts,
    schedule_node_detect,
    select_watched,
)
from legion.aggregator.config import AggregatorSettings as Config
from legion.aggregator.store import IncomingBatch, Store
from legion.kernel.curve import server_socket
from legion.proto import MetricsBatch, Sample, canonical_labels
from legion.proto.jobs import Result

log = logging.getLogger("legion.aggregator.analytics")

WORKER_DOMAIN = b"workers"
BAND_BUDGET_SECS = 0.5  # band work per analysis_interval tick (the rest waits for the next)
SLICE_PAUSE_SECS = 0.1  # between detect passes while series are left over from the last
WORKER_POLL_SECS = 0.5
"""With a worker connected, the loop wakes at least this often (job re-dispatch); without one,
only when a pass is due or `stop` wakes it (idle: ~10 wake-ups per analysis_interval were most
of this thread's CPU, issue 17)."""


@dataclass
class BridgeStats:
    """What the bridge counts besides the job bookkeeping."""

    points_scored: int = 0
    anomalies: int = 0
    passes_without_worker: int = 0  # detect/forecast passes skipped: no worker connected
    wakeups: int = 0  # of the loop (idle, without a worker: one per due pass)
    by_worker: dict[str, int] = field(default_factory=dict)


class AnalyticsBridge(threading.Thread):
    """Owns the jobs PUSH and results PULL sockets; hands result series to `submit`."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]], config: Config,
                 keypair: tuple[bytes, bytes], store: Store,
                 submit: Callable[[IncomingBatch], None]) -> None:
        super().__init__(name="legion-analytics-bridge", daemon=True)
        self._ctx, self._cfg, self._keypair = ctx, config, keypair
        self._store, self._submit = store, submit
        self._stopping = threading.Event()
        self._wake_addr = f"inproc://legion-analytics-bridge-wake-{id(self):x}"
        self._series: Known = {}
        self.news = NewPoints(store, select_watched)  # watched set and what each series took
        self._epoch = int(time.time() * 1000)
        self._seq = 0
        self._lock = threading.Lock()
        self._anomalies: deque[dict[str, Any]] = deque(maxlen=500)
        self._forecasts: dict[str, dict[str, Any]] = {}
        self._book: JobBook | None = None
        self._bucketed: BucketedDetect | None = None  # with analytics.detect_step_secs
        self.counters = BridgeStats()
        self.ready = threading.Event()
        self.bind_error: Exception | None = None
        ai, acfg = config.ai_settings, config.analytics
        # Learned normal bands (loaded here, so a restarted aggregator serves them at once).
        self.bands: BandBook | None = BandBook(
            store, Path(acfg.models_dir), retrain_secs=ai.model_retrain_interval,
            days=acfg.band_days, step_ms=int(acfg.band_step_secs * 1000)
        ) if ai.ml_threshold_adjustment else None

    def stats(self) -> dict[str, Any]:
        """Job bookkeeping counters plus points scored, anomalies found, results per worker,
        and the scheduling reads (`scheduling`: watched series, nodes, series read)."""
        out: dict[str, Any] = dict(self._book.stats) if self._book else {}
        out["scheduling"] = dict(self.news.stats())
        if self._bucketed is not None:
            out["scheduling"]["stepped_reads"] = self._bucketed.queries
        out.update(dataclasses.asdict(self.counters))
        if self.bands is not None:
            out["bands"] = {**self.bands.stats, "series": len(self.bands.entries())}
        return out

    # ---- read side (gateway threads) ------------------------------------------------------
    def recent_anomalies(self) -> list[dict[str, Any]]:
        """Newest anomalous points (score >= threshold), newest first."""
        with self._lock:
            return list(reversed(self._anomalies))

    def forecasts(self) -> list[Mapping[str, Any]]:
        """The latest forecast of every predicted series."""
        with self._lock:
            return list(self._forecasts.values())

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            jobs = server_socket(self._ctx, zmq.PUSH, self._keypair)
            jobs.setsockopt(zmq.ZAP_DOMAIN, WORKER_DOMAIN)
            jobs.setsockopt(zmq.SNDHWM, 1000)
            jobs.bind(self._cfg.analytics.jobs_bind)
            results = server_socket(self._ctx, zmq.PULL, self._keypair)
            results.setsockopt(zmq.ZAP_DOMAIN, WORKER_DOMAIN)
            results.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
            results.bind(self._cfg.analytics.results_bind)
        except zmq.ZMQError as exc:
            self.bind_error = exc
            self.ready.set()
            return
        wake = self._ctx.socket(zmq.PULL)
        wake.bind(self._wake_addr)
        poller = zmq.Poller()
        poller.register(results, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)

        def send(frame: bytes) -> None:
            try:
                jobs.send(frame, zmq.NOBLOCK)
            except zmq.Again:  # no worker connected or all busy: re-dispatched after timeout
                pass

        # Series models persist in analytics.models_dir (reloaded here after a restart) and are
        # retrained every ai_settings.model_retrain_interval of data time (legion.analytics).
        self._book = JobBook(send, timeout_secs=self._cfg.analytics.job_timeout_secs,
                             max_attempts=5,
                             models_dir=Path(self._cfg.analytics.models_dir),
                             retrain_secs=self._cfg.ai_settings.model_retrain_interval,
                             folder=model_folder(self._cfg.analytics.detect_step_secs))
        acfg, ai = self._cfg.analytics, self._cfg.ai_settings
        if acfg.detect_step_secs > 0:
            self._bucketed = BucketedDetect(self._store, self.news, self._book, self._series,
                                            acfg)
        self.ready.set()
        never = float("inf")  # the next pass of what is switched off
        next_detect = (time.monotonic() + self._cfg.analysis_interval
                       if ai.anomaly_detection_enabled else never)
        next_forecast = (time.monotonic() + min(acfg.forecast_interval_secs, 30.0)
                         if ai.predictive_analytics_enabled else never)
        next_bands = time.monotonic() if self.bands is not None else never
        present = False
        try:
            while not self._stopping.is_set():
                # Results and `stop` wake the poll at once; otherwise sleep until the next due
                # pass (with a worker, at most WORKER_POLL_SECS: re-dispatch).
                due = min(next_detect, next_forecast, next_bands) - time.monotonic()
                wait = min(due, WORKER_POLL_SECS if present else 60.0)
                events = dict(poller.poll(int(1000 * max(0.02, wait))))
                self.counters.wakeups += 1
                if wake in events:
                    wake.recv(zmq.NOBLOCK)
                if results in events:
                    for _ in range(1000):
                        try:
                            self._on_result(results.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                now = time.monotonic()
                # No worker connected: a job would only wait in the book for its timeout and
                # burn its attempts, so detect, forecast and re-dispatch wait for one (issue 17:
                # no store reads for nobody). Bands are computed here and go on.
                present = worker_connected(jobs)
                if ai.anomaly_detection_enabled and now >= next_detect:
                    left = 0
                    if present:
                        left = self._guard(self._schedule_detect)
                        if acfg.node_detector != "off":
                            left += self._guard(self._schedule_node_detect)
                    else:
                        self.counters.passes_without_worker += 1
                    # Work left over (budget spent): the next slice soon, so that a big pass
                    # never holds the GIL against ingest for long in one go.
                    next_detect = now + (SLICE_PAUSE_SECS if left else self._cfg.analysis_interval)
                if ai.predictive_analytics_enabled and now >= next_forecast:
                    # Without a worker, try again at the next detect pass rather than a whole
                    # forecast interval later.
                    next_forecast = now + (acfg.forecast_interval_secs if present
                                           else self._cfg.analysis_interval)
                    if present:
                        self._guard(self._schedule_forecasts)
                    else:
                        self.counters.passes_without_worker += 1
                if self.bands is not None and now >= next_bands:
                    next_bands = now + self._cfg.analysis_interval
                    self._guard(self.refresh_bands)
                if present:
                    self._book.resend_expired()
        finally:
            jobs.close(0)
            results.close(0)
            wake.close(0)

    def request_retrain(self, series: str | None = None) -> bool:
        """Retrain a series' model (None: every series) on its next detect job, and recompute its
        band at the next band refresh; False if there is nothing to retrain yet."""
        if self._book is None and self.bands is None:
            return False
        # Only keys of watched series: the pending sets stay bounded by what is stored.
        if series is not None and series not in {k for k, _ in self.watched()}:
            raise LookupError(f"unknown series {series[:200]!r} (a key is node|metric|k=v,..."
                              " of a watched series)")
        if self._book is not None:
            self._book.request_retrain(series)
        if self.bands is not None:
            self.bands.request_retrain(series)
        return True

    def refresh_bands(self) -> int:
        """Recompute the due bands of the watched series (bounded work); how many were."""
        if self.bands is None:
            return 0
        return self.bands.refresh(((k, s.node, s.metric, s.labels) for k, s in self.watched()),
                                  budget_s=BAND_BUDGET_SECS)

    def watched(self) -> list[tuple[str, WatchedSeries]]:
        """(key, series) of every stored series watched for anomalies (watched.WATCHED)."""
        self.news.refresh()
        return [(key, s) for key, s, _ in self.news.watched]

    def stop(self) -> None:
        """Ask the loop to end (idempotent): wakes it from its poll."""
        self._stopping.set()
        wake = self._ctx.socket(zmq.PUSH)
        try:
            wake.connect(self._wake_addr)
            wake.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the loop has ended (or never started): nothing to wake
        finally:
            wake.close(linger=100)

    def _guard(self, fn: Callable[[], object]) -> int:
        """Run a pass; what it returns if an int (work left), else 0; failures logged."""
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - analytics must never take ingest down
            log.warning("event=schedule_failed error=%s", exc)
            return 0
        return out if isinstance(out, int) else 0

    def _schedule_detect(self) -> int:
        assert self._book is not None
        if self._bucketed is not None:
            return self._bucketed.schedule()
        return schedule_detect(self.news, self._book, self._series, self._cfg.analytics,
                        self._cfg.collection_interval)

    def _schedule_node_detect(self) -> int:
        assert self._book is not None
        if self._bucketed is not None:
            return self._bucketed.schedule_nodes()
        return schedule_node_detect(self.news, self._book, self._series, self._cfg.analytics,
                             self._cfg.collection_interval)

    def _schedule_forecasts(self) -> None:
        assert self._book is not None
        schedule_forecasts(self._store, self._book, self._series, self._cfg.analytics)

    def _on_result(self, data: bytes) -> None:
        assert self._book is not None
        res = self._book.on_result(data)
        if res is None:  # malformed, or a re-dispatched copy answered already: idempotent
            return
        self.counters.by_worker[res.worker] = self.counters.by_worker.get(res.worker, 0) + 1
        if not res.ok:
            log.warning("event=job_failed kind=%s series=%s error=%s", res.kind, res.series,
                        res.error[:200])
        elif res.kind == "detect":
            self._on_scores(res)
        else:
            self._on_forecast(res)

    def _on_scores(self, res: Result) -> None:
        s = self._series.get(res.series)
        if s is None:
            return
        thr = self._cfg.analytics.anomaly_threshold
        # a bucketed score is stamped at its bucket's start; the event also says when the bucket
        # ended, so "recent" is counted from there (the dashboard's halos), not 5 minutes early
        span_ms = int(self._cfg.analytics.detect_step_secs * 1000)
        labels = canonical_labels({**s.labels, "node": s.node, "metric": s.metric})
        samples = []
        for t, score in zip(res.ts_ms.tolist(), res.scores.tolist(), strict=True):
            score = min(1.0, max(0.0, float(score)))
            samples.append(Sample("legion_anomaly_score", labels, score, t))
            samples.append(Sample("legion_anomaly_flag", labels, float(score >= thr), t))
            if score >= thr:
                self.counters.anomalies += 1
                with self._lock:
                    self._anomalies.append({
                        "id": f"{res.series}|{t}", "node": s.node,
                        "agent_id": s.labels.get("agent_id"), "metric": s.metric,
                        "labels": s.labels, "score": round(score, 4), "ts_ms": t,
                        "end_ms": t + span_ms})
        self.counters.points_scored += len(res.ts_ms)
        if samples:
            self._seq += 1
            self._submit(IncomingBatch(ANALYTICS_NODE, self._epoch, self._seq,
                                       MetricsBatch.from_samples(samples), int(time.time() * 1000)))

    def _on_forecast(self, res: Result) -> None:
        key, name = res.series.rsplit("|", 1)
        node, metric, _ = key.split("|", 2)
        s = self._series.get(key)
        fc = res.forecast
        target = self._cfg.analytics.prediction_config.get(name)
        item = {"id": res.series, "node": node, "metric": metric, "name": name,
                "agent_id": s.labels.get("agent_id") if s else None,
                "model": fc.get("model"), "horizon_hours": target.horizon_hours if target else None,
                "threshold": target.alert_threshold if target else None,
                "predicted": _pairs(fc, "mean"), "lower": _pairs(fc, "lower"),
                "upper": _pairs(fc, "upper"),
                "etas": res.etas, "breach_at_ms": (res.etas[0].get("eta_ms") if res.etas else None),
                "made_ms": int(time.time() * 1000)}
        with self._lock:
            self._forecasts[res.series] = item


def worker_connected(jobs: zmq.Socket[Any]) -> bool:
    """Whether a job sent now has a worker to go to: a PUSH socket is writable only while at
    least one peer has completed its Curve handshake and has room (ZMQ_EVENTS)."""
    return bool(int(jobs.get(zmq.EVENTS)) & zmq.POLLOUT)


def _pairs(fc: dict[str, Any], field_name: str, every: int = 10) -> list[list[float]]:
    """[[ts_ms, value], ...] of a forecast column, thinned to every `every`-th step."""
    ts = np.asarray(fc.get("ts_ms", []))[::every]
    vals = np.asarray(fc.get(field_name, []))[::every]
    return [[int(t), round(float(v), 3)] for t, v in zip(ts, vals, strict=False)]


def worker_registry(config: Config) -> KeyRegistry | None:
    """The allowlist of analytics worker keys, or None when there is none."""
    try:
        return KeyRegistry(Path(config.analytics.keys_dir))
    except Exception as exc:  # noqa: BLE001 - no worker keys: analytics stays off
        log.info("event=analytics_disabled reason=%s", exc)
        return None
