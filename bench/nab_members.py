"""A fourth ensemble member under the leave-one-category-out protocol (`bench/nab.py --cv members`).

Each detector of `EXTRA` (`art`: adaptive resonance in the spirit of ARTime; `context`:
contextOSE; `residual`, the local view of bench/nab_local_views.py) runs once per file; its
log-rarity trace is stacked under the three members' traces (variant = its name, 5 rows) and
recombined like them (`nab_cv.recombine` with `Config.art`, the fifth row). Printed per
detector: it alone, today's default, the default plus it at a few discounts and multiplicity
costs (each with the threshold as the only choice per fold, plus the synthetic node at the fixed
threshold), and the whole set chosen per fold; for `context` also contextOSE's own uncalibrated
score (`calibrated=False`), alone and chosen per fold against the calibrated one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from nab_cv import (
    ANALYTICS,
    DEFAULT,
    Config,
    cross_validate,
    cross_validate_scores,
    recombine,
    report,
)
from nab_transfer import node_eval, node_traces, print_false_alarms

from legion.analytics.detectors.art import ArtDetector
from legion.analytics.detectors.base import StreamingDetector
from legion.analytics.detectors.context import ContextDetector
from legion.analytics.detectors.residual import ResidualDetector

# The fourth members measured: name -> (modules their trace depends on, a fresh detector).
EXTRA: dict[str, tuple[tuple[str, ...], Callable[[], StreamingDetector]]] = {
    "art": (("calibration.py", "detectors/base.py", "detectors/art.py"),
            lambda: ArtDetector(debounce=0)),
    "context": (("calibration.py", "detectors/base.py", "detectors/context.py"),
                lambda: ContextDetector(calibrated=True, debounce=0)),
    "art_adaptive": (("calibration.py", "detectors/base.py", "detectors/art.py",
                      "detectors/art_vigilance.py"),
                     lambda: ArtDetector(adaptive=True, debounce=0)),
    "residual": (("calibration.py", "detectors/base.py", "detectors/residual.py",
                  "detectors/mad.py"),
                 lambda: ResidualDetector(debounce=0)),
}
# The same detectors with their own (uncalibrated) score, as published.
RAW: dict[str, Callable[[], StreamingDetector]] = {
    "context": lambda: ContextDetector(calibrated=False),
    "art_adaptive": lambda: ArtDetector(adaptive=True, calibrated=False),
}
# log10(4/3): the Bonferroni step from the best of 3 members to the best of 4.
COST4 = 0.45 + math.log10(4 / 3)
Corpus = list[tuple[str, np.ndarray, np.ndarray, list[tuple[int, int]]]]


def member_key(name: str) -> str:
    """Hash of the modules the trace of member `name` depends on."""
    h = hashlib.sha256()
    for rel in EXTRA[name][0]:
        h.update((ANALYTICS / rel).read_bytes())
    return f"{name}-{h.hexdigest()[:12]}"


def member_trace(name: str, ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Log-rarity of member `name` per row (NaN where the value is not finite), exactly as
    inside its `update` before clipping and debouncing."""
    det = EXTRA[name][1]()
    out = np.full(len(vals), np.nan)
    for i in range(len(vals)):
        v = float(vals[i])
        if math.isfinite(v):
            out[i] = StreamingDetector.logp(det, int(ts[i]), v)
    return out


