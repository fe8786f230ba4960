"""`RemoteWriteSink`: committed batches → durable on-disk queue → Prometheus remote-write 1.0.

    CommitGroups.commit  ─▶ SinkSet.write ─▶ DuckDB (exactly-once) ─▶ RemoteWriteSink.write
                                                                 encode · shard by series
                                                                 append to shard queue (disk)
                    shard thread ×N: read queue ─▶ snappy ─▶ HTTP POST ─▶ release

Each shard has its own queue, a bounded `Spool` (the agent's spool: one unbuffered write per
record, drop-oldest with counting, torn tails quarantined at open). A series always maps to the
same shard, so its samples leave in time order. A send that fails with a connection error, 5xx
or 429 is retried with exponential backoff (never dropped); any other 4xx rejects the request:
one with several series is split in halves and re-sent, so only the series the receiver refuses
are counted as rejected (with the status and its message) and the rest get through.
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cramjam

from legion.aggregator.sinks import prompb
from legion.aggregator.sinks.config import RemoteWriteConfig
from legion.aggregator.store import IncomingBatch, WriteResult
from legion.kernel.errors import LegionError
from legion.kernel.spool.spool import Spool

log = logging.getLogger("legion.aggregator.sinks.remote_write")

_COUNT = 4  # bytes of the sample count in front of each queued request
MAX_REASONS = 20
_RETRYABLE = frozenset({429}) | frozenset(range(500, 600))


class SinkError(LegionError):
    """A sink could not accept a batch durably (nothing is acked then)."""


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class RemoteWriteSink:
    """One remote-write destination: `write` queues durably, shard threads send."""

    kind = "remote_write"

    def __init__(self, cfg: RemoteWriteConfig, queue_dir: Path, *, ca_path: Path | None = None,
                 auth_header: str | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._url = urllib.parse.urlsplit(cfg.url)
        self._ssl = (ssl.create_default_context(cafile=str(ca_path) if ca_path else None)
                     if self._url.scheme == "https" else None)
        self._headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                         "User-Agent": "legion-monitor",
                         "X-Prometheus-Remote-Write-Version": "0.1.0", **dict(cfg.headers)}
        if auth_header:
            self._headers["Authorization"] = auth_header
        self._encoder = prompb.Encoder(cfg.shards)
        self._epoch = int(time.time() * 1000)  # a new epoch per run keeps queue keys unique
        self._seq = 0
        per_shard = max(cfg.queue_max_bytes // cfg.shards, 1 << 18)
        self._record_max = per_shard // 8  # a record never crowds its queue (big groups split)
        self._queues = [Spool(queue_dir / f"shard-{i:02d}", per_shard,
                              cfg.queue_sync_interval_ms, epoch=self._epoch)
                        for i in range(cfg.shards)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = [threading.Event() for _ in range(cfg.shards)]
        self._threads: list[threading.Thread] = []
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # samples, by reason

    def _add(self, key: str, n: int, into: Counter[str] | None = None) -> None:
        with self._lock:
            (self.counters if into is None else into)[key] += n

    # ---- writer thread -----------------------------------------------------------------
    def write(self, batches: Sequence[IncomingBatch]) -> WriteResult:
        """Queue the batches on disk (survives kill -9 on return); raise `SinkError` if not."""
        parts = self._encoder.encode(list(batches))
        now = int(time.time() * 1000)
        for shard, (req, n) in enumerate(parts):
            if not n:
                continue
            for chunk, k in self._records(req, n):
                with self._lock:
                    self._seq += 1
                    seq = self._seq
                if not self._queues[shard].append(seq, k.to_bytes(_COUNT, "little") + chunk,
                                                  ts_ms=now):
                    self._add("enqueue_errors_total", 1)
                    raise SinkError(f"sink {self.name}: cannot queue {k} samples on disk")
                self._add("samples_queued_total", k)
            self._wake[shard].set()
        return WriteResult(tuple(b.key for b in batches), ())

    def _records(self, req: bytes, n: int) -> list[tuple[bytes, int]]:
        """One queue record, or several (whole series each) when it would crowd the queue."""
        if len(req) <= self._record_max:
            return [(req, n)]
        out: list[tuple[bytes, int]] = []
        cur: list[bytes] = []
        size = 0
        for series in prompb.split_series(req):
            if cur and size + len(series) > self._record_max:
                chunk = b"".join(cur)
                out.append((chunk, prompb.count_samples(chunk)))
                cur, size = [], 0
            cur.append(series)
            size += len(series)
        chunk = b"".join(cur)
        out.append((chunk, prompb.count_samples(chunk)))
        return out

    def sync(self) -> None:
        """fsync every shard queue (called before agents are told they may free a batch)."""
        for q in self._queues:
            q.sync()

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start one sender thread per shard (idempotent)."""
        if self._threads:
            return
        for i in range(self.cfg.shards):
            t = threading.Thread(target=self._run, args=(i,), daemon=True,
                                 name=f"legion-sink-{self.name}-{i}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending (what is queued stays on disk for the next run) and close the queues."""
        self._stop.set()
        for w in self._wake:
            w.set()
        for t in self._threads:
            t.join(timeout)
        for q in self._queues:
            q.close()

    def stats(self) -> dict[str, Any]:
        """Counters (samples queued/sent/failed/retried/rejected/dropped) and gauges."""
        now = int(time.time() * 1000)
        depth = dropped = qbytes = 0
        oldest: int | None = None
        for q in self._queues:
            st = q.stats()
            depth += st["spool_records"]
            qbytes += st["spool_bytes"]
            dropped += st["batches_dropped_total"]
            keys = q.pending_keys()[:1]
            if keys and (oldest is None or keys[0][2] < oldest):
                oldest = keys[0][2]
        return {**{k: self.counters[k] for k in (
                    "samples_queued_total", "samples_sent_total", "samples_failed_total",
                    "samples_retried_total", "requests_total", "requests_outcome_unknown_total",
                    "enqueue_errors_total", "sender_errors_total")},
                "samples_rejected_total": sum(self.rejected.values()),
                "rejected": dict(self.rejected),
                "queue_records": depth, "queue_bytes": qbytes,
                "queue_dropped_records_total": dropped,
                "lag_seconds": 0.0 if oldest is None else max(0.0, (now - oldest) / 1000)}

    # ---- shard threads -----------------------------------------------------------------
    def _run(self, shard: int) -> None:
        conn: list[http.client.HTTPConnection | None] = [None]
        pending: deque[tuple[int, int]] = deque()
        try:
            while not self._stop.is_set():
                try:
                    self._step(shard, conn, pending)
                except Exception:  # noqa: BLE001 - a sender must never die: log, pause, go on
                    self._add("sender_errors_total", 1)
                    log.exception("event=sink_shard_error sink=%s shard=%d", self.name, shard)
                    pending.clear()
                    self._stop.wait(1.0)
        finally:
            if conn[0] is not None:
                conn[0].close()

    def _step(self, shard: int, conn: list[Any], pending: deque[tuple[int, int]]) -> None:
        """Send the next request's worth of queued records and release them once accepted."""
        q = self._queues[shard]
        if not pending:
            self._wake[shard].clear()
            pending.extend((e, s) for e, s, _ts in q.pending_keys())
            if not pending:
                self._wake[shard].wait(0.5)
                return
        keys, reqs, n = [], [], 0
        while pending and n < self.cfg.max_samples_per_send:
            key = pending.popleft()
            rec = q.read(*key)
            if rec is None:  # dropped by overflow (counted by the queue)
                continue
            keys.append(key)
            reqs.append(rec[_COUNT:])
            n += int.from_bytes(rec[:_COUNT], "little")
        if not keys or not self._deliver(conn, b"".join(reqs), n):
            return  # nothing readable, or stopping: what is unsent stays queued
        by_epoch: dict[int, list[tuple[int, int]]] = {}
        for e, s in keys:
            by_epoch.setdefault(e, []).append((s, s))
        for e, ranges in by_epoch.items():
            q.release(e, ranges)

    def _deliver(self, conn: list[Any], req: bytes, n: int) -> bool:
        """Send until accepted or rejected; False only when stopping first."""
        try:
            return self._send_retrying(conn, req, n)
        except _Rejected as exc:
            series = prompb.split_series(req)
            if len(series) == 1:
                reason = _bounded_reason(exc.status, exc.reason, self.rejected)
                self._add(reason, n, self.rejected)
                log.warning("event=remote_write_rejected sink=%s samples=%d reason=%r",
                            self.name, n, reason)
                return True
            half = len(series) // 2
            for part in (b"".join(series[:half]), b"".join(series[half:])):
                if not self._deliver(conn, part, prompb.count_samples(part)):
                    return False
            return True

    def _send_retrying(self, conn: list[Any], req: bytes, n: int) -> bool:
        body = bytes(cramjam.snappy.compress_raw(req))
        delay = self.cfg.min_backoff_secs
        while not self._stop.is_set():
            self._add("requests_total", 1)
            try:
                status, text = self._post(conn, body)
            except (OSError, http.client.HTTPException) as exc:
                status, text = 0, str(exc)
                if not isinstance(exc, ConnectionRefusedError):  # it may have been written
                    self._add("requests_outcome_unknown_total", 1)
                if conn[0] is not None:
                    conn[0].close()
                    conn[0] = None
            if 200 <= status < 300:
                self._add("samples_sent_total", n)
                return True
            if status and status not in _RETRYABLE:
                raise _Rejected(status, text.strip())
            self._add("samples_failed_total", n)
            self._add("samples_retried_total", n)
            log.debug("event=remote_write_retry sink=%s status=%d delay=%.2f error=%s",
                      self.name, status, delay, text[:200])
            self._stop.wait(delay)
            delay = min(delay * 2, self.cfg.max_backoff_secs)
        return False

    def _post(self, conn: list[Any], body: bytes) -> tuple[int, str]:
        if conn[0] is None:
            u = self._url
            assert u.hostname is not None  # the sinks config refuses a URL without a host
            if u.scheme == "https":
                conn[0] = http.client.HTTPSConnection(u.hostname, u.port,
                                                      timeout=self.cfg.timeout_secs,
                                                      context=self._ssl)
            else:
                conn[0] = http.client.HTTPConnection(u.hostname, u.port,
                                                     timeout=self.cfg.timeout_secs)
        path = self._url.path or "/"
        if self._url.query:
            path += "?" + self._url.query
        conn[0].request("POST", path, body=body, headers=self._headers)
        resp = conn[0].getresponse()
        text = resp.read().decode("utf-8", "replace")
        return resp.status, text


def _bounded_reason(status: int, text: str, known: Counter[str]) -> str:
    """A short reason label: the status and the message up to its first detail, at most
    `MAX_REASONS` distinct ones (then "other"), so a metric label stays bounded."""
    head = text.splitlines()[0] if text else ""
    for sep in (":", "{", ";", "("):
        head = head.split(sep, 1)[0]
    reason = f"{status} {head.strip()[:80]}".strip()
    if reason not in known and len(known) >= MAX_REASONS:
        return f"{status} other"
    return reason


def auth_header(cfg: RemoteWriteConfig, read: Callable[[str], str]) -> str | None:
    """The Authorization header from a bearer token file or basic auth (files read once)."""
    if cfg.bearer_token_file:
        return "Bearer " + read(cfg.bearer_token_file).strip()
    if cfg.basic_auth_username and cfg.basic_auth_password_file:  # the config pairs them
        pw = read(cfg.basic_auth_password_file).strip()
        raw = f"{cfg.basic_auth_username}:{pw}".encode()
        return "Basic " + base64.b64encode(raw).decode()
    return None
