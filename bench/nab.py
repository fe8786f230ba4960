"""Score every detector on the NAB dev subset with our own scorer (shared/data/nab/SCORING.md).

    python bench/nab.py                         # all detectors, all three profiles
    python bench/nab.py --detectors mad,kmeans --jobs 2 --cache /tmp/nabcache
    python bench/nab.py --detectors ensemble --halves    # + standard score on two fixed halves
    python bench/nab.py --detectors ensemble --splits 100 --against /tmp/nab-before
        # + random half-splits against the cached scores of an earlier run (`--cache` there)
    python bench/nab.py --cv base,ablations --cache /tmp/nabcache
        # the leave-one-category-out protocol (bench/nab_cv.py): the figures every decision uses
    python bench/nab.py --cv members --cache /tmp/nabcache   # + `art` as a fourth member
    python bench/nab.py --root DIR --detectors ensemble --per-category
        # any folder in the same layout (data/<category>/<file>.csv, labels/windows.json), such
        # as the files kept for independent evaluation: the same scores `legionctl detect`
        # writes file by file; per category also the windows found and FP rows at the best
        # threshold of the whole folder
    python bench/nab.py --root DIR --cv none --cache /tmp/dircache
        # the same folder by the protocol, with its false alarms per day at 0.8 per category

Each file is processed from scratch by a fresh detector with the one default parameter set; the
labels only reach the scorer. The `jobs/s` column is the worker's incremental rate (60-point jobs
with state, bench/nab_speed.py; `--no-speed` leaves it out). The published baselines of BASELINES.md are printed alongside.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from legion.analytics.csvio import parse_ts, read_csv
from legion.analytics.detectors import DETECTORS, make_detector
from legion.analytics.scoring import PROFILES, prepare, score_corpus
from legion.analytics.config import AnalyticsConfig
from nab_constants import TUNED
from nab_speed import incremental_jobs_per_s

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def load_corpus(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, list[tuple[int, int]]]]:
    """(name, ts_ms, values, windows as row ranges) for every labelled file."""
    labels = json.loads((root / "labels" / "windows.json").read_text())
    out = []
    for name in sorted(labels):
        _, ts, vals = read_csv(root / "data" / name)
        rows = []
        for start, end in labels[name]:
            a = int(np.flatnonzero(ts == parse_ts(start))[0])
            b = int(np.flatnonzero(ts == parse_ts(end))[-1])
            rows.append((a, b))
        out.append((name, ts, vals, rows))
    return out


def _run_one(args: tuple[str, str, np.ndarray, np.ndarray]) -> tuple[str, str, np.ndarray, float]:
    det_name, file_name, ts, vals = args
    t0 = time.perf_counter()
    scores = make_detector(det_name).score(ts, vals)
    return det_name, file_name, scores, time.perf_counter() - t0


def cache_file(cache: Path, name: str, file_name: str) -> Path:
    """Where `--cache` keeps one detector's scores of one file."""
    return cache / name / (file_name.replace("/", "__") + ".npy")


def run_detector(name: str, corpus: list, jobs: int, cache: Path | None) -> tuple[dict, float]:
    """Scores per file (cached as .npy when a cache dir is given) and the CPU seconds taken."""
    scores: dict[str, np.ndarray] = {}
    todo = []
    for fname, ts, vals, _ in corpus:
        cf = cache_file(cache, name, fname) if cache else None
        if cf is not None and cf.exists():
            scores[fname] = np.load(cf, allow_pickle=False)
        else:
            todo.append((name, fname, ts, vals))
    secs = 0.0
    if todo:
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as ex:
                results = list(ex.map(_run_one, todo))
        else:
            results = [_run_one(t) for t in todo]
        for _, fname, sc, dt in results:
            scores[fname] = sc
            secs += dt
            if cache is not None:
                cf = cache_file(cache, name, fname)
                cf.parent.mkdir(parents=True, exist_ok=True)
                np.save(cf, sc, allow_pickle=False)
    return scores, secs


