"""Light rounds skip materialising and packing while nothing has settled (light_gate.py), and
still do both as soon as an hour settles, with no maintenance round in between."""

from __future__ import annotations

import numpy as np

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import Store, packing
from tests.aggregator.test_store_packing import DAY, HOUR, MIN, T0, batches_for, raw_rows

STEP_MS = 5_000  # the default rollup_interval_ms: one light round per write below


def test_light_rounds_skip_when_idle_and_pack_the_hour_that_settles(tmp_path, monkeypatch):
    calls = {"pack": 0}
    real_pack = packing.pack

    def counting_pack(*args, **kw):  # the real packing, counted
        calls["pack"] += 1
        return real_pack(*args, **kw)

    monkeypatch.setattr(packing, "pack", counting_pack)
    rng = np.random.default_rng(3)
    clock = {"ms": T0 + HOUR + MIN}
    # Only light rounds here: the maintenance round (which always runs every step) is a day off.
    # The rounds' budget is real time: a generous one keeps a loaded machine from cutting the
    # packing short (what is left over waits for the maintenance round, a day away here).
    cfg = StorageConfig(maintenance_interval_secs=DAY / 1000, maintenance_budget_ms=60_000)
    store = Store(tmp_path / "g.duckdb", cfg, clock_ms=lambda: clock["ms"])
    try:
        hour0 = [T0 + i * 10_000 for i in range(360)]  # 00:00:00 .. 00:59:50
        batches, truth = batches_for(rng, range(1, 361), hour0)
        store.write(batches)
        seq = 361
        # Light rounds every 5 s of the clock, a new point each time, from 01:01 to 01:03:
        # hour 0 settles at 01:02 (the settle time is two minutes).
        while clock["ms"] < T0 + HOUR + 3 * MIN:
            clock["ms"] += STEP_MS
            more, t = batches_for(rng, [seq], [clock["ms"] - 1_000])
            store.write(more)
            truth += t
            seq += 1
        skipped = store.light_gate.skipped
        assert skipped > 0, "no light round was skipped while nothing settled"
        assert calls["pack"] < (2 * MIN) // STEP_MS  # not one per round
        rows = store.stats()["rows"]
        # The hour that settled was packed and materialised by light rounds alone.
        assert rows["packed_points"] == sum(1 for r in truth if r[2] < T0 + HOUR)
        assert store.query("cpu_percent", node="a", labels={"cpu": "0"}, step_ms=HOUR,
                           agg="count", since_ms=T0, until_ms=T0 + HOUR)[0]["value"] == 360
        assert rows["rollup_1h"] > 0
        assert raw_rows(store) == sorted(truth)
    finally:
        store.close()


def test_a_rollup_pass_makes_the_next_light_round_full(tmp_path):
    """Minutes recomputed by a rollup pass (new data settling) always run the full round."""
    clock = {"ms": T0 + 10 * MIN}
    store = Store(tmp_path / "r.duckdb", clock_ms=lambda: clock["ms"])
    try:
        rng = np.random.default_rng(5)
        store.write(batches_for(rng, [1], [T0])[0])
        gate = store.light_gate
        gate.done(False, store._settled_ms())  # an idle round just happened
        assert gate.may_skip(0, store._settled_ms())
        assert not gate.may_skip(1, store._settled_ms())  # minutes were rolled up
        assert not gate.may_skip(0, store._settled_ms() + HOUR)  # the next hour settled
        store.maintain(budget_s=30)  # a maintenance round re-arms the full light round
        assert not gate.may_skip(0, store._settled_ms())
    finally:
        store.close()
