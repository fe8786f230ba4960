"""Does a score of 0.8 mean the same everywhere? False alarms on quiet stretches of the NAB dev
files and on the synthetic nodes of bench/multivar_node.py, and the ablation table of the
ensemble's additions under the leave-one-category-out protocol (`bench/nab.py --cv ablations`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nab_cv import (DEFAULT, VARIANTS, Config, cross_validate, member_traces, recombine,
                    source_key)

# Today's default with one addition undone (`--cv ablations`).
ABLATIONS: list[tuple[str, dict]] = [
    ("no recurrence view (blocks)", {"blocks": False}),
    ("no agreement, no cost (plain max)", {"agree": 0.0, "cost": 0.0}),
    ("agree 0.5, no cost (the round before)", {"agree": 0.5, "cost": 0.0}),
    ("no multiplicity cost", {"cost": 0.0}),
    ("no trimmed tail (trim 0)", {"variant": "trim0"}),
    ("no standard error on the tail scale", {"variant": "se0"}),
    ("no time-of-day tolerance", {"variant": "tol0"}),
    ("no mad discount", {"mad_discount": 0.0}),
    ("agree 1, cost log10 3", {"agree": 1.0, "cost": math.log10(3)}),
    ("recalibrated combination", {"agree": 1.0, "cost": 0.0, "recal": True}),
    ("Fisher's method, no discount (`fisher`)", {"combine": "fisher", "mad_discount": 0.0}),
    ("Fisher's method, mad discount 1", {"combine": "fisher"}),
    ("rarity per 5 minutes of series time", {"per_time": True}),
    ("longer calibration history (5000)", {"variant": "win5000"}),
    ("per-series cost: q90 - 1 decade", {"cost_q": 0.9}),
    ("per-series cost: q90 - 1 decade, >= 0", {"cost_q": 0.9, "cost_floor": 0.0}),
]


# Age of a series in rows: `Rarity` keeps 2000 surprises, so before row 2000 a score is calibrated
# on a history that is still filling (a week of 5-minute rows).
AGES: tuple[tuple[str, int, int], ...] = (("age: rows 0-999", 0, 1000),
                                          ("age: rows 1000-1999", 1000, 2000),
                                          ("age: rows 2000+", 2000, 1 << 62))


def _groups(fname: str, n: int, by: str) -> list[tuple[str, slice]]:
    if by == "age":
        return [(label, slice(a, min(b, n))) for label, a, b in AGES if a < n]
    return [(fname.split("/")[0], slice(0, n))]


def false_alarms(corpus: list, scores: dict, thr: float, by: str = "category") -> list[tuple]:
    """Per category (`by="age"`: per age of the series, `AGES`): (group, quiet rows, days,
    rows >= thr, alarms/day, per 1000 rows, nominal alarms/day). Quiet = after probation,
    outside every window and outside one window width after it; nominal = what "1 in
    10**(thr*4) points" gives at that sampling rate."""
    from legion.analytics.scoring import probation
    acc: dict[str, list[float]] = {}
    for fname, ts, vals, wins in corpus:
        n = len(vals)
        quiet = np.zeros(n, dtype=bool)
        quiet[probation(n):] = True
        for a, b in wins:
            quiet[a:min(n, b + 1 + (b - a + 1))] = False
        step = float(np.median(np.diff(ts))) if n > 1 else 0.0
        for group, sel in _groups(fname, n, by):
            q = quiet[sel]
            rows = int(q.sum())
            alarms = int((scores[fname][sel][q] >= thr).sum())
            a = acc.setdefault(group, [0, 0.0, 0, 0.0])
            a[0] += rows
            a[1] += rows * step / 86_400_000
            a[2] += alarms
            a[3] += rows / 10 ** (4 * thr)
    out = []
    tot = [0, 0.0, 0, 0.0]
    for group in (sorted(acc) if by == "category" else [g for g, *_ in AGES if g in acc]):
        r, d, al, nom = acc[group]
        tot = [tot[0] + r, tot[1] + d, tot[2] + al, tot[3] + nom]
        out.append((group, r, d, al, al / d if d else 0.0, 1000 * al / r if r else 0.0,
                    nom / d if d else 0.0))
    r, d, al, nom = tot
    out.append(("all", r, d, al, al / d, 1000 * al / r, nom / d))
    return out


