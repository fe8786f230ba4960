"""Leave-one-category-out cross-validation on the NAB dev subset (`bench/nab.py --cv`).

The protocol of issue 14: every free choice (ensemble members, weights, discounts, the
threshold) is made on 6 of the 7 categories and scored on the 7th; the pooled score of the 7
held-out folds is the primary figure, printed beside the plain dev score (the same grid chosen
on all 31 files). It is run twice: with the threshold swept on the training categories, and
with the threshold fixed at the product's `analytics.anomaly_threshold` (what users get).

It is cheap because the ensemble is a function of its members' log-rarities: each member
variant runs once per file (cached as .npy, keyed by the source of the member modules), and
every configuration of the grid is a vectorised recombination + debounce + scoring of those
traces. `recombine` reproduces `EnsembleDetector.score` exactly (checked by `--cv-check`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from legion.analytics.calibration import Rarity
from legion.analytics.detectors.base import StreamingDetector
from legion.analytics.detectors.fisher import LN10
from legion.analytics.detectors.knn import KnnDetector
from legion.analytics.detectors.mad import MadDetector
from legion.analytics.detectors.shift import ShiftDetector
from legion.analytics.scoring import PROFILES, prepare

ANALYTICS = Path(__file__).resolve().parents[1] / "analytics"
TRACE_SOURCES = ("calibration.py", "detectors/base.py", "detectors/knn.py", "detectors/mad.py",
                 "detectors/shift.py")
MEMBERS = ("knn", "knnb", "mad", "shift")  # knnb = the kNN recurrence view (blocks of 4)

# Member variants that need a rerun of the members (everything else is a recombination).
VARIANTS: dict[str, dict] = {
    "base": {},                   # today's members: Rarity trim=1 + tail_se, mad tolerance 1/24
    "trim0": {"trim": 0},         # calibration without the trimmed tail
    "tol0": {"tolerance": 0.0},   # mad without the time-of-day tolerance
    "win5000": {"window": 5000},  # a longer calibration history (5000 surprises, not 2000)
    "se0": {"tail_se": False},    # calibration without the tail's standard error
}

# `per_time`: a tail probability p per row of a series sampled every step_s seconds is a rate of
# p / step_s per second; expressed per REF_STEP_S (5 minutes, the synthetic node's and most NAB
# files' step) the score means the same number of alarms per day on every series.
REF_STEP_S = 300.0


@dataclass(frozen=True)
class Config:
    """One ensemble configuration: a recombination of cached member traces."""

    variant: str = "base"
    knn: bool = True
    blocks: bool = True
    mad: bool = True
    shift: bool = True
    mad_discount: float = 1.0
    shift_discount: float = 0.0
    agree: float = 0.95
    cost: float = 0.45
    decades: float = 4.0
    recal: bool = False  # calibrate the combined log-rarity against its own history
    combine: str = "agree"  # or "fisher": Fisher's method (agree and cost unused)
    per_time: bool = False  # rarity per 5 minutes of series time instead of per row
    cost_q: float = 0.0  # > 0: cost per series = this quantile of its combined log-rarity
    #                      minus what a calibrated -log10 p gives there (-log10(1 - q))
    cost_floor: float = -math.inf  # the per-series cost never below this
    art: bool = False  # the `art` detector as a fourth member (variant "art": 5 trace rows)
    art_discount: float = 0.0

    def label(self) -> str:
        """Short description of the configuration."""
        mem = "+".join(m for m, on in (("knn", self.knn), ("mad", self.mad),
                                       ("shift", self.shift)) if on)
        return (f"{self.variant} {mem}{' blk' if self.blocks and self.knn else ''} "
                f"md={self.mad_discount:g} sd={self.shift_discount:g} a={self.agree:g} "
                f"c={self.cost:g} dec={self.decades:g}{' recal' if self.recal else ''}"
                + (f" {self.combine}" if self.combine != "agree" else "")
                + (" per-time" if self.per_time else "")
                + (f" cost-q{self.cost_q:g}>={self.cost_floor:g}" if self.cost_q else "")
                + (f" +art-{self.art_discount:g}" if self.art else ""))


DEFAULT = Config()


def source_key() -> str:
    """Hash of the member modules: cached traces are reused only while these are unchanged."""
    h = hashlib.sha256()
    for rel in TRACE_SOURCES:
        h.update((ANALYTICS / rel).read_bytes())
    return h.hexdigest()[:12]


def member_traces(ts: np.ndarray, vals: np.ndarray, trim: int = 1,
                  tolerance: float = 1 / 24, window: int = 2000,
                  tail_se: bool = True, knn: KnnDetector | None = None) -> np.ndarray:
    """Log-rarity of every member per row (shape (4, n), rows `MEMBERS`; NaN = value not
    finite, the ensemble skips the row), computed exactly as inside `EnsembleDetector`
    (`knn`: another kNN member in its place, bench/nab_local_views.py)."""
    knn = knn or KnnDetector(k=5, episodes=False, blocks=4, debounce=0)
    mad = MadDetector(tolerance=tolerance, debounce=0)
    sh = ShiftDetector(debounce=0)
    for r in (knn.rarity, knn.rarity_blocks, mad.rarity, sh.rarity):
        r.trim = trim
        r.tail_se = tail_se
        r.win.size = window  # still empty: only its capacity changes
    out = np.full((4, len(vals)), np.nan)
    for i in range(len(vals)):
        v = float(vals[i])
        if not math.isfinite(v):
            continue
        t = int(ts[i])
        knn.logp(t, v)
        out[0, i], out[1, i] = knn.views
        out[2, i] = mad.logp(t, v)
        out[3, i] = StreamingDetector.logp(sh, t, v)
    return out


def _trace_job(args: tuple) -> tuple[str, str, np.ndarray, float]:
    variant, fname, ts, vals = args
    t0 = time.perf_counter()
    tr = member_traces(ts, vals, **VARIANTS[variant])
    return variant, fname, tr, time.perf_counter() - t0


def load_traces(corpus: list, variants: list[str], cache: Path, jobs: int = 1) -> dict:
    """{variant: {file: traces}}, computing (and caching) the missing ones."""
    key = source_key()
    out: dict[str, dict[str, np.ndarray]] = {v: {} for v in variants}
    todo = []
    for v in variants:
        for fname, ts, vals, _ in corpus:
            cf = cache / f"traces-{key}" / v / (fname.replace("/", "__") + ".npy")
            if cf.exists():
                out[v][fname] = np.load(cf, allow_pickle=False)
            else:
                todo.append((v, fname, ts, vals))
    if todo:
        print(f"computing {len(todo)} member traces (cache {cache / f'traces-{key}'})",
              flush=True)
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(jobs) as ex:
                results = list(ex.map(_trace_job, todo))
        else:
            results = [_trace_job(t) for t in todo]
        for v, fname, tr, _ in results:
            out[v][fname] = tr
            cf = cache / f"traces-{key}" / v / (fname.replace("/", "__") + ".npy")
            cf.parent.mkdir(parents=True, exist_ok=True)
            np.save(cf, tr, allow_pickle=False)
    return out


def debounce(s: np.ndarray, span: int = 100, damp: float = 0.5, burst: int = 5,
             margin: float = 0.1) -> np.ndarray:
    """`calibration.Debounce` over a whole array (vectorised; identical results)."""
    n = len(s)
    if n == 0:
        return s.copy()
    pad = np.r_[np.full(span, -1.0), s]
    top = np.lib.stride_tricks.sliding_window_view(pad[:-1], span).max(axis=1)
    out = s * damp
    last_full = -(1 << 30)
    for i in np.flatnonzero(s > top).tolist():
        if i - last_full <= burst and s[i] < top[i] + margin:
            continue
        last_full = i
        out[i] = s[i]
    return out


def recombine(tr: np.ndarray, c: Config, step_s: float = REF_STEP_S) -> np.ndarray:
    """Ensemble scores of one file from its member traces under configuration `c`
    (`step_s`: the series' median sampling step, used by `per_time` only)."""
    ok = np.isfinite(tr[0])
    t = tr[:, ok]
    cols = []
    if c.knn:
        cols.append(np.minimum(t[0], t[1]) if c.blocks else t[0])
    if c.mad:
        cols.append(t[2] - c.mad_discount)
    if c.shift:
        cols.append(t[3] - c.shift_discount)
    if c.art:
        cols.append(t[4] - c.art_discount)
    m = np.sort(np.vstack(cols), axis=0)
    if c.combine == "fisher":
        x = LN10 * np.maximum(m, 0.0).sum(axis=0)
        lp = (x - np.log1p(x + x * x / 2.0)) / LN10
    else:
        lp = m[-1] + (c.agree * np.maximum(m[-2], 0.0) if len(cols) > 1 else 0.0) - c.cost
    if c.cost_q:
        raw = lp + c.cost
        q = (pd.Series(raw).rolling(2000, min_periods=100).quantile(c.cost_q, interpolation="lower")
             .shift(1).to_numpy())
        per = np.maximum(q + math.log10(1.0 - c.cost_q), c.cost_floor)
        lp = np.where(np.isfinite(per), raw - per, lp)
    if c.per_time:
        lp = lp + math.log10(step_s / REF_STEP_S)
    if c.recal:
        r = Rarity(2000, c.decades)
        cal = np.empty(len(lp))
        for i, x in enumerate(lp.tolist()):
            cal[i] = r.log_p(x)
            r.win.push(x)
        lp = cal
    s = np.clip(lp / c.decades, 0.0, 1.0)
    out = np.zeros(tr.shape[1])
    out[ok] = debounce(s)
    return out


def step_seconds(corpus: list) -> dict[str, float]:
    """Median sampling step in seconds of every file."""
    return {f: float(np.median(np.diff(ts))) / 1000.0 if len(ts) > 1 else REF_STEP_S
            for f, ts, *_ in corpus}


class Prepared:
    """Per-row window ids and values of the scored rows of every file, for one profile."""

    def __init__(self, corpus: list, profile: str = "standard") -> None:
        self.a_tp, self.a_fp, self.a_fn = PROFILES[profile]
        self.files = []
        offset = 0
        for fname, _, vals, wins in corpus:
            f = prepare(np.zeros(len(vals)), wins, self.a_tp, self.a_fp, offset)
            offset += f.n_windows
            self.files.append((fname, len(vals) - len(f.scores), f.window, f.value, f.n_windows))
        self.n_windows = offset

    def gather(self, scores: dict, names: set[str]) -> tuple:
        """Concatenated (scores, window ids, values, window count) of the named files."""
        sel = [(scores[f][p:], w, v, k) for f, p, w, v, k in self.files if f in names]
        return (np.concatenate([s for s, *_ in sel]), np.concatenate([w for _, w, _, _ in sel]),
                np.concatenate([v for _, _, v, _ in sel]), sum(k for *_, k in sel))

    def norm(self, gain: float, n_windows: int) -> float:
        """Normalised score of a raw gain over "no detections" (S - S_null)."""
        return 100.0 * gain / ((self.a_tp + self.a_fn) * n_windows) if n_windows else 0.0

    def best(self, sc: np.ndarray, wi: np.ndarray, va: np.ndarray) -> tuple[float, float]:
        """(gain over null at the best threshold, that threshold): the exact sweep of
        scoring.sweep, vectorised (ties: the highest threshold)."""
        order = np.argsort(-sc, kind="stable")
        sc, wi, va = sc[order], wi[order], va[order]
        inc = np.where(wi < 0, va, 0.0)
        idx = np.flatnonzero(wi >= 0)
        if len(idx):
            w = wi[idx]
            o = np.lexsort((idx, w))
            wg, vg = w[o], va[idx][o] * (1.0 / self.a_tp)
            cm = np.maximum.accumulate(vg + 4.0 * wg) - 4.0 * wg
            first = np.r_[True, wg[1:] != wg[:-1]]
            d = np.empty(len(cm))
            d[first] = cm[first] * self.a_tp + self.a_fn
            d[~first] = (cm[1:] - cm[:-1])[~first[1:]] * self.a_tp
            inc[idx[o]] = d
        gain = np.cumsum(inc)
        ends = np.flatnonzero(np.r_[sc[1:] != sc[:-1], True])
        if not len(ends):
            return 0.0, math.inf
        k = int(np.argmax(gain[ends]))
        g = float(gain[ends][k])
        return (g, float(sc[ends][k])) if g > 1e-12 else (0.0, math.inf)

    def at(self, sc: np.ndarray, wi: np.ndarray, va: np.ndarray, thr: float) -> float:
        """Gain over null with the threshold fixed at `thr`."""
        det = sc >= thr
        g = float(va[det & (wi < 0)].sum())
        hit = det & (wi >= 0)
        if hit.any():
            best = np.full(int(wi.max()) + 1, -np.inf)
            np.maximum.at(best, wi[hit], va[hit])
            found = best[np.isfinite(best)]
            g += float(found.sum()) + self.a_fn * len(found)
        return g


def grid(variants: list[str]) -> list[Config]:
    """The free choices the last rounds tuned (members, recurrence view, discounts, agreement,
    multiplicity cost, trimmed tail, seasonal tolerance, decades), today's default first."""
    out = [DEFAULT]
    for v, blk, md, sd, ag, cost, dec in itertools.product(
            variants, (True, False), (0.0, 0.5, 1.0, 1.5), (0.0, 0.5), (0.0, 0.5, 0.8, 0.95),
            (0.0, 0.45), (4.0,)):
        c = Config(v, True, blk, True, True, md, sd, ag, cost, dec)
        if c != DEFAULT:
            out.append(c)
    return out


def grid_additions(variants: list[str]) -> list[Config]:
    """Each addition of the last rounds kept or removed, at the value it was added with:
    recurrence view, agreement (0.95), multiplicity cost (0.45), `mad` discount (1), and the
    member variants (trimmed tail, time-of-day tolerance). The decision issue 14 asks for, with
    binary choices only; the `base` grid also re-chooses the values."""
    out = [DEFAULT]
    for v, blk, ag, cost, md in itertools.product(variants, (True, False), (0.95, 0.0),
                                                  (0.45, 0.0), (1.0, 0.0)):
        c = Config(v, True, blk, True, True, md, 0.0, ag, cost)
        if c != DEFAULT:
            out.append(c)
    return out


def grid_recal(variants: list[str]) -> list[Config]:
    """Configurations whose combined log-rarity is calibrated again against its own history
    (`recal`): the multiplicity cost is then irrelevant (a constant shift) and not searched."""
    return [Config(v, True, blk, True, True, md, sd, ag, 0.0, 4.0, True)
            for v, blk, md, sd, ag in itertools.product(
                variants, (True, False), (0.0, 0.5, 1.0), (0.0, 0.5), (0.0, 0.5, 1.0))]


def cross_validate(corpus: list, traces: dict, configs: list[Config], fixed: float,
                   profile: str = "standard") -> dict:
    """Plain dev and leave-one-category-out figures of choosing among `configs`
    (`cross_validate_scores` of their recombined scores)."""
    steps = step_seconds(corpus)
    cands = ((cfg.label(), {f: recombine(traces[cfg.variant][f], cfg, steps[f])
                            for f, *_ in corpus}) for cfg in configs)
    return cross_validate_scores(corpus, cands, fixed, profile)


def cross_validate_scores(corpus: list, candidates: Iterable[tuple[str, dict]], fixed: float,
                          profile: str = "standard") -> dict:
    """Plain dev and leave-one-category-out figures of choosing among candidate detectors
    (label, {file: scores}).

    For each fold the candidate (and, swept, the threshold) with the best training score
    (6 categories) is applied to the held-out category; the pooled held-out gains are
    normalised with all windows (raw scores add up over files at a fixed threshold per fold).
    """
    prep = Prepared(corpus, profile)
    cats = sorted({f.split("/")[0] for f, *_ in corpus})
    all_names = {f for f, *_ in corpus}
    folds = [(c, {f for f in all_names if f.startswith(c + "/")}) for c in cats]
    rows = []  # per candidate: (plain gain, plain thr, fixed gain, [(train swept gain, thr,
    #             held gain at thr, train fixed gain, held fixed gain) per fold])
    labels = []
    for label, scores in candidates:
        labels.append(label)
        sc, wi, va, _ = prep.gather(scores, all_names)
        pg, pt = prep.best(sc, wi, va)
        pf = prep.at(sc, wi, va, fixed)
        per = []
        for _, held in folds:
            tr = prep.gather(scores, all_names - held)[:3]
            he = prep.gather(scores, held)[:3]
            g, t = prep.best(*tr)
            per.append((g, t, prep.at(*he, t), prep.at(*tr, fixed), prep.at(*he, fixed)))
        rows.append((pg, pt, pf, per))
    nw = prep.n_windows
    plain_i = max(range(len(labels)), key=lambda i: (rows[i][0], -i))
    fixed_i = max(range(len(labels)), key=lambda i: (rows[i][2], -i))
    res = {"configs": len(labels), "plain": prep.norm(rows[plain_i][0], nw),
           "plain_thr": rows[plain_i][1], "plain_cfg": labels[plain_i],
           "plain_fixed": prep.norm(rows[fixed_i][2], nw), "plain_fixed_cfg":
           labels[fixed_i], "folds": []}
    cv = cvf = 0.0
    for j, (cat, _) in enumerate(folds):
        i = max(range(len(labels)), key=lambda i: (rows[i][3][j][0], -i))
        k = max(range(len(labels)), key=lambda i: (rows[i][3][j][3], -i))
        cv += rows[i][3][j][2]
        cvf += rows[k][3][j][4]
        res["folds"].append((cat, labels[i], rows[i][3][j][1], rows[i][3][j][2],
                             labels[k], rows[k][3][j][4]))
    res["cv"], res["cv_fixed"] = prep.norm(cv, nw), prep.norm(cvf, nw)
    return res


def report(name: str, res: dict, fixed: float) -> None:
    """Print one protocol result."""
    print(f"{name}: {res['configs']} configuration(s) chosen per fold")
    print(f"    plain dev (swept)   {res['plain']:7.2f}  thr {res['plain_thr']:.4f}  "
          f"[{res['plain_cfg']}]")
    print(f"    LOCO CV (swept)     {res['cv']:7.2f}  gap {res['plain'] - res['cv']:+.2f}")
    print(f"    plain dev (T={fixed:g})   {res['plain_fixed']:7.2f}  [{res['plain_fixed_cfg']}]")
    print(f"    LOCO CV (T={fixed:g})     {res['cv_fixed']:7.2f}  "
          f"gap {res['plain_fixed'] - res['cv_fixed']:+.2f}")
    for cat, lab, thr, g, labf, gf in res["folds"]:
        print(f"      {cat:<22} held-out gain {g:+7.2f} at thr {thr:.3f} [{lab}]; "
              f"T={fixed:g}: {gf:+7.2f}" + ("" if labf == lab else f" [{labf}]"))


def run_cv(corpus: list, cache: Path, jobs: int, fixed: float, grids: list[str],
           check: bool = False) -> dict:
    """The protocol for the default ensemble alone (only the threshold is chosen per fold) and
    for each named grid: 'base', 'full' (+ the trim0/tol0 member variants), 'additions',
    'recal', 'ablations' (bench/nab_transfer.py: each addition undone, with the synthetic node) and
    'members' (bench/nab_members.py: the `art` detector as a fourth member)."""
    from nab_constants import TUNED
    from nab_transfer import print_false_alarms, run_ablations
    unknown = set(grids) - {"base", "full", "additions", "recal", "ablations", "members"}
    if unknown:
        raise SystemExit(f"--cv: unknown grid(s) {sorted(unknown)}; "
                         "choose from base, full, additions, recal, ablations, members")
    variants = sorted({"base"} | ({"trim0", "tol0"} if {"full", "additions", "ablations"}
                                  & set(grids) else set()))
    traces = load_traces(corpus, variants + (["win5000", "se0"] if "ablations" in grids else []),
                         cache, jobs)
    if check:
        from legion.analytics.detectors import make_detector
        for fname, ts, vals, _ in corpus[:3]:
            a = make_detector("ensemble").score(ts, vals)
            b = recombine(traces["base"][fname], DEFAULT)
            print(f"check {fname}: max |ensemble - recombined| = {np.abs(a - b).max():.3g}")
    print("tuned constants: " + ", ".join(f"{k} {len(v)}" for k, v in TUNED.items()))
    out = {"default": cross_validate(corpus, traces, [DEFAULT], fixed)}
    report("ensemble default (threshold only)", out["default"], fixed)
    print_false_alarms(corpus, {f: recombine(traces["base"][f], DEFAULT) for f, *_ in corpus},
                       fixed)
    for g in grids:
        if g == "ablations":
            out[g] = run_ablations(corpus, traces, cache, fixed)
            continue
        if g == "members":  # a fourth member, `art` (bench/nab_members.py)
            from nab_members import run_members
            out[g] = run_members(corpus, traces, cache, fixed, jobs)
            continue
        cfgs = (grid_recal(["base"]) if g == "recal" else grid_additions(variants)
                if g == "additions" else grid(["base"] if g == "base" else variants))
        out[g] = cross_validate(corpus, traces, cfgs, fixed)
        report(f"ensemble grid '{g}'", out[g], fixed)
    return out
