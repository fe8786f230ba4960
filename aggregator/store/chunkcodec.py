"""Lossless compressed encoding of one series' points (a chunk): timestamps and values.

The raw tier keeps settled hours as one chunk per series (see `packing`), because a row per point
costs 5-7 bytes in DuckDB's column encodings whatever the order and types (measured in
`bench/storage.py`), while a per-series encoding in the spirit of Gorilla costs about one:

* **timestamps**: the chunk's typical step (median of its first gaps) defines a grid from the first
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
A chunk may leave its timestamps out (widths 0) when another chunk of the same hour holds the very
same ones: every series of one agent tick carries the tick's timestamp, so an hour of a host's
60-110 series needs its timestamps once.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
import zstandard

from legion.kernel.errors import StoreError

FORMAT_DECIMAL = 1
FORMAT_XOR = 2
STEP_SAMPLE = 33
"""Gaps per run whose median is taken as the run's step."""
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
    if ts.ndim != 1 or not ts.shape[0]:
        raise StoreError(f"a chunk needs a non-empty 1-D array of timestamps (got {ts.shape})")
    return encode_many(ts, values, np.zeros(1, np.int64))[0]


def encode_many(ts: np.ndarray, values: np.ndarray, starts: np.ndarray,
                shared: np.ndarray | None = None) -> list[bytes]:
    """Encode consecutive runs of points, each sorted by time, into one blob per run; run i is
    ts[starts[i]:starts[i+1]]. All the arithmetic is vectorised over the runs (per-run numpy
    calls on hour-long runs cost several times the compression itself, measured).

    Runs where `shared` is True get no timestamp streams: their timestamps are stored once in
    another chunk (the series of one agent tick share them), and `decode` must be given them."""
    ts = np.ascontiguousarray(ts, np.int64)
    values = np.ascontiguousarray(values, np.float64)
    starts = np.asarray(starts, np.int64)
    n = ts.shape[0]
    if ts.shape != values.shape or ts.ndim != 1 or not n or not starts.shape[0] \
            or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= n:
        raise StoreError(f"chunks need matching 1-D arrays cut into non-empty runs (got "
                         f"{ts.shape}, {values.shape}, {starts.shape[0]} runs)")
    seg = np.repeat(np.arange(starts.shape[0]), np.diff(np.r_[starts, n]))
    first = np.zeros(n, bool)
    first[starts] = True
    step, dk, off = _grid(ts, seg, starts, first)
    fmt, scale, ints = _value_ints(values, seg, starts, first)
    ends = np.r_[starts[1:], n]
    parts = [_zigzag(dk), _zigzag(off), ints]
    tops = [np.maximum.reduceat(p, starts) for p in parts]
    comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False,
                                    write_content_size=True)
    out = []
    own = np.ones(starts.shape[0], bool) if shared is None else ~np.asarray(shared, bool)
    for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        arrays = [_narrow(p[a:b], int(t[i])) for p, t in zip(parts, tops, strict=True)]
        if not own[i]:
            arrays = arrays[2:]
        widths = [x.itemsize for x in arrays]
        header = _HEADER.pack(int(fmt[i]), int(scale[i]), *([0, 0] if not own[i] else []),
                              *widths, int(step[i]) if own[i] else 0)
        out.append(header + comp.compress(b"".join(_shuffle(x) for x in arrays)))
    return out


def shares_timestamps(blob: bytes) -> bool:
    """True when the chunk's timestamps are stored in another chunk."""
    return len(blob) >= _HEADER.size and blob[2] == 0 and blob[3] == 0


