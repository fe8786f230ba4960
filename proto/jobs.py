"""Analytics job/result messages (msgpack, versioned, bounded) between aggregator and workers.

A job carries the *points* of one series, never SQL: timestamps and values as little-endian
int64/float64 bytes; a node job (`width` > 1) carries one row of `width` values per timestamp
(row-major), for the multivariate per-node detector. Detect jobs carry the detector's saved
state from the previous result (`state`, a model-file npz) so a worker scores only the new points
and any worker can take any job; without a state the first `warmup` points are history (scored
but not returned). Results carry the scores and the new state. Jobs are pure functions of their
content, so a re-dispatched job gives the same result (idempotent). Imported on its own
(`legion.proto.jobs`), not by `legion.proto`: it needs numpy, which the agent's path never loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from legion.kernel.errors import LegionError

JOB_VERSION = 1
MAX_JOB_BYTES = 64 * 1024 * 1024
MAX_POINTS = 1_000_000
MAX_WIDTH = 64
"""Most values per row of a node job (metrics of one node)."""
KINDS = ("detect", "forecast")


class JobError(LegionError):
    """A job or result frame that cannot be decoded or is out of bounds."""


@dataclass(slots=True)
class Job:
    """One unit of work for one series."""

    job_id: str
    kind: str                       # "detect" | "forecast"
    series: str                     # opaque series key chosen by the aggregator
    ts_ms: np.ndarray
    values: np.ndarray              # one value per timestamp, or rows of `width` (2-D)
    model: str = "ensemble"         # detector or forecaster table name
    params: dict[str, Any] = field(default_factory=dict)
    state: bytes | None = None      # detect: model-file bytes from the previous result
    warmup: int = 0                 # detect without state: leading points that are history only
    horizon: int = 0                # forecast: steps ahead
    thresholds: list[float] = field(default_factory=list)  # forecast: time-to-threshold targets
    deadline_ms: int = 0            # 0 = none; a worker drops jobs already past their deadline


@dataclass(slots=True)
class Result:
    """The answer to one job (`ok=False` with `error` when it failed)."""

    job_id: str
    kind: str
    series: str
    ok: bool
    worker: str
    error: str = ""
    ts_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    state: bytes | None = None
    forecast: dict[str, Any] = field(default_factory=dict)   # ts_ms/mean/lower/upper, model
    etas: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: float = 0.0


def _arr(b: bytes, dtype: str, name: str) -> np.ndarray:
    if not isinstance(b, (bytes, bytearray)) or len(b) % 8:
        raise JobError(f"{name}: not a packed 8-byte array")
    a = np.frombuffer(b, dtype=dtype)
    if len(a) > MAX_POINTS:
        raise JobError(f"{name}: more than {MAX_POINTS} points")
    return a


def encode_job(job: Job) -> bytes:
    """Job -> msgpack bytes."""
    return msgpack.packb({
        "v": JOB_VERSION, "id": job.job_id, "kind": job.kind, "series": job.series,
        "ts": np.asarray(job.ts_ms, "<i8").tobytes(), "x": np.asarray(job.values, "<f8").tobytes(),
        "w": int(np.asarray(job.values).shape[1]) if np.ndim(job.values) == 2 else 1,
        "model": job.model, "params": job.params, "state": job.state, "warmup": job.warmup,
        "horizon": job.horizon, "thresholds": [float(t) for t in job.thresholds],
        "deadline_ms": job.deadline_ms}, use_bin_type=True)


def decode_job(data: bytes) -> Job:
    """msgpack bytes -> Job (JobError on anything malformed)."""
    if len(data) > MAX_JOB_BYTES:
        raise JobError("job too large")
    try:
        d = msgpack.unpackb(data, raw=False, max_bin_len=MAX_JOB_BYTES)
        if not isinstance(d, dict) or d.get("v") != JOB_VERSION:
            raise JobError(f"unknown job version {d.get('v') if isinstance(d, dict) else None!r}")
        if d["kind"] not in KINDS:
            raise JobError(f"unknown job kind {d['kind']!r}")
        ts, x = _arr(d["ts"], "<i8", "ts"), _arr(d["x"], "<f8", "x")
        width = d.get("w", 1)
        if not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
            raise JobError(f"width must be 1..{MAX_WIDTH} (got {width!r})")
        if len(ts) * width != len(x):
            raise JobError(f"x holds {len(x)} values, not {len(ts)} rows of {width}")
        if width > 1:
            x = x.reshape(len(ts), width)
        return Job(str(d["id"]), d["kind"], str(d["series"]), ts, x, str(d["model"]),
                   dict(d.get("params") or {}), d.get("state"), int(d.get("warmup", 0)),
                   int(d.get("horizon", 0)), [float(t) for t in d.get("thresholds", [])],
                   int(d.get("deadline_ms", 0)))
    except JobError:
        raise
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise JobError(f"bad job: {exc}") from exc


def encode_result(r: Result) -> bytes:
    """Result -> msgpack bytes."""
    fc = {k: (np.asarray(v).astype("<i8" if k == "ts_ms" else "<f8").tobytes()
              if isinstance(v, np.ndarray) else v) for k, v in r.forecast.items()}
    return msgpack.packb({
        "v": JOB_VERSION, "id": r.job_id, "kind": r.kind, "series": r.series, "ok": r.ok,
        "worker": r.worker, "error": r.error, "ts": np.asarray(r.ts_ms, "<i8").tobytes(),
        "scores": np.asarray(r.scores, "<f8").tobytes(), "state": r.state, "forecast": fc,
        "etas": r.etas, "elapsed_ms": r.elapsed_ms}, use_bin_type=True)


def decode_result(data: bytes) -> Result:
    """msgpack bytes -> Result."""
    try:
        d = msgpack.unpackb(data, raw=False, max_bin_len=MAX_JOB_BYTES)
        if not isinstance(d, dict) or d.get("v") != JOB_VERSION:
            raise JobError("unknown result version")
        fc = dict(d.get("forecast") or {})
        for k in ("ts_ms", "mean", "lower", "upper"):
            if k in fc:
                fc[k] = _arr(fc[k], "<i8" if k == "ts_ms" else "<f8", k)
        return Result(str(d["id"]), d["kind"], str(d["series"]), bool(d["ok"]), str(d["worker"]),
                      str(d.get("error", "")), _arr(d["ts"], "<i8", "ts"),
                      _arr(d["scores"], "<f8", "scores"), d.get("state"), fc,
                      list(d.get("etas") or []), float(d.get("elapsed_ms", 0.0)))
    except JobError:
        raise
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise JobError(f"bad result: {exc}") from exc
