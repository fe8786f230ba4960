"""msgpack codec for wire schema v1: the only module that imports msgpack.

`decode` is bounded (frame size, string, array and map lengths are capped before allocation) and
validating: it either returns an `Envelope` or raises `WireError` with a `Reason`. Nothing else
escapes it, whatever the bytes (a hypothesis fuzz test holds it to that).

Agents send the same metric names and label sets every tick, so the names and each label set
that passed validation are remembered (`VALIDATED_KEPT` of each, by exact content) and a frame
that repeats them is not validated again; small batches are range-checked in Python, where
numpy's fixed cost per call is most of the work (`SMALL_BATCH`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from legion.proto import limits as L
from legion.proto.errors import Reason, WireError
from legion.proto.messages import (
    ACK_LEVELS,
    KIND_ACK,
    KIND_METRICS,
    Ack,
    Body,
    Envelope,
    Labels,
    MetricsBatch,
    Sample,
    intern_samples,
)
from legion.proto.names import LABEL_KEY_RE, NAME_RE, NODE_RE

if TYPE_CHECKING:  # numpy is imported lazily: only decoding metrics needs it
    import numpy as np


_UINT32, _FLOAT64, _INT64 = "<u4", "<f8", "<i8"
_ITEMSIZE = {_UINT32: 4, _FLOAT64: 8, _INT64: 8}
SMALL_BATCH = 32
"""Batches of at most this many points are range-checked in Python, larger ones with numpy."""
VALIDATED_KEPT = 4096
"""Validated name lists and label sets remembered (each cache is emptied when full)."""
_names_seen: dict[tuple[Any, ...], tuple[str, ...]] = {}
_labels_seen: dict[tuple[tuple[Any, Any], ...], Labels] = {}


class Codec(Protocol):
    """Turns envelopes into frames and back."""

    def encode(self, env: Envelope) -> bytes: ...

    def decode(self, frame: bytes, now_ms: int | None = None) -> Envelope: ...


class MsgpackCodec:
    """The v1 codec (stateless; module functions `encode`/`decode` use one instance)."""

    def encode(self, env: Envelope) -> bytes:
        return encode(env)

    def decode(self, frame: bytes, now_ms: int | None = None) -> Envelope:
        return decode(frame, now_ms)


def encode(env: Envelope) -> bytes:
    """Encode an envelope to one msgpack frame."""
    if isinstance(env.body, MetricsBatch):
        b = env.body
        body: dict[str, Any] = {
            "names": list(b.names),
            "labels": [dict(ls) for ls in b.label_sets],
            "name_idx": b.name_idx.astype(_UINT32, copy=False).tobytes(),
            "label_idx": b.label_idx.astype(_UINT32, copy=False).tobytes(),
            "values": b.values.astype(_FLOAT64, copy=False).tobytes(),
            "ts": b.ts_ms.astype(_INT64, copy=False).tobytes(),
        }
    elif isinstance(env.body, Ack):
        body = {"level": env.body.level, "epoch": env.body.epoch,
                "ranges": [list(r) for r in env.body.ranges]}
    else:  # pragma: no cover - programming error, not input
        raise TypeError(f"cannot encode body {type(env.body).__name__}")
    return _pack(env.kind, env.node, env.epoch, env.seq, env.ts_ms, body, env.v)


def encode_samples(node: str, epoch: int, seq: int, ts_ms: int,
                   samples: Iterable[Sample]) -> bytes:
    """Encode a metrics envelope straight from samples (no numpy: the node agent's path)."""
    names, label_sets, n_idx, l_idx, values, ts = intern_samples(samples)
    body = {"names": list(names), "labels": [dict(ls) for ls in label_sets],
            "name_idx": n_idx, "label_idx": l_idx, "values": values, "ts": ts}
    return _pack(KIND_METRICS, node, epoch, seq, ts_ms, body)


def _pack(kind: str, node: str, epoch: int, seq: int, ts_ms: int, body: dict[str, Any],
          v: int = L.SCHEMA_VERSION) -> bytes:
    return msgpack.packb({"v": v, "kind": kind, "node": node, "epoch": epoch, "seq": seq,
                          "ts": ts_ms, "body": body}, use_bin_type=True)


def decode(frame: bytes, now_ms: int | None = None) -> Envelope:
    """Decode and validate one frame; raise `WireError` on anything wrong."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise WireError(Reason.MISTYPED_FIELD, "frame is not bytes")
    if len(frame) > L.MAX_FRAME_BYTES:
        exc = WireError(Reason.FRAME_TOO_LARGE, f"{len(frame)} bytes")
        exc.header = peek_header(frame)
        raise exc
    try:
        obj = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=max(L.MAX_LABEL_VALUE_LEN, L.MAX_NAME_LEN, 1024),
            max_bin_len=L.MAX_FRAME_BYTES,
            max_array_len=L.MAX_SERIES_PER_BATCH,
            max_map_len=L.MAX_SERIES_PER_BATCH,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, Unicode...)
        raise WireError(Reason.BAD_MSGPACK, type(exc).__name__) from None
    if not isinstance(obj, dict):
        raise WireError(Reason.MISTYPED_FIELD, "top level is not a map")
    v = _field(obj, "v", int)
    if v != L.SCHEMA_VERSION:
        raise WireError(Reason.UNSUPPORTED_VERSION, f"v={v!r}")
    kind = _field(obj, "kind", str)
    if kind not in _BODY_DECODERS:
        raise WireError(Reason.UNKNOWN_KIND, repr(kind)[:64])
    node = _field(obj, "node", str)
    if len(node) > L.MAX_NODE_LEN or not NODE_RE.match(node):
        raise WireError(Reason.BAD_NODE, repr(node)[:64])
    epoch = _field(obj, "epoch", int)
    seq = _field(obj, "seq", int)
    if not 0 <= epoch <= L.MAX_EPOCH or not 0 <= seq <= L.MAX_SEQ:
        raise WireError(Reason.MISTYPED_FIELD, "epoch/seq out of range")
    ts = _field(obj, "ts", int)
    body = _field(obj, "body", dict)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        decoded = _BODY_DECODERS[kind](body, now)
    except WireError as exc:
        exc.header = (kind, node, epoch, seq)
        raise
    return Envelope(kind=kind, node=node, epoch=epoch, seq=seq, ts_ms=ts, body=decoded, v=v)


def peek_header(frame: bytes) -> tuple[str, str, int, int] | None:
    """(kind, node, epoch, seq) from the start of a frame without reading its body (so a frame
    too large to decode can still be answered); None when they are not there as expected."""
    try:
        up = msgpack.Unpacker(raw=False, max_buffer_size=len(frame) + 1, max_bin_len=0,
                              max_str_len=1024, max_array_len=0, max_map_len=16, max_ext_len=0)
        up.feed(frame)
        head: dict[str, Any] = {}
        for _ in range(min(up.read_map_header(), 16)):
            key = up.unpack()
            if key == "body":
                break
            head[key] = up.unpack()
        kind, node, epoch, seq = (head.get(k) for k in ("kind", "node", "epoch", "seq"))
    except Exception:  # noqa: BLE001 - msgpack raises many types; any means "no header"
        return None
    if not (isinstance(kind, str) and isinstance(node, str) and NODE_RE.match(node)
            and type(epoch) is int and type(seq) is int):
        return None
    return kind, node, epoch, seq


def _field(obj: dict[str, Any], key: str, typ: type) -> Any:
    if key not in obj:
        raise WireError(Reason.MISSING_FIELD, key)
    val = obj[key]
    # bool is an int subclass; a bool where an int belongs is a type error on the wire
    if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
        raise WireError(Reason.MISTYPED_FIELD, key)
    return val


def _array(body: dict[str, Any], key: str, dtype: str) -> np.ndarray:
    import numpy as np

    raw = _field(body, key, bytes)
    if len(raw) % _ITEMSIZE[dtype]:
        raise WireError(Reason.LENGTH_MISMATCH, f"{key} is not a whole number of items")
    arr = np.frombuffer(raw, dtype=dtype)
    return arr  # frombuffer over immutable bytes is read-only already


def _known_labels(obj: Any) -> Labels:
    """`_labels(obj)`, from the label sets validated before when `obj` is one of them."""
    try:
        key = tuple(obj.items())
        hit = _labels_seen.get(key)
    except (AttributeError, TypeError):  # not a map, or unhashable values: validation says why
        return _labels(obj)
    if hit is None:
        hit = _labels(obj)
        if len(_labels_seen) >= VALIDATED_KEPT:
            _labels_seen.clear()
        _labels_seen[key] = hit
    return hit


def _names(names: list[Any]) -> tuple[str, ...]:
    """The metric names, validated (or validated before: the same list as an earlier frame)."""
    try:
        key = tuple(names)
        hit = _names_seen.get(key)
    except TypeError:  # unhashable items: validation says why
        key, hit = None, None
    if hit is not None:
        return hit
    for n in names:
        if not isinstance(n, str):
            raise WireError(Reason.MISTYPED_FIELD, "metric name is not a string")
        if len(n) > L.MAX_NAME_LEN:
            raise WireError(Reason.NAME_TOO_LONG, n[:64])
        if not NAME_RE.match(n):
            raise WireError(Reason.BAD_NAME, repr(n)[:64])
    out = tuple(names)
    if key is not None:
        if len(_names_seen) >= VALIDATED_KEPT:
            _names_seen.clear()
        _names_seen[key] = out
    return out


def _labels(obj: Any) -> Labels:
    if not isinstance(obj, dict):
        raise WireError(Reason.MISTYPED_FIELD, "labels entry is not a map")
    if len(obj) > L.MAX_LABELS:
        raise WireError(Reason.TOO_MANY_LABELS, str(len(obj)))
    for k, val in obj.items():
        if not isinstance(val, str):
            raise WireError(Reason.MISTYPED_FIELD, "label value is not a string")
        if len(k) > L.MAX_LABEL_KEY_LEN or len(val) > L.MAX_LABEL_VALUE_LEN:
            raise WireError(Reason.LABEL_TOO_LONG, k[:64])
        if not LABEL_KEY_RE.match(k):
            raise WireError(Reason.BAD_LABEL, repr(k)[:64])
    return tuple(sorted(obj.items()))


def _decode_metrics(body: dict[str, Any], now_ms: int) -> MetricsBatch:
    import numpy as np

    names = _names(_field(body, "names", list))
    label_list = _field(body, "labels", list)
    label_sets = tuple(_known_labels(x) for x in label_list)
    name_idx = _array(body, "name_idx", _UINT32)
    label_idx = _array(body, "label_idx", _UINT32)
    values = _array(body, "values", _FLOAT64)
    ts = _array(body, "ts", _INT64)
    n = values.shape[0]
    if n > L.MAX_POINTS_PER_BATCH:
        raise WireError(Reason.TOO_MANY_POINTS, str(n))
    if not name_idx.shape[0] == label_idx.shape[0] == ts.shape[0] == n:
        raise WireError(Reason.LENGTH_MISMATCH, "columns differ in length")
    if 0 < n <= SMALL_BATCH:
        t = ts.tolist()
        _check_ranges(max(name_idx.tolist()), max(label_idx.tolist()),
                      all(map(math.isfinite, values.tolist())), min(t), max(t),
                      len(names), len(label_sets), now_ms)
    elif n:
        _check_ranges(int(name_idx.max()), int(label_idx.max()), bool(np.isfinite(values).all()),
                      int(ts.min()), int(ts.max()), len(names), len(label_sets), now_ms)
    return MetricsBatch(
        names=names, label_sets=label_sets, name_idx=name_idx,
        label_idx=label_idx, values=values, ts_ms=ts,
    )


def _check_ranges(max_name: int, max_labels: int, finite: bool, ts_min: int, ts_max: int,
                  n_names: int, n_label_sets: int, now_ms: int) -> None:
    """Every point refers to a sent name and label set, is finite and near `now_ms`."""
    if max_name >= n_names or max_labels >= n_label_sets:
        raise WireError(Reason.INDEX_OUT_OF_RANGE, "point refers past names/labels")
    if not finite:
        raise WireError(Reason.NON_FINITE_VALUE, "NaN or Inf in values")
    if ts_min < now_ms - L.MAX_PAST_MS or ts_max > now_ms + L.MAX_FUTURE_MS:
        raise WireError(Reason.TIMESTAMP_OUT_OF_RANGE, "point timestamp too far from now")


def _decode_ack(body: dict[str, Any], now_ms: int) -> Ack:
    level = _field(body, "level", str)
    if level not in ACK_LEVELS:
        raise WireError(Reason.MISTYPED_FIELD, "ack level")
    epoch = _field(body, "epoch", int)
    ranges = _field(body, "ranges", list)
    out: list[tuple[int, int]] = []
    for r in ranges:
        if (not isinstance(r, list) or len(r) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                or not 0 <= r[0] <= r[1] <= L.MAX_SEQ):
            raise WireError(Reason.MISTYPED_FIELD, "ack range")
        out.append((r[0], r[1]))
    return Ack(level=level, epoch=epoch, ranges=tuple(out))


_BODY_DECODERS: dict[str, Callable[[dict[str, Any], int], Body]] = {
    KIND_METRICS: _decode_metrics,
    KIND_ACK: _decode_ack,
}
