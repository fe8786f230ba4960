"""Does judging a point against its neighbours generalise? (issue 14, seventh round)

The ensemble's three members judge a point by its level against a long reference, and on the
independent GutenTAG corpus (bench/gutentag_corpus.py) it misses local spikes, shape and noise
changes that `residual` finds. This script scores two local views on any folders in the NAB
layout, each by the leave-one-category-out protocol (plain / LOCO CV / at the fixed 0.8):
* `residual` (one-step robust forecast residual) as a fourth member (bench/nab_members.py);
* a shape view of the kNN member: every window (reference and current) centred on its own
  median, so that the distance sees its shape and not its level; instead of the kNN member, and
  its plain view as a fourth member;
* either one allowed only to confirm: the runner-up of the agreement, never the largest.

    python bench/nab_local_views.py                              # NAB dev
    python bench/nab_local_views.py --root /tmp/gt_nab --cache /tmp/gtcache
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from nab import DEFAULT_ROOT, cache_file, load_corpus
from nab_cv import (
    DEFAULT,
    Config,
    cross_validate,
    cross_validate_scores,
    debounce,
    load_traces,
    member_traces,
)
from nab_members import candidates, with_member

from legion.analytics.detectors.knn import KnnDetector


class ShapeKnn(KnnDetector):
    """The ensemble's kNN member on windows centred on their own median."""

    def _windows(self, w: np.ndarray) -> np.ndarray:
        centred: np.ndarray = w - np.median(w, axis=-1, keepdims=True)
        return centred


def shape_traces(args: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """nab_cv.member_traces with the kNN member's windows centred on their own median."""
    return member_traces(*args, knn=ShapeKnn(k=5, episodes=False, blocks=4, debounce=0))


def confirming(tr5: np.ndarray, discount: float) -> np.ndarray:
    """The default ensemble (`nab_cv.DEFAULT`) where the fifth trace row may only confirm: it
    can be the runner-up that the agreement adds, up to the largest level member, never the
    largest itself (a local oddity alone is no anomaly; beside a level surprise it is more)."""
    ok = np.isfinite(tr5[0])
    t = tr5[:, ok]
    level = np.sort(np.vstack([np.minimum(t[0], t[1]), t[2] - DEFAULT.mad_discount,
                               t[3] - DEFAULT.shift_discount]), axis=0)
    local = np.nan_to_num(t[4] - discount, nan=0.0)
    runner = np.maximum(level[-2], np.minimum(local, level[-1]))
    lp = level[-1] + DEFAULT.agree * np.maximum(runner, 0.0) - DEFAULT.cost
    out = np.zeros(tr5.shape[1])
    out[ok] = debounce(np.clip(lp / DEFAULT.decades, 0.0, 1.0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/nab_local_views"))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    corpus = load_corpus(args.root)
    tr = load_traces(corpus, ["base"], args.cache, args.jobs)
    tr["residual"] = with_member(corpus, tr["base"], args.cache, "residual", args.jobs)
    files = {f: cache_file(args.cache, "shape-knn", f) for f, *_ in corpus}
    files[corpus[0][0]].parent.mkdir(parents=True, exist_ok=True)
    todo = [(f, ts, v) for f, ts, v, _ in corpus if not files[f].exists()]
    with ProcessPoolExecutor(args.jobs) as ex:
        for (f, _, _), t in zip(todo, ex.map(shape_traces, [(ts, v) for _, ts, v in todo]),
                                strict=True):
            np.save(files[f], t, allow_pickle=False)
    tr["shape"] = {f: np.load(p, allow_pickle=False) for f, p in files.items()}
    tr["shape4"] = {f: np.vstack([tr["base"][f], tr["shape"][f][:1]]) for f, *_ in corpus}
    rows = [*candidates("residual"),
            ("shape kNN instead of kNN", Config(variant="shape")),
            *[(f"default + shape kNN (plain view) - {d:g}, cost {c:.3g}",
               Config(variant="shape4", art=True, art_discount=d, cost=c))
              for d, c in ((0.0, 0.45), (0.0, 0.575), (0.5, 0.45))]]
    print(f"{args.root}: {len(corpus)} files")
    print(f"  {'configuration':<52}{'plain':>7}{'CV':>7}{'T=0.8':>7}")
    results = [(label, cross_validate(corpus, tr, [c], 0.8)) for label, c in rows]
    for name, variant in (("residual", "residual"), ("shape kNN", "shape4")):
        for d in (0.0, 0.5, 1.0):
            label = f"{name} may only confirm - {d:g}"
            results.append((label, cross_validate_scores(
                corpus, [(label, {f: confirming(tr[variant][f], d) for f, *_ in corpus})], 0.8)))
    for label, res in results:
        print(f"  {label:<52}{res['plain']:7.2f}{res['cv']:7.2f}{res['plain_fixed']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
