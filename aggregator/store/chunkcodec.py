"""Lossless compressed encoding of one series' points (a chunk): timestamps and values.

The raw tier keeps settled hours as one chunk per series (see `packing`), because a row per point
costs 5-7 bytes in DuckDB's column encodings whatever the order and types (measured in
`bench/storage.py`), while a per-series encoding in the spirit of Gorilla costs about one:

* **timestamps**: the chunk's typical step (median of the gaps) defines a grid from the first
  timestamp; each point stores the change of its grid index (1 for a regular series: compresses to
  nothing; larger across a gap) and its offset from the grid (the scheduler's jitter, a few ms).
  Offsets from a grid have the jitter's own spread; Gorilla's delta-of-delta triples its variance.
* **values**: if every value is a decimal with at most 6 places (exactly: scaling by 10^k,
  rounding and dividing back gives the same 64-bit pattern), the scaled integers' deltas;
  otherwise the XOR of each value's bits with the previous one's (Gorilla).

Each integer stream is zigzag-encoded, narrowed to the smallest of 1/2/4/8 bytes that holds it,
byte-shuffled (all low bytes, then the next...) and the three streams are compressed together with
zstd. Decoding gives back the exact int64 timestamps and float64 bit patterns (-0.0, infinities and
NaN payloads included). Layout: a 12-byte header (format, scale, widths, step) and a zstd frame.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from legion.errors import StoreError

FORMAT_DECIMAL = 1
FORMAT_XOR = 2
MAX_SCALE = 6
"""Most decimal places tried for the scaled-integer path."""
ZSTD_LEVEL = 3
"""Level 3: within 4 % of level 19's size here at a tenth of its time (measured)."""

_HEADER = struct.Struct("<BbBBBxxxi")  # format, scale, w_dk, w_off, w_val, pad, step (ms)
_WIDTHS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_LIMIT = float(2 ** 53)


def encode(ts: np.ndarray, values: np.ndarray) -> bytes:
    """Encode one series' points, sorted by time (int64 ms, float64), into one blob."""
    ts = np.ascontiguousarray(ts, np.int64)
    values = np.ascontiguousarray(values, np.float64)
    if ts.shape != values.shape or ts.ndim != 1 or not ts.shape[0]:
        raise StoreError(f"chunk needs matching non-empty 1-D arrays (got {ts.shape}, "
                         f"{values.shape})")
    step, dk, off = _grid(ts)
    fmt, scale, ints = _value_ints(values)
    parts = [_narrow(_zigzag(dk)), _narrow(_zigzag(off)), _narrow(ints)]
    header = _HEADER.pack(fmt, scale, *(p.itemsize for p in parts), step)
    body = b"".join(_shuffle(p) for p in parts)
    return header + zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False,
                                             write_content_size=True).compress(body)


def decode(blob: bytes, t_min: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (ts int64, values float64) arrays of a chunk of `n` points starting at `t_min`."""
    try:
        fmt, scale, w_dk, w_off, w_val, step = _HEADER.unpack_from(blob)
        body = zstandard.ZstdDecompressor().decompress(memoryview(blob)[_HEADER.size:])
    except (struct.error, zstandard.ZstdError) as exc:
        raise StoreError(f"corrupt chunk ({len(blob)} bytes): {exc}") from exc
    if fmt not in (FORMAT_DECIMAL, FORMAT_XOR) or len(body) != n * (w_dk + w_off + w_val) or \
            not {w_dk, w_off, w_val} <= set(_WIDTHS):
        raise StoreError(f"corrupt chunk: format {fmt}, widths {(w_dk, w_off, w_val)}, "
                         f"{len(body)} bytes for {n} points")
    a, b = n * w_dk, n * (w_dk + w_off)
    dk = _unzigzag(_unshuffle(body[:a], w_dk))
    off = _unzigzag(_unshuffle(body[a:b], w_off))
    ints = _unshuffle(body[b:], w_val)
    ts = np.int64(t_min) + np.cumsum(dk) * np.int64(step) + off
    if fmt == FORMAT_XOR:
        values = np.bitwise_xor.accumulate(ints.astype(np.uint64)).view(np.float64)
    else:
        values = np.cumsum(_unzigzag(ints)).astype(np.float64) / 10.0 ** scale
    return ts, values


def _grid(ts: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(step, change of grid index, offset from grid) with ts = t0 + cumsum(dk) * step + off."""
    gaps = np.diff(ts)
    step = int(np.median(gaps)) if gaps.shape[0] else 0
    if step <= 0 or step >= 2 ** 31:
        step = 0
        k = np.zeros_like(ts)
    else:
        k = np.floor_divide(ts - ts[0] + step // 2, step)
    off = ts - ts[0] - k * step
    return step, np.diff(k, prepend=0), off


def _value_ints(values: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(format, scale, zigzagged unsigned ints) for the values."""
    bits = values.view(np.uint64)
    if np.isfinite(values).all():
        top = float(np.abs(values).max())
        for scale in range(MAX_SCALE + 1):
            mult = 10.0 ** scale
            if top * mult >= _LIMIT:
                break
            ints = np.round(values * mult).astype(np.int64)
            # Checked the way `decode` computes it (this also sends -0.0 to the XOR path).
            if np.array_equal((ints.astype(np.float64) / mult).view(np.uint64), bits):
                return FORMAT_DECIMAL, scale, _zigzag(np.diff(ints, prepend=0))
    return FORMAT_XOR, 0, bits ^ np.concatenate(([np.uint64(0)], bits[:-1]))


def _zigzag(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64, copy=False)
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.uint64, copy=False)
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _narrow(u: np.ndarray) -> np.ndarray:
    top = int(u.max()) if u.shape[0] else 0
    for width, dtype in _WIDTHS.items():
        if top < 1 << (8 * width):
            return u.astype(dtype)
    raise AssertionError("unreachable: uint64 fits in 8 bytes")


def _shuffle(a: np.ndarray) -> bytes:
    if a.itemsize == 1:
        return a.tobytes()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(
        -1, a.itemsize).T.tobytes()


def _unshuffle(raw: bytes, width: int) -> np.ndarray:
    planes = np.frombuffer(raw, np.uint8)
    if width == 1:
        return planes.astype(np.uint64)
    le = np.ascontiguousarray(planes.reshape(width, -1).T).view(np.dtype(_WIDTHS[width]
                                                                         ).newbyteorder("<"))
    return le.ravel().astype(np.uint64)
