"""Prometheus remote-write 1.0 payloads, encoded by hand (no protobuf runtime needed).

    WriteRequest { repeated TimeSeries timeseries = 1; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Label        { string name = 1; string value = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }  // ms since the epoch

Encoded `TimeSeries` entries of one request are independent top-level fields, so two encoded
`WriteRequest`s concatenated are one valid `WriteRequest`: the durable queue stores encoded
requests and a send concatenates them. `split_series`/`count_samples` parse just enough back to
bisect a request that a receiver rejected.

Label mapping (Legion -> Prometheus), documented in README "Scale-out":
  * `__name__` = the metric name, characters outside ``[a-zA-Z0-9_:]`` replaced by ``_``
    (and ``_`` prepended if it starts with a digit);
  * `node` = the node name (the `instance`-like label);
  * every other label verbatim, its name sanitised to ``[a-zA-Z0-9_]`` the same way; a label
    that would collide with `node` or start with ``__`` (reserved) becomes ``exported_<name>``;
    labels with an empty value are left out (Prometheus treats empty as absent).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator

import numpy as np

from legion.aggregator.store import IncomingBatch

NODE_LABEL = "node"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_TS_FAST_LO, _TS_FAST_HI = 1 << 35, 1 << 42  # ms timestamps whose varint is exactly 6 bytes


def metric_name(name: str) -> str:
    """A valid Prometheus metric name for a Legion metric name."""
    name = _NAME_BAD.sub("_", name)
    return name if name and not name[0].isdigit() else "_" + name


def label_name(name: str) -> str:
    """A valid, non-reserved Prometheus label name for a Legion label key."""
    name = _LABEL_BAD.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    if name == NODE_LABEL or name.startswith("__"):
        name = "exported_" + name.lstrip("_") if name.startswith("__") else "exported_" + name
    return name


def series_labels(node: str, metric: str, labels: tuple[tuple[str, str], ...]
                  ) -> list[tuple[str, str]]:
    """Sorted Prometheus labels of one Legion series (see the module docstring)."""
    out = {"__name__": metric_name(metric), NODE_LABEL: node}
    for k, v in labels:
        if v != "":
            out.setdefault(label_name(k), v)
    return sorted(out.items())


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def encode_labels(labels: list[tuple[str, str]]) -> bytes:
    """The `labels` fields of one TimeSeries."""
    return b"".join(_field(0x0A, _field(0x0A, k.encode()) + _field(0x12, v.encode()))
                    for k, v in labels)


def _sample_rows(values: np.ndarray, ts_ms: np.ndarray) -> np.ndarray | None:
    """One encoded `samples` field per row (n x 18 bytes), or None if a timestamp is outside
    the years ~1971-2109 where its varint is exactly 6 bytes (then `encode_samples` is used)."""
    ts = ts_ms.astype(np.int64, copy=False)
    if not len(ts) or int(ts.min()) < _TS_FAST_LO or int(ts.max()) >= _TS_FAST_HI:
        return None
    n = len(ts)
    rows = np.empty((n, 18), dtype=np.uint8)
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 11] = 0x12, 16, 0x09, 0x10
    rows[:, 3:11] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, 8)
    u = ts.astype(np.uint64)
    for i in range(6):
        b = (u >> np.uint64(7 * i)) & np.uint64(0x7F)
        rows[:, 12 + i] = (b | np.uint64(0x80)) if i < 5 else b
    return rows


def encode_samples(values: np.ndarray, ts_ms: np.ndarray) -> bytes:
    """The `samples` fields of one TimeSeries."""
    rows = _sample_rows(values, ts_ms)
    if rows is not None:
        return rows.tobytes()
    return b"".join(_field(0x12, b"\x09" + struct.pack("<d", float(v)) + b"\x10"
                           + _varint(int(t))) for v, t in zip(values, ts_ms, strict=True))


class Encoder:
    """Turns committed batches into per-shard WriteRequests; caches each series' labels."""

    def __init__(self, shards: int, cache_max: int = 200_000) -> None:
        self.shards = shards
        self._cache: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[bytes, int]] = {}
        self._cache_max = cache_max

    def series(self, node: str, metric: str, labels: tuple[tuple[str, str], ...]
               ) -> tuple[bytes, int]:
        """(encoded labels, shard) of one series."""
        key = (node, metric, labels)
        hit = self._cache.get(key)
        if hit is None:
            enc = encode_labels(series_labels(node, metric, labels))
            hit = (enc, zlib.crc32(enc) % self.shards)
            if len(self._cache) >= self._cache_max:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def encode(self, batches: list[IncomingBatch]) -> list[tuple[bytes, int]]:
        """Per shard: (WriteRequest bytes, samples); one TimeSeries per series of the whole
        group, its samples in time order (numpy does the per-sample work)."""
        index: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
        table: list[tuple[bytes, int]] = []  # group-local series id -> (labels, shard)
        sids, vals, tss = [], [], []
        for ib in batches:
            b = ib.batch
            if len(b) == 0:
                continue
            width = len(b.label_sets) + 1
            pair = b.name_idx.astype(np.int64) * width + b.label_idx
            uniq, inv = np.unique(pair, return_inverse=True)
            local = np.empty(len(uniq), dtype=np.int64)
            for j, p in enumerate(uniq.tolist()):
                key = (ib.node, b.names[p // width], b.label_sets[p % width])
                sid = index.get(key)
                if sid is None:
                    sid = index[key] = len(table)
                    table.append(self.series(*key))
                local[j] = sid
            sids.append(local[inv.reshape(-1)])
            vals.append(b.values)
            tss.append(b.ts_ms)
        parts: list[list[bytes]] = [[] for _ in range(self.shards)]
        counts = [0] * self.shards
        if table:
            sid_all = np.concatenate(sids)
            order = np.lexsort((np.concatenate(tss), sid_all))
            sid_all = sid_all[order]
            v, t = np.concatenate(vals)[order], np.concatenate(tss)[order]
            rows = _sample_rows(v, t)  # every sample of the group encoded at once
            cuts = np.flatnonzero(np.diff(sid_all)) + 1
            starts = np.concatenate(([0], cuts)).tolist()
            ends = np.concatenate((cuts, [len(sid_all)])).tolist()
            for s, e in zip(starts, ends, strict=True):
                enc, shard = table[int(sid_all[s])]
                smp = rows[s:e].tobytes() if rows is not None else encode_samples(v[s:e], t[s:e])
                parts[shard].append(_field(0x0A, enc + smp))
                counts[shard] += e - s
        return [(b"".join(p), c) for p, c in zip(parts, counts, strict=True)]


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def split_series(req: bytes) -> list[bytes]:
    """The encoded top-level TimeSeries fields of a WriteRequest, each a WriteRequest itself."""
    out, pos = [], 0
    while pos < len(req):
        start = pos
        if req[pos] != 0x0A:
            raise ValueError(f"unexpected field tag {req[pos]:#x} at {pos}")
        length, pos = _read_varint(req, pos + 1)
        pos += length
        out.append(req[start:pos])
    return out


def _fields(buf: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(buf):
        tag = buf[pos]
        wt = tag & 7
        if wt == 2:
            length, pos = _read_varint(buf, pos + 1)
            yield tag, buf[pos:pos + length]
            pos += length
        elif wt == 1:
            yield tag, buf[pos + 1:pos + 9]
            pos += 9
        elif wt == 0:
            v, pos = _read_varint(buf, pos + 1)
            yield tag, v.to_bytes(10, "little")
        else:
            raise ValueError(f"unsupported wire type {wt}")


def count_samples(req: bytes) -> int:
    """Samples in an encoded WriteRequest."""
    return sum(1 for ts in split_series(req) for _t, body in _fields(ts)
               for tag, _ in _fields(body) if tag == 0x12)


def decode(req: bytes) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Decode a WriteRequest into (labels, [(ts_ms, value)]) per series (tests and tools)."""
    out = []
    for ts in split_series(req):
        for _t, body in _fields(ts):
            labels: dict[str, str] = {}
            samples: list[tuple[int, float]] = []
            for tag, part in _fields(body):
                inner = dict(_fields(part))
                if tag == 0x0A:
                    labels[inner[0x0A].decode()] = inner[0x12].decode()
                elif tag == 0x12:
                    t = int.from_bytes(inner.get(0x10, bytes(10)), "little")
                    t = t - (1 << 64) if t >= 1 << 63 else t
                    samples.append((t, struct.unpack("<d", inner.get(0x09, bytes(8)))[0]))
            out.append((labels, samples))
    return out
