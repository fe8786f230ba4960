"""A labelled corpus that no detector here was ever tuned on, in the NAB layout.

Issue 14: the dev files have been learnt as a whole, so no split of them can say how a detector
does on new series. This script asks a third party's generator, TimeEval's GutenTAG
(https://github.com/TimeEval/GutenTAG, `pip install timeeval-gutentag==1.5.0`), for series of
seven kinds of base signal with injected anomalies of its own kinds, and writes them as
`data/<kind>/<file>.csv` + `labels/windows.json`, so that `bench/nab.py --root OUT` scores them
exactly as it scores NAB (same scorer, same windows rule, leave-one-kind-out CV).

The design was fixed and committed before any detector was run on its output; nothing in
`analytics/` may be chosen on it (see docs/detector-evaluation.md, "An independent corpus").

    python -m venv /tmp/gt && /tmp/gt/bin/pip install timeeval-gutentag==1.5.0
    TQDM_DISABLE=1 /tmp/gt/bin/python bench/gutentag_corpus.py /tmp/gt_nab     # ~10 s
    python bench/nab.py --root /tmp/gt_nab --per-category --no-speed --cache /tmp/gtcache
    python bench/nab.py --root /tmp/gt_nab --cv ablations --no-speed --cache /tmp/gtcache
    python bench/gutentag_corpus.py /tmp/gt_nab --found-per-kind /tmp/gtcache \
        --thresholds ensemble=0.6041,residual=0.6596        # each one's best threshold

(GutenTAG is imported only to write the corpus; scoring runs in the product's environment.)

Design: 7 kinds x 5 files x 4032 rows 5 minutes apart (14 days, NAB's most common shape);
periodic kinds repeat once a day (288 rows) or twice; GutenTAG's relative white noise on every
series; 1 to 3 anomalies per file, each of a kind GutenTAG's compatibility table allows on that
base, from 1 row (an extremum) to 144 (a frequency change: half a day), in the base's own scale,
placed after NAB's probation (the first 15 %) and apart from each other. Seven kinds: sine,
square, sawtooth, ecg, cylinder-bell-funnel, random-walk, polynomial (a slowly filling gauge).
Windows follow NAB's rule: 10 % of the file's length shared out between its anomalies, centred
on the anomaly's first row (and stretched to its last row when it is longer). Each seed's 35
files are drawn from that seed alone; the default pools seeds 14, 15 and 16 (105 files), since
one seed's 35 files move a detector's score by several points (docs/detector-evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROWS = 4032
STEP = timedelta(minutes=5)
START = datetime(2026, 1, 5, tzinfo=UTC)
DAY = 288                      # rows per day at 5 minutes
PER_DAY = 100.0 / DAY          # GutenTAG frequency = periods per 100 points
FILES_PER_KIND = 5


def allowed_anomalies(base_kind: str) -> list[str]:
    """The univariate anomaly kinds GutenTAG's own compatibility table allows on a base."""
    from gutenTAG.utils.compatibility import Compatibility
    table = Compatibility.combinations
    return [str(a).replace("_", "-") for a in table.index
            if a != "mode_correlation" and table.loc[a, base_kind]]


def base_signal(kind: str, rng: np.random.Generator) -> dict:
    """GutenTAG's base-oscillation config for `kind`, in a random scale."""
    amp = float(rng.uniform(1.0, 10.0))
    offset = float(rng.uniform(0.0, 5.0) * amp)
    noise = float(rng.uniform(0.01, 0.1))
    freq = PER_DAY * float(rng.choice([1.0, 2.0]))
    common = {"amplitude": amp, "offset": offset, "variance": noise}
    if kind == "sine":
        return {"kind": "sine", "frequency": freq, **common}
    if kind == "square":
        return {"kind": "square", "frequency": freq, "duty": float(rng.uniform(0.2, 0.6)), **common}
    if kind == "sawtooth":
        return {"kind": "sawtooth", "frequency": freq, "width": float(rng.uniform(0.5, 1.0)),
                **common}
    if kind == "ecg":
        return {"kind": "ecg", "frequency": freq, "ecg-sim-method": "simple", **common}
    if kind == "cylinder-bell-funnel":
        return {"kind": "cylinder-bell-funnel", "avg-pattern-length": int(rng.integers(24, 96)),
                "variance-pattern-length": 0.2, "variance-amplitude": 0.1, **common}
    if kind == "random-walk":
        return {"kind": "random-walk", "smoothing": float(rng.uniform(0.002, 0.02)), **common}
    if kind == "polynomial":    # a slowly filling gauge (a disk), noise around the line
        slope = float(rng.uniform(0.5, 3.0) * amp / ROWS)
        return {"kind": "polynomial", "polynomial": [offset, slope], "variance": noise}
    raise ValueError(kind)


