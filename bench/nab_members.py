"""A fourth ensemble member under the leave-one-category-out protocol (`bench/nab.py --cv members`).

The `art` detector (analytics/detectors/art.py, adaptive resonance in the spirit of ARTime) runs
once per file; its log-rarity trace is stacked under the three members' traces (variant "art",
5 rows) and recombined like them (`nab_cv.recombine` with `Config.art`). Printed: `art` alone,
today's default, the default plus `art` at a few discounts and multiplicity costs (each with the
threshold as the only choice per fold, plus the synthetic node at the fixed threshold), and the
whole set chosen per fold.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
from nab_cv import ANALYTICS, DEFAULT, Config, cross_validate, recombine, report
from nab_transfer import node_eval, node_traces, print_false_alarms

from legion.analytics.detectors.art import ArtDetector
from legion.analytics.detectors.base import StreamingDetector

ART_SOURCES = ("calibration.py", "detectors/base.py", "detectors/art.py")
# log10(4/3): the Bonferroni step from the best of 3 members to the best of 4.
COST4 = 0.45 + math.log10(4 / 3)
Corpus = list[tuple[str, np.ndarray, np.ndarray, list[tuple[int, int]]]]


def art_key() -> str:
    """Hash of the modules the `art` trace depends on."""
    h = hashlib.sha256()
    for rel in ART_SOURCES:
        h.update((ANALYTICS / rel).read_bytes())
    return h.hexdigest()[:12]


def art_trace(ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Log-rarity of the `art` detector per row (NaN where the value is not finite), exactly as
    inside `ArtDetector.update` before clipping and debouncing."""
    det = ArtDetector(debounce=0)
    out = np.full(len(vals), np.nan)
    for i in range(len(vals)):
        v = float(vals[i])
        if math.isfinite(v):
            out[i] = StreamingDetector.logp(det, int(ts[i]), v)
    return out


def _cached(cf: Path, ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
    if cf.exists():
        loaded: np.ndarray = np.load(cf, allow_pickle=False)
        return loaded
    tr = art_trace(ts, vals)
    cf.parent.mkdir(parents=True, exist_ok=True)
    np.save(cf, tr, allow_pickle=False)
    return tr


def with_art(corpus: Corpus, base: dict[str, np.ndarray], cache: Path) -> dict[str, np.ndarray]:
    """{file: 5-row traces}: the member traces of `base` with the `art` trace under them."""
    root = cache / f"art-{art_key()}"
    return {f: np.vstack([base[f], _cached(root / (f.replace("/", "__") + ".npy"), ts, v)])
            for f, ts, v, _ in corpus}


def node_with_art(cache: Path) -> list[tuple[Any, list[np.ndarray]]]:
    """The synthetic nodes' member traces (nab_transfer.node_traces) with the `art` row."""
    from multivar_node import make_node
    out = []
    for seed, (events, per) in enumerate(node_traces(cache)):
        ts, x, _ = make_node(14, seed)
        out.append((events, [np.vstack([tr, _cached(cache / f"art-{art_key()}" / "node"
                                                    / f"d14_s{seed}_m{j}.npy", ts, x[:, j])])
                             for j, tr in enumerate(per)]))
    return out


ART_ALONE = Config(variant="art", knn=False, blocks=False, mad=False, shift=False, agree=0.0,
                   cost=0.0, art=True)
CANDIDATES: list[tuple[str, Config]] = [
    ("`art` alone", ART_ALONE),
    ("today's default", DEFAULT),
    *[(f"default + `art` - {d:g}, cost {c:.3g}",
       Config(**{**DEFAULT.__dict__, "variant": "art", "art": True, "art_discount": d,
                 "cost": c}))
      for d in (0.0, 0.5, 1.0) for c in (0.45, COST4)],
]


def run_members(corpus: Corpus, traces: dict[str, dict[str, np.ndarray]], cache: Path,
                fixed: float) -> dict[str, Any]:
    """The table of CANDIDATES and the set chosen per fold (see the module docstring)."""
    traces = {**traces, "art": with_art(corpus, traces["base"], cache)}
    nodes = {"base": node_traces(cache), "art": node_with_art(cache)}
    print(f"  {'configuration':<40}{'plain':>7}{'CV':>7}{'T=' + format(fixed, 'g'):>7}"
          f"{'node':>7}{'fa/day':>7}{'warm':>6}")
    out: dict[str, Any] = {}
    for name, c in CANDIDATES:
        res = cross_validate(corpus, traces, [c], fixed)
        h, n, fa, warm = node_eval(nodes, c, fixed)
        out[name] = {"cfg": c.label(), **{k: res[k] for k in ("plain", "cv", "plain_fixed")},
                     "node": (h, n, fa, warm)}
        print(f"  {name:<40}{res['plain']:7.2f}{res['cv']:7.2f}{res['plain_fixed']:7.2f}"
              f"{h:>4}/{n}{fa:7.2f}{warm:6.1f}", flush=True)
    chosen = cross_validate(corpus, traces, [c for name, c in CANDIDATES if c is not ART_ALONE],
                            fixed)
    report("default or default + `art` (6 variants), chosen per fold", chosen, fixed)
    print("  `art` alone:")
    print_false_alarms(corpus, {f: recombine(traces["art"][f], ART_ALONE) for f, *_ in corpus},
                       fixed)
    out["chosen"] = chosen
    return out
