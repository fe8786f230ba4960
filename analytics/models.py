"""Model files: detector/forecaster state saved as one `.npz` (numpy arrays + a JSON header).

No pickle anywhere: nested state dicts are flattened to '/'-joined keys; arrays and floats go into
the npz, everything else (ints, strings, bools, None, lists of those) into the JSON header with the
model's name, kind, version, params, training window and score. Loading uses
`np.load(..., allow_pickle=False)`.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from legion.kernel.errors import LegionError

FORMAT_VERSION = 1
_META_KEY = "__meta__"


class ModelError(LegionError):
    """A model file is missing, corrupt, or of an unknown format version."""


@dataclass(slots=True)
class ModelRecord:
    """What is saved: identity, parameters, training window, score, and the state tree."""

    kind: str                       # "detector" | "forecaster"
    name: str                       # table name, e.g. "ensemble"
    params: dict[str, Any]
    state: dict[str, Any]
    version: int = 1                # the model's own version (bumped on retrain)
    trained_from_ms: int = 0
    trained_to_ms: int = 0
    score: float | None = None      # e.g. backtest MAE or NAB-style quality
    saved_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    retrained_ms: int = 0           # data time (last point) of the last lifecycle retrain


def _flatten(tree: Any, prefix: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    if isinstance(tree, dict):
        if not tree:
            meta[prefix] = {}
        for k, v in tree.items():
            if "/" in str(k):
                raise ModelError(f"state key {k!r} contains '/'")
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), arrays, meta)
    elif isinstance(tree, np.ndarray):
        if tree.dtype == object:
            raise ModelError(f"{prefix}: object arrays cannot be saved")
        arrays[prefix] = tree
    elif isinstance(tree, (float, np.floating)):
        arrays[prefix] = np.asarray(float(tree))
    elif isinstance(tree, (bool, np.bool_)):
        meta[prefix] = bool(tree)
    elif isinstance(tree, (int, np.integer)):
        meta[prefix] = int(tree)
    elif tree is None or isinstance(tree, str):
        meta[prefix] = tree
    elif isinstance(tree, (list, tuple)):
        arr = np.asarray(tree)
        if arr.dtype.kind in "fiub" and arr.ndim >= 1:
            arrays[prefix] = arr
        else:
            meta[prefix] = json.loads(json.dumps(list(tree)))
    else:
        raise ModelError(f"{prefix}: cannot save a {type(tree).__name__}")


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split("/")
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = float(v) if v.dtype.kind == "f" else v.item()
        node[parts[-1]] = v
    return root


def dumps(rec: ModelRecord) -> bytes:
    """Serialise a record to npz bytes."""
    arrays: dict[str, np.ndarray] = {}
    smeta: dict[str, Any] = {}
    _flatten(rec.state, "", arrays, smeta)
    header = {"format": FORMAT_VERSION, "kind": rec.kind, "name": rec.name,
              "params": rec.params, "version": rec.version,
              "trained_from_ms": rec.trained_from_ms, "trained_to_ms": rec.trained_to_ms,
              "score": rec.score, "saved_ms": rec.saved_ms, "retrained_ms": rec.retrained_ms,
              "state_meta": smeta}
    buf = io.BytesIO()
    named = {f"s/{k}": v for k, v in arrays.items()}
    named[_META_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez_compressed(buf, **named)  # type: ignore[arg-type]
    return buf.getvalue()


def loads(data: bytes) -> ModelRecord:
    """Parse npz bytes produced by `dumps`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z[_META_KEY]).decode())
            flat: dict[str, Any] = {k[2:]: z[k] for k in z.files if k.startswith("s/")}
    except (OSError, EOFError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"not a model file: {exc}") from exc
    if header.get("format") != FORMAT_VERSION:
        raise ModelError(f"unknown model format {header.get('format')!r}")
    flat.update(header["state_meta"])
    return ModelRecord(kind=header["kind"], name=header["name"], params=header["params"],
                       state=_unflatten(flat), version=header["version"],
                       trained_from_ms=header["trained_from_ms"],
                       trained_to_ms=header["trained_to_ms"], score=header["score"],
                       saved_ms=header["saved_ms"],
                       retrained_ms=int(header.get("retrained_ms", 0)))


def save(path: str | Path, rec: ModelRecord) -> Path:
    """Write a record atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(dumps(rec))
    tmp.replace(p)
    return p


def load(path: str | Path) -> ModelRecord:
    """Read a record written by `save`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from exc
    return loads(data)


def detector_record(det: Any, trained_from_ms: int = 0, trained_to_ms: int = 0,
                    version: int = 1, score: float | None = None,
                    retrained_ms: int = 0) -> ModelRecord:
    """A record of a live detector (its table name, params and state).

    `score` defaults to the detector's `fit_score` (in-sample residual RMS of its last fit) when
    it has a finite one.
    """
    if score is None:
        fs = getattr(det, "fit_score", None)
        score = float(fs) if isinstance(fs, float) and fs == fs else None
    return ModelRecord("detector", det.name, det.params(), det.get_state(), version,
                       trained_from_ms, trained_to_ms, score, retrained_ms=retrained_ms)


SAVED_BEFORE: dict[str, dict[str, Any]] = {"knn": {"episodes": False},
                                           "ensemble": {"blocks": 0, "cost": 0.0}}
"""Per detector, parameters added since models were first saved, with their old behaviour."""


def restore_detector(rec: ModelRecord) -> Any:
    """A detector rebuilt from a record (same params, same state)."""
    from legion.analytics.detectors import make_detector

    if rec.kind != "detector":
        raise ModelError(f"record is a {rec.kind}, not a detector")
    # A parameter added after a model was saved takes the value that reproduces the old
    # behaviour, not today's default (the state was learnt under the old statistic).
    params = {**SAVED_BEFORE.get(rec.name, {}), **rec.params}
    det = make_detector(rec.name, **params)
    det.set_state(rec.state)
    return det
