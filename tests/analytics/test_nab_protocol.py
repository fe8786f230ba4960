"""The cross-validation protocol of bench/nab_cv.py on synthetic series: its shortcuts (member
traces, vectorised debounce, vectorised sweep) must reproduce the detector and the scorer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from legion.analytics.calibration import Debounce
from legion.analytics.detectors import make_detector
from legion.analytics.scoring import score_corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import nab_cv  # noqa: E402


def test_vectorised_debounce_equals_the_streaming_one() -> None:
    rng = np.random.default_rng(3)
    s = np.clip(rng.gamma(0.6, 0.25, 3000), 0, 1)
    s[[500, 502, 503, 1500]] = [0.95, 0.99, 1.0, 1.0]
    d = Debounce(100)
    assert np.array_equal(nab_cv.debounce(s), np.array([d(x) for x in s.tolist()]))


def test_recombined_traces_equal_the_default_ensemble(series_factory) -> None:
    ts, v = series_factory(1200, seed=11)
    v[300] = np.nan
    tr = nab_cv.member_traces(ts, v)
    assert np.isnan(tr[:, 300]).all()
    assert np.array_equal(nab_cv.recombine(tr, nab_cv.DEFAULT),
                          make_detector("ensemble").score(ts, v))


def _corpus(seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for j, cat in enumerate(("a", "a", "b", "c", "c", "d")):
        n = 400 + 50 * j
        wins = [] if cat == "d" else [(200 + 10 * j, 240 + 10 * j)]
        out.append((f"{cat}/f{j}.csv", np.arange(n), rng.random(n), wins))
    return out


@pytest.mark.parametrize("profile", ["standard", "reward_low_FP_rate", "reward_low_FN_rate"])
def test_vectorised_sweep_and_fixed_threshold_equal_the_scorer(profile: str) -> None:
    corpus = _corpus(5)
    scores = {f: np.round(v, 2) for f, _, v, _ in corpus}  # ties between rows
    prep = nab_cv.Prepared(corpus, profile)
    names = {f for f, *_ in corpus}
    sc, wi, va, nw = prep.gather(scores, names)
    gain, thr = prep.best(sc, wi, va)
    ref = score_corpus([(scores[f], w) for f, _, _, w in corpus], profile)
    assert prep.norm(gain, nw) == pytest.approx(ref.score, abs=1e-9)
    assert thr == ref.threshold
    # At the scorer's own threshold the fixed-threshold score is the swept one.
    assert prep.norm(prep.at(sc, wi, va, thr), nw) == pytest.approx(ref.score, abs=1e-9)
    assert prep.at(sc, wi, va, 2.0) == 0.0


def test_cross_validation_chooses_on_training_folds_only() -> None:
    corpus = _corpus(8)
    traces = {"base": {f: nab_cv.member_traces(ts, 50 + 5 * v) for f, ts, v, _ in corpus}}
    one = nab_cv.cross_validate(corpus, traces, [nab_cv.DEFAULT], 0.8)
    assert [f[0] for f in one["folds"]] == ["a", "b", "c", "d"]
    # One configuration: the fixed-threshold figure does not depend on the folds.
    assert one["cv_fixed"] == pytest.approx(one["plain_fixed"])
    many = nab_cv.cross_validate(corpus, traces, nab_cv.grid(["base"])[:6], 0.8)
    assert many["plain"] >= one["plain"]  # the grid contains the default


def test_recombined_traces_equal_the_fisher_detector(series_factory) -> None:
    ts, v = series_factory(1200, seed=12)
    tr = nab_cv.member_traces(ts, v)
    cfg = nab_cv.Config(combine="fisher", mad_discount=0.0)
    np.testing.assert_allclose(nab_cv.recombine(tr, cfg), make_detector("fisher").score(ts, v),
                               rtol=0, atol=1e-12)


def test_additions_grid_only_switches_additions_on_or_off() -> None:
    g = nab_cv.grid_additions(["base", "trim0", "tol0"])
    assert g[0] == nab_cv.DEFAULT and len(set(g)) == len(g) == 48
    for c in g:
        assert c.agree in (0.0, nab_cv.DEFAULT.agree) and c.cost in (0.0, nab_cv.DEFAULT.cost)
        assert c.mad_discount in (0.0, nab_cv.DEFAULT.mad_discount)
        assert c.shift_discount == nab_cv.DEFAULT.shift_discount and c.decades == 4.0


def test_per_time_rarity_moves_coarser_series_up() -> None:
    rng = np.random.default_rng(5)
    tr = np.abs(rng.normal(0, 1.2, (4, 600)))
    cfg = nab_cv.Config(per_time=True)
    five = nab_cv.recombine(tr, cfg, 300.0)
    assert np.array_equal(five, nab_cv.recombine(tr, nab_cv.DEFAULT))
    assert nab_cv.recombine(tr, cfg, 3600.0).sum() > five.sum()


def test_bench_scores_any_folder_in_nab_layout(tmp_path: Path, series_factory, capsys) -> None:
    """The independent evaluation runs `bench/nab.py --root DIR` on files kept apart, laid out
    as shared/data/nab but without its BASELINES.md."""
    import nab

    labels = {}
    for j, cat in enumerate(("x", "x", "y")):
        ts, v = series_factory(900, seed=20 + j)
        path = tmp_path / "data" / cat / f"s{j}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = [str(np.datetime64(int(t), "ms")).replace("T", " ") for t in ts]
        path.write_text("timestamp,value\n" + "".join(
            f"{s},{x:.4f}\n" for s, x in zip(stamp, v.tolist(), strict=True)))
        labels[f"{cat}/s{j}.csv"] = [[stamp[490], stamp[520]], [stamp[640], stamp[670]]]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "windows.json").write_text(json.dumps(labels))
    assert nab.main(["--root", str(tmp_path), "--detectors", "mad", "--no-speed",
                     "--per-category", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    corpus = nab.load_corpus(tmp_path)
    pairs = [(make_detector("mad").score(ts, v), w) for _, ts, v, w in corpus]
    ref = score_corpus(pairs, "standard")
    assert f"mad{ref.score:>28.2f}" in out and "published" not in out
    assert nab.found_at(pairs, ref.threshold) == (ref.windows_found, ref.fp_rows)
    for cat in ("x", "y"):
        assert f"    {cat} " in out
    # The protocol and the calibration table on the same folder (two categories: two folds).
    assert nab.main(["--root", str(tmp_path), "--cv", "none", "--cache", str(tmp_path / "c"),
                     "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "LOCO CV (T=0.8)" in out and "false alarms at 0.8" in out
    for cat in ("x", "y"):
        assert any(line.split()[:1] == [cat] and len(line.split()) == 7
                   for line in out.splitlines())  # its row of the calibration table
    (tmp_path / "labels" / "windows.json").write_text(json.dumps(
        {k: v for k, v in labels.items() if k.startswith("x/")}))
    with pytest.raises(SystemExit, match="two categories"):
        nab.main(["--root", str(tmp_path), "--cv", "none", "--cache", str(tmp_path / "c")])


def test_false_alarms_count_quiet_rows_by_category_and_by_age() -> None:
    import nab_transfer
    n = 3000  # probation 450 rows; one window 1500-1599, quiet again from row 1700
    ts = np.arange(n, dtype=np.int64) * 300_000
    s = np.zeros(n)
    s[[100, 600, 1200, 1550, 1650, 2500, 2600]] = 0.9  # 100: probation, 1550/1650: window
    corpus = [("catA/f.csv", ts, np.zeros(n), [(1500, 1599)])]
    by_cat = nab_transfer.false_alarms(corpus, {"catA/f.csv": s}, 0.8)
    by_age = nab_transfer.false_alarms(corpus, {"catA/f.csv": s}, 0.8, by="age")
    assert [(g, r, al) for g, r, _, al, *_ in by_cat] == [("catA", 2350, 4), ("all", 2350, 4)]
    assert [(g, r, al) for g, r, _, al, *_ in by_age] == [
        ("age: rows 0-999", 550, 1), ("age: rows 1000-1999", 800, 1),
        ("age: rows 2000+", 1000, 2), ("all", 2350, 4)]