def random_splits(n_files: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` random halves: for each, a boolean mask of the files in the first half."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mask = np.zeros(n_files, dtype=bool)
        mask[rng.permutation(n_files)[:n_files // 2]] = True
        out.append(mask)
    return out


def split_scores(scores: dict, corpus: list, masks: list[np.ndarray]) -> np.ndarray:
    """Standard score of both halves of every split: shape (len(masks), 2)."""
    pairs = [(scores[f], w) for f, _, _, w in corpus]
    return np.array([[score_corpus([p for p, m in zip(pairs, mask) if m == side], "standard").score
                      for side in (True, False)] for mask in masks])


def load_cached(cache: Path, name: str, corpus: list) -> dict[str, np.ndarray]:
    """Scores of an earlier run saved by `--cache` (same files, same detector name)."""
    out = {}
    for fname, _, vals, _ in corpus:
        cf = cache_file(cache, name, fname)
        if not cf.exists():
            raise SystemExit(f"--against: no cached scores for {name} at {cf}")
        out[fname] = np.load(cf, allow_pickle=False)
        if len(out[fname]) != len(vals):
            raise SystemExit(f"--against: {cf} has {len(out[fname])} rows, the file {len(vals)}")
    return out


def found_at(pairs: list[tuple[np.ndarray, list[tuple[int, int]]]], thr: float
             ) -> tuple[int, int]:
    """(windows with a detection, rows at or above `thr` outside every window), after each
    file's probation: the per-category breakdown at the corpus' best threshold."""
    found = fps = 0
    for scores, wins in pairs:
        f = prepare(scores, wins, 1.0, 0.11)
        hit = f.scores >= thr
        found += len(set(f.window[hit & (f.window >= 0)].tolist()))
        fps += int((hit & (f.window < 0)).sum())
    return found, fps


def baselines(root: Path) -> list[tuple[str, list[str]]]:
    """Rows of the BASELINES.md table: (detector, [standard, low FP, low FN, ...]); none for a
    corpus without one (files kept for independent evaluation, in the same layout)."""
    path = root / "BASELINES.md"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        m = re.match(r"^\|\s*([A-Za-z]\w*)\s*\|\s*(-?[\d.]+)\s*\|", line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append((cells[0], cells[1:]))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--per-category", action="store_true")
    ap.add_argument("--halves", action="store_true",
                    help="also score two fixed halves (files sorted by name, even/odd position) "
                         "separately: a change should help on both, not just on the total")
    ap.add_argument("--splits", type=int, default=0,
                    help="score N random half-splits of the files (seed 0); with --against, "
                         "how often both halves gain")
    ap.add_argument("--against", type=Path, default=None,
                    help="a --cache folder of an earlier run to compare the splits with")
    ap.add_argument("--cv", default=None, metavar="GRIDS",
                    help="the leave-one-category-out protocol (bench/nab_cv.py) for the default "
                         "ensemble and the named grids (none, base, full, additions, recal, "
                         "ablations, members); "
                         "needs --cache")
    ap.add_argument("--cv-check", action="store_true",
                    help="with --cv: check the recombined ensemble against the detector")
    ap.add_argument("--no-speed", action="store_true",
                    help="leave out the jobs/s column (incremental jobs of 60 points per second "
                         "per worker, bench/nab_speed.py; issue 14 asks >= 25)")
    ap.add_argument("--threshold", type=float, default=AnalyticsConfig().anomaly_threshold,
                    help="the fixed threshold of the protocol (the product's anomaly_threshold)")
    a = ap.parse_args(argv)
    corpus = load_corpus(a.root)
    if a.cv is not None:
        from nab_cv import run_cv
        if a.cache is None:
            raise SystemExit("--cv needs --cache DIR (member traces are cached there)")
        if len({f.split("/")[0] for f, *_ in corpus}) < 2:
            raise SystemExit("--cv needs files of at least two categories: it leaves one "
                             "category out at a time")
        grids = [g for g in a.cv.split(",") if g and g != "none"]
        run_cv(corpus, a.cache, a.jobs, a.threshold, grids, a.cv_check)
        return 0
    n_rows = sum(len(v) for _, _, v, _ in corpus)
    hdr = f"{'detector':<22}{'Standard':>9}{'Low FP':>9}{'Low FN':>9}{'std thr':>9}" \
          f"{'windows':>9}{'FP rows':>8}{'rows/s':>9}{'tuned':>6}{'jobs/s':>8}"
    print(f"NAB {'dev subset' if a.root == DEFAULT_ROOT else a.root}: {len(corpus)} files, "
          f"{n_rows} rows, "
          f"{sum(len(w) for *_, w in corpus)} windows")
    print(hdr)
    for name in a.detectors.split(","):
        scores, secs = run_detector(name, corpus, a.jobs, a.cache)
        pairs = [(scores[f], w) for f, _, _, w in corpus]
        res = {p: score_corpus(pairs, p) for p in PROFILES}
        std = res["standard"]
        rate = f"{n_rows / secs:9.0f}" if secs else f"{'cached':>9}"
        print(f"{name:<22}{std.score:9.2f}{res['reward_low_FP_rate'].score:9.2f}"
              f"{res['reward_low_FN_rate'].score:9.2f}{std.threshold:9.4f}"
              f"{std.windows_found:>5}/{std.n_windows:<3}{std.fp_rows:8d}{rate}"
              f"{len(TUNED[name]) if name in TUNED else '?':>6}"
              f"{'' if a.no_speed else format(incremental_jobs_per_s(name), '8.1f')}", flush=True)
        if a.halves:
            for h in (0, 1):
                sub = [(scores[f], w) for j, (f, _, _, w) in enumerate(corpus) if j % 2 == h]
                r = score_corpus(sub, "standard")
                print(f"    half {h} ({len(sub)} files)           {r.score:7.2f}  "
                      f"{r.windows_found}/{r.n_windows} fp={r.fp_rows}")
        if a.splits:
            masks = random_splits(len(corpus), a.splits)
            now = split_scores(scores, corpus, masks)
            line = (f"    {a.splits} random half-splits: halves mean {now[:, 0].mean():.2f} / "
                    f"{now[:, 1].mean():.2f}")
            if a.against is not None:
                d = now - split_scores(load_cached(a.against, name, corpus), corpus, masks)
                line += (f"; against {a.against}: both halves up in "
                         f"{100 * np.mean((d > 0).all(axis=1)):.0f} %, mean {d.mean():+.2f}, "
                         f"worst {d.min():+.2f}")
            print(line)
        if a.per_category:
            cats = sorted({f.split("/")[0] for f, *_ in corpus})
            for c in cats:
                sub = [(scores[f], w) for f, _, _, w in corpus if f.startswith(c)]
                r = score_corpus(sub, "standard")
                found, fps = found_at(sub, std.threshold)
                print(f"    {c:<24} {r.score:7.2f}  {r.windows_found}/{r.n_windows} fp={r.fp_rows}"
                      f" (own best threshold); at {std.threshold:.4f}: {found}/{r.n_windows}"
                      f" fp={fps}")
    published = baselines(a.root)
    if published:
        print("published (BASELINES.md, same subset, same rules):")
    for name, cells in published:
        print(f"  {name:<20}" + "".join(f"{c:>9}" for c in cells[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