def decode(blob: bytes, t_min: int, n: int, ts: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The (ts int64, values float64) arrays of a chunk of `n` points starting at `t_min`;
    `ts` are the timestamps of a chunk that `shares_timestamps` (ignored otherwise)."""
    try:
        fmt, scale, w_dk, w_off, w_val, step = _HEADER.unpack_from(blob)
        body = zstandard.ZstdDecompressor().decompress(memoryview(blob)[_HEADER.size:])
    except (struct.error, zstandard.ZstdError) as exc:
        raise StoreError(f"corrupt chunk ({len(blob)} bytes): {exc}") from exc
    elsewhere = w_dk == w_off == 0
    if fmt not in (FORMAT_DECIMAL, FORMAT_XOR) or len(body) != n * (w_dk + w_off + w_val) or \
            not ({w_dk, w_off} <= set(_WIDTHS) or elsewhere) or w_val not in _WIDTHS:
        raise StoreError(f"corrupt chunk: format {fmt}, widths {(w_dk, w_off, w_val)}, "
                         f"{len(body)} bytes for {n} points")
    a, b = n * w_dk, n * (w_dk + w_off)
    if elsewhere:
        if ts is None or ts.shape != (n,) or (n and int(ts[0]) != t_min):
            raise StoreError(f"chunk of {n} points shares the timestamps of another chunk, "
                             "which was not given (or does not match)")
        ts = np.asarray(ts, np.int64)
    else:
        dk = _unzigzag(_unshuffle(body[:a], w_dk))
        off = _unzigzag(_unshuffle(body[a:b], w_off))
        ts = np.int64(t_min) + np.cumsum(dk) * np.int64(step) + off
    ints = _unshuffle(body[b:], w_val)
    if fmt == FORMAT_XOR:
        values = np.bitwise_xor.accumulate(ints.astype(np.uint64)).view(np.float64)
    else:
        values = np.cumsum(_unzigzag(ints)).astype(np.float64) / 10.0 ** scale
    return ts, values


def _grid(ts: np.ndarray, seg: np.ndarray, starts: np.ndarray, first: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run the step (fitted to the run, 0 when none) and per point the change of grid index and
    the offset from the grid: ts = t0 + cumsum(dk) * step + off within each run."""
    gaps = np.diff(ts, prepend=ts[0]).astype(np.float64)
    # The median of (up to) the first STEP_SAMPLE gaps of each run: a sort of every gap costs
    # more than all the rest; any step decodes exactly, a good one just compresses better.
    counts = np.diff(np.r_[starts, ts.shape[0]]) - 1  # gaps per run
    idx = starts[:, None] + 1 + np.arange(STEP_SAMPLE)[None, :]
    valid = np.arange(STEP_SAMPLE)[None, :] < counts[:, None]
    sample = np.where(valid, gaps[np.minimum(idx, ts.shape[0] - 1)], np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runs of one point: all-NaN rows
        med = np.nanmedian(sample, axis=1)
    rough = np.where(np.isfinite(med) & (med >= 1), np.floor(med), 1.0)
    # Grid index steps from each gap (robust to jitter and to missing ticks), then the step
    # that fits the whole run best (least squares through the origin), so a rough step that is
    # off by a millisecond does not make offsets grow along an hour-long run.
    dk = np.rint(gaps / rough[seg]).astype(np.int64)
    dk[first] = 0
    k = np.cumsum(dk)
    k -= np.repeat(k[starts], np.diff(np.r_[starts, ts.shape[0]]))  # per-run cumsum
    t0 = ts[starts][seg]
    rel = (ts - t0).astype(np.float64)
    kf = k.astype(np.float64)
    num = np.add.reduceat(rel * kf, starts)
    den = np.add.reduceat(kf * kf, starts)
    with np.errstate(all="ignore"):
        fit = np.where(den > 0, np.rint(num / np.where(den > 0, den, 1)), 0)
    step = np.where((fit > 0) & (fit < 2 ** 31), fit, 0).astype(np.int64)
    k = np.where(step[seg] > 0, k, 0)
    dk = np.where(step[seg] > 0, dk, 0)
    off = ts - t0 - k * step[seg]
    return step, dk, off


def _value_ints(values: np.ndarray, seg: np.ndarray, starts: np.ndarray, first: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run the format and decimal scale, and per point the unsigned ints to store."""
    runs = starts.shape[0]
    bits = values.view(np.uint64)
    scale = np.full(runs, -1, np.int64)
    ok = np.isfinite(values)
    ints = np.zeros(values.shape[0], np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        for s in range(MAX_SCALE + 1):
            todo = (scale < 0)[seg]
            if not todo.any():
                break
            mult = 10.0 ** s
            scaled = values * mult
            fits = ok & (np.abs(scaled) < _LIMIT)
            cand = np.where(fits, np.round(scaled), 0).astype(np.int64)
            # Checked the way `decode` computes it (this also sends -0.0 to the XOR path).
            exact = fits & ((cand.astype(np.float64) / mult).view(np.uint64) == bits)
            run_ok = np.logical_and.reduceat(exact, starts) & (scale < 0)
            scale[run_ok] = s
            chosen = run_ok[seg]
            ints[chosen] = cand[chosen]
    decimal = (scale >= 0)[seg]
    deltas = np.diff(ints, prepend=0)
    deltas[first] = ints[first]
    prev = np.concatenate(([np.uint64(0)], bits[:-1]))
    prev[first] = 0
    out = np.where(decimal, _zigzag(deltas), bits ^ prev)
    fmt = np.where(scale >= 0, FORMAT_DECIMAL, FORMAT_XOR)
    return fmt, np.maximum(scale, 0), out


def _zigzag(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64, copy=False)
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.uint64, copy=False)
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _narrow(u: np.ndarray, top: int) -> np.ndarray:
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