def print_false_alarms(corpus: list, scores: dict, thr: float) -> None:
    """The calibration table: false alarms at `thr` on the quiet stretches, per category and
    per age of the series (does 0.8 mean the same on a new series as on an old one?)."""
    print(f"    false alarms at {thr:g} on quiet stretches (after probation, outside windows and "
          f"one window width after them):")
    print(f"      {'category':<22}{'rows':>8}{'days':>8}{'alarms':>7}{'/day':>7}{'/1000 rows':>11}"
          f"{'nominal/day':>12}")
    for by in ("category", "age"):
        rows = false_alarms(corpus, scores, thr, by)
        for cat, r, d, al, pd, pk, nom in rows if by == "category" else rows[:-1]:
            print(f"      {cat:<22}{r:8d}{d:8.1f}{al:7d}{pd:7.2f}{pk:11.3f}{nom:12.3f}")


def node_traces(cache: Path, variant: str = "base", seeds: int = 3, days: int = 14) -> list:
    """Member traces of every metric of the synthetic nodes of bench/multivar_node.py:
    [(events, traces per metric)] per seed (cached like the NAB traces)."""
    from multivar_node import make_node
    out = []
    for seed in range(seeds):
        ts, x, events = make_node(days, seed)
        per = []
        for j in range(x.shape[1]):
            cf = (cache / f"traces-{source_key()}" / f"node-{variant}"
                  / f"d{days}_s{seed}_m{j}.npy")
            if cf.exists():
                per.append(np.load(cf, allow_pickle=False))
                continue
            tr = member_traces(ts, x[:, j], **VARIANTS[variant])
            cf.parent.mkdir(parents=True, exist_ok=True)
            np.save(cf, tr, allow_pickle=False)
            per.append(tr)
        out.append((events, per))
    return out


def node_eval(nodes: dict, c: Config, thr: float) -> tuple[int, int, float, float]:
    """(faults detected, faults, false alarms/day after warm-up, warm-up alarms per node) of
    configuration `c` on the synthetic nodes, scored as bench/multivar_node.py does."""
    from multivar_node import evaluate, warm_up_alarms
    hits = n = warm = 0
    fa = 0.0
    runs = nodes[c.variant]
    for events, per in runs:
        s = np.max([recombine(tr, c) for tr in per], axis=0)
        h, f = evaluate(s, events, thr)
        hits += sum(h.values())
        n += len(events)
        fa += f / len(runs)
        warm += warm_up_alarms(s, thr)
    return hits, n, fa, warm / len(runs)


def run_ablations(corpus: list, traces: dict, cache: Path, fixed: float) -> dict:
    """Today's default and each of `ABLATIONS`: plain dev, LOCO CV (threshold chosen per fold),
    plain dev at the fixed threshold, and the synthetic node at that threshold."""
    nodes = {v: node_traces(cache, v) for v in traces}
    print(f"  {'configuration':<40}{'plain':>7}{'CV':>7}{'T=' + format(fixed, 'g'):>7}"
          f"{'node':>7}{'fa/day':>7}{'warm':>6}")
    out = {}
    for name, kw in [("today's default", {})] + ABLATIONS:
        c = Config(**{**DEFAULT.__dict__, **kw})
        res = cross_validate(corpus, traces, [c], fixed)
        h, n, fa, warm = node_eval(nodes, c, fixed)  # 5-minute series: per_time is a no-op
        out[name] = {"cfg": c.label(), **{k: res[k] for k in ("plain", "cv", "plain_fixed")},
                     "node": (h, n, fa, warm)}
        print(f"  {name:<40}{res['plain']:7.2f}{res['cv']:7.2f}{res['plain_fixed']:7.2f}"
              f"{h:>4}/{n}{fa:7.2f}{warm:6.1f}", flush=True)
    return out