def anomaly_kind(kind: str, base: dict, rng: np.random.Generator) -> tuple[dict, int]:
    """One GutenTAG anomaly kind with parameters in the base's own scale, and its length."""
    amp = float(base.get("amplitude", base.get("polynomial", [0.0, 0.0])[-1] * ROWS))
    length = int(rng.integers(6, 73))
    if kind == "extremum":
        return {"kind": "extremum", "min": bool(rng.random() < 0.3),
                "local": bool(rng.random() < 0.5)}, 1
    if kind == "platform":
        return {"kind": "platform", "value": float(base.get("offset", 0.0)
                                                   + rng.uniform(-1.0, 1.0) * amp)}, length
    if kind == "mean":
        shift = float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.5) * amp)
        return {"kind": "mean", "offset": shift}, length
    if kind == "variance":
        return {"kind": "variance", "variance": float(rng.uniform(0.1, 0.5))}, length
    if kind == "amplitude":
        return {"kind": "amplitude", "amplitude_factor": float(rng.choice([0.3, 0.5, 2.0, 3.0]))}, \
            max(length, 36)
    if kind == "trend":    # GutenTAG splits a trend 20/80 and needs the parts to add up
        return {"kind": "trend", "oscillation": {"kind": "polynomial", "polynomial": [
            0.0, float(rng.choice([-1, 1]) * amp / 50)]}}, 5 * max(2, length // 5)
    if kind == "frequency":
        return {"kind": "frequency", "frequency_factor": float(rng.choice([0.5, 2.0, 3.0]))}, \
            max(length, DAY // 2)
    if kind == "pattern":
        return {"kind": "pattern", "sinusoid_k": float(rng.uniform(2.0, 10.0)),
                "cbf_pattern_factor": float(rng.uniform(1.5, 3.0)),
                "square_duty": float(rng.uniform(0.1, 0.9)),
                "sawtooth_width": float(rng.uniform(0.0, 0.4))}, max(length, 36)
    if kind == "pattern-shift":
        shift = int(rng.integers(5, 40))
        return {"kind": "pattern-shift", "shift_by": shift,
                "transition_window": shift}, max(length, 36)
    raise ValueError(kind)


def place(count: int, lengths: list[int], rng: np.random.Generator) -> list[int]:
    """Start rows after the probation, at least a window width apart (NAB's windows never meet)."""
    width = int(0.1 * ROWS / count)
    lo, hi = int(0.2 * ROWS), ROWS - width
    for _ in range(1000):
        starts = sorted(int(s) for s in rng.integers(lo, hi, count))
        if all(b - a >= width + la for a, b, la in zip(starts, starts[1:], lengths, strict=False)):
            return starts
    raise RuntimeError("cannot place the anomalies")


def file_config(name: str, kind: str, rng: np.random.Generator) -> dict:
    base, allowed = base_signal(kind, rng), allowed_anomalies(kind)
    count = int(rng.integers(1, 4))
    kinds = [anomaly_kind(str(rng.choice(allowed)), base, rng) for _ in range(count)]
    starts = place(count, [n for _, n in kinds], rng)
    anomalies = [{"exact-position": s, "length": n, "channel": 0, "kinds": [k]}
                 for s, (k, n) in zip(starts, kinds, strict=True)]
    return {"name": name, "length": ROWS, "semi-supervised": False, "supervised": False,
            "base-oscillations": [base], "anomalies": anomalies}


def windows(labels: np.ndarray) -> list[tuple[int, int]]:
    """NAB's rule on the labelled regions: 10 % of the rows shared out, centred on each start."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], labels.astype(int), [0]])))
    regions = list(zip(edges[::2], edges[1::2] - 1, strict=True))
    if not regions:
        return []
    half = int(0.1 * len(labels) / len(regions)) // 2
    return [(max(0, a - half), min(len(labels) - 1, max(a + half, b))) for a, b in regions]


def generate(name: str, kind: str, rng: np.random.Generator) -> tuple[dict, object]:
    """One file's config and GutenTAG's frame. GutenTAG refuses some draws (a pattern anomaly
    whose period-aligned length does not fit, for one); those are drawn again, from the same rng,
    so the corpus stays a function of the seed."""
    from gutenTAG import GutenTAG
    for _ in range(50):
        cfg = file_config(name, kind, rng)
        gen = GutenTAG(seed=int(rng.integers(1 << 30)))
        gen.load_config_dict({"timeseries": [cfg]})
        try:
            (ts,) = gen.generate(return_timeseries=True)
        except (ValueError, AssertionError):
            continue
        return cfg, ts.timeseries
    raise RuntimeError(f"GutenTAG refused 50 draws for {name}")


KINDS = ["sine", "square", "sawtooth", "ecg", "cylinder-bell-funnel", "random-walk", "polynomial"]


def write_corpus(out: Path, seeds: list[int]) -> None:
    """Every seed's 35 files under `out` (`<kind>/s<seed>_<kind>_<i>.csv`), NAB's
    `labels/windows.json`, and `labels/kinds.json` (each window's anomaly kind, in order)."""
    stamps = [(START + i * STEP).strftime("%Y-%m-%d %H:%M:%S") for i in range(ROWS)]
    labels_out: dict[str, list[list[str]]] = {}
    kinds_out: dict[str, list[str]] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for kind in KINDS:
            for i in range(FILES_PER_KIND):
                path = f"{kind}/s{seed}_{kind}_{i}.csv"
                cfg, frame = generate(f"{kind}_{i}", kind, rng)
                values = frame[[c for c in frame.columns if c != "is_anomaly"][0]].to_numpy(float)
                target = out / "data" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("timestamp,value\n" + "".join(
                    f"{t},{v:.6g}\n" for t, v in zip(stamps, values, strict=True)))
                labels_out[path] = [[stamps[a] + ".000000", stamps[b] + ".000000"]
                                    for a, b in windows(frame["is_anomaly"].to_numpy() > 0)]
                kinds_out[path] = [a["kinds"][0]["kind"] for a in cfg["anomalies"]]
                print(f"{path}: {len(labels_out[path])} window(s) {kinds_out[path]}",
                      file=sys.stderr, flush=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "windows.json").write_text(json.dumps(labels_out, indent=1))
    (out / "labels" / "kinds.json").write_text(json.dumps(kinds_out, indent=1))


def found_per_kind(root: Path, cache: Path, thresholds: dict[str, float]) -> None:
    """Windows found per anomaly kind: a window counts when the detector's cached score
    (`bench/nab.py --cache`) reaches its threshold inside it."""
    from nab import cache_file, load_corpus
    kinds = json.loads((root / "labels" / "kinds.json").read_text())
    total: dict[str, int] = {}
    found: dict[tuple[str, str], int] = {}
    for name, _, _, wins in load_corpus(root):
        scores = {d: np.load(cache_file(cache, d, name)) for d in thresholds}
        for (a, b), kind in zip(wins, kinds[name], strict=True):
            total[kind] = total.get(kind, 0) + 1
            for d, thr in thresholds.items():
                found[kind, d] = found.get((kind, d), 0) + int(scores[d][a:b + 1].max() >= thr)
    print(f"{'kind':<15}{'windows':>8}" + "".join(f"{d[:12]:>13}" for d in thresholds))
    for kind in sorted(total):
        print(f"{kind:<15}{total[kind]:>8}"
              + "".join(f"{found[kind, d]:>13}" for d in thresholds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", default="14,15,16", help="comma-separated; 35 files per seed")
    ap.add_argument("--found-per-kind", metavar="CACHE", type=Path,
                    help="instead of writing: windows found per anomaly kind, from the scores "
                         "`bench/nab.py --root OUT --cache CACHE` kept")
    ap.add_argument("--thresholds", default="",
                    help="with --found-per-kind: detector=threshold,... (each one's best "
                         "standard threshold, as bench/nab.py prints it)")
    args = ap.parse_args()
    if args.found_per_kind:
        thr = {d: float(t) for d, t in (x.split("=") for x in args.thresholds.split(",") if x)}
        if not thr:
            raise SystemExit("--found-per-kind needs --thresholds detector=threshold,...")
        found_per_kind(args.out, args.found_per_kind, thr)
        return 0
    write_corpus(args.out, [int(x) for x in args.seeds.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