def art_trace(ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """The `art` member's trace (`member_trace("art", ...)`)."""
    return member_trace("art", ts, vals)


def _cached(cf: Path, name: str, ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
    if cf.exists():
        loaded: np.ndarray = np.load(cf, allow_pickle=False)
        return loaded
    tr = member_trace(name, ts, vals)
    cf.parent.mkdir(parents=True, exist_ok=True)
    np.save(cf, tr, allow_pickle=False)
    return tr


def _trace_job(args: tuple[Path, str, np.ndarray, np.ndarray]) -> None:
    _cached(*args)


def with_member(corpus: Corpus, base: dict[str, np.ndarray], cache: Path, name: str,
                jobs: int = 1) -> dict[str, np.ndarray]:
    """{file: 5-row traces}: the member traces of `base` with member `name`'s trace under them
    (computed in `jobs` processes when not cached)."""
    root = cache / member_key(name)
    todo = [(root / (f.replace("/", "__") + ".npy"), name, ts, v) for f, ts, v, _ in corpus]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs) as ex:
            list(ex.map(_trace_job, [t for t in todo if not t[0].exists()]))
    return {f: np.vstack([base[f], _cached(*t)]) for (f, *_), t in zip(corpus, todo, strict=True)}


def node_with(cache: Path, name: str) -> list[tuple[Any, list[np.ndarray]]]:
    """The synthetic nodes' member traces (nab_transfer.node_traces) with member `name`."""
    from multivar_node import make_node
    out = []
    for seed, (events, per) in enumerate(node_traces(cache)):
        ts, x, _ = make_node(14, seed)
        out.append((events, [np.vstack([tr, _cached(cache / member_key(name) / "node"
                                                    / f"d14_s{seed}_m{j}.npy", name, ts, x[:, j])])
                             for j, tr in enumerate(per)]))
    return out


def alone(name: str) -> Config:
    """Member `name` alone (its calibrated, debounced score)."""
    return Config(variant=name, knn=False, blocks=False, mad=False, shift=False, agree=0.0,
                  cost=0.0, art=True)


def candidates(name: str) -> list[tuple[str, Config]]:
    """Member `name` alone, the default, and the default + `name` at a few discounts/costs."""
    return [(f"`{name}` alone", alone(name)), ("today's default", DEFAULT),
            *[(f"default + `{name}` - {d:g}, cost {c:.3g}",
               Config(**{**DEFAULT.__dict__, "variant": name, "art": True, "art_discount": d,
                         "cost": c}))
              for d in (0.0, 0.5, 1.0) for c in (0.45, COST4)]]


def run_members(corpus: Corpus, traces: dict[str, dict[str, np.ndarray]], cache: Path,
                fixed: float, jobs: int = 1) -> dict[str, Any]:
    """For every member of EXTRA: the table of its candidates and the set chosen per fold
    (see the module docstring)."""
    out: dict[str, Any] = {}
    for name in EXTRA:
        traces[name] = with_member(corpus, traces["base"], cache, name, jobs)
        nodes = {"base": node_traces(cache), name: node_with(cache, name)}
        print(f"  {'configuration':<40}{'plain':>7}{'CV':>7}{'T=' + format(fixed, 'g'):>7}"
              f"{'node':>7}{'fa/day':>7}{'warm':>6}")
        for label, c in candidates(name):
            res = cross_validate(corpus, traces, [c], fixed)
            h, n, fa, warm = node_eval(nodes, c, fixed)
            out[label] = {"cfg": c.label(), **{k: res[k] for k in ("plain", "cv", "plain_fixed")},
                          "node": (h, n, fa, warm)}
            print(f"  {label:<40}{res['plain']:7.2f}{res['cv']:7.2f}{res['plain_fixed']:7.2f}"
                  f"{h:>4}/{n}{fa:7.2f}{warm:6.1f}", flush=True)
        chosen = cross_validate(corpus, traces, [c for _, c in candidates(name)[1:]], fixed)
        report(f"default or default + `{name}` (6 variants), chosen per fold", chosen, fixed)
        print(f"  `{name}` alone:")
        print_false_alarms(corpus, {f: recombine(traces[name][f], alone(name))
                                    for f, *_ in corpus}, fixed)
        out[f"chosen {name}"] = chosen
    for name in RAW:
        out.update(run_raw(corpus, traces, cache, fixed, name, jobs))
    return out


def _raw_job(args: tuple[Path, str, np.ndarray, np.ndarray]) -> None:
    cf, name, ts, vals = args
    cf.parent.mkdir(parents=True, exist_ok=True)
    np.save(cf, RAW[name]().score(ts, vals), allow_pickle=False)


def run_raw(corpus: Corpus, traces: dict[str, dict[str, np.ndarray]], cache: Path,
            fixed: float, name: str, jobs: int = 1) -> dict[str, Any]:
    """Detector `name`'s own score (RAW) alone, and chosen per fold against its calibrated
    score (`traces[name]`, from `run_members`)."""
    root = cache / (member_key(name) + "-raw")
    files = {f: root / (f.replace("/", "__") + ".npy") for f, *_ in corpus}
    todo = [(files[f], name, ts, v) for f, ts, v, _ in corpus if not files[f].exists()]
    if jobs > 1 and todo:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs) as ex:
            list(ex.map(_raw_job, todo))
    else:
        for t in todo:
            _raw_job(t)
    raw = {f: np.load(cf, allow_pickle=False) for f, cf in files.items()}
    cal = {f: recombine(traces[name][f], alone(name)) for f, *_ in corpus}
    out = {f"{name} raw": cross_validate_scores(corpus, [(f"{name} raw", raw)], fixed),
           f"{name} raw or calibrated": cross_validate_scores(
               corpus, [(f"{name} raw", raw), (f"{name} calibrated", cal)], fixed)}
    for k, r in out.items():
        report(k, r, fixed)
    print(f"  {name} raw:")
    print_false_alarms(corpus, raw, fixed)
    return out
