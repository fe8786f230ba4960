"""Store: round trip, exactly-once across calls and reopen, missing, stepped aggregation."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from legion.aggregator.store import SCHEMA_VERSION, IncomingBatch, Store, WriteResult
from legion.kernel.errors import StoreError
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_700_000_000_000


def batch(node: str, seq: int, epoch: int = 1, n_cpu: int = 4, ts: int | None = None,
          extra: list[Sample] | None = None) -> IncomingBatch:
    """A batch of one cpu metric per core plus a memory metric, at ts (default T0 + seq s)."""
    t = T0 + seq * 1000 if ts is None else ts
    samples = [Sample("system_cpu_usage_percent", canonical_labels({"cpu": str(c)}),
                      round(seq * 0.5 + c, 1), t) for c in range(n_cpu)]
    samples.append(Sample("system_memory_usage_percent", (), 40.0 + seq % 7, t))
    return IncomingBatch(node, epoch, seq, MetricsBatch.from_samples(samples + (extra or [])), t)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "legion.duckdb")
    yield s
    s.close()


def test_round_trip(store):
    r = store.write([batch("web-1", 1), batch("web-1", 2), batch("db-1", 1)])
    assert isinstance(r, WriteResult)
    assert r.stored == (("web-1", 1, 1), ("web-1", 1, 2), ("db-1", 1, 1)) and r.duplicates == ()
    assert r.points == 15
    rows = store.query("system_cpu_usage_percent", node="web-1", labels={"cpu": "2"})
    assert [(x["ts_ms"], x["value"]) for x in rows] == [(T0 + 1000, 2.5), (T0 + 2000, 3.0)]
    assert rows[0]["labels"] == {"cpu": "2"} and rows[0]["node"] == "web-1"
    assert rows[0]["metric"] == "system_cpu_usage_percent"
    series = store.series(node="db-1")
    assert len(series) == 5 and {s["metric"] for s in series} == {
        "system_cpu_usage_percent", "system_memory_usage_percent"}
    assert store.series(metric="system_memory_usage_percent")[0]["labels"] == {}
    latest = store.latest("system_memory_*")
    assert {(x["node"], x["ts_ms"]) for x in latest} == {("web-1", T0 + 2000), ("db-1", T0 + 1000)}
    assert store.latest("system_cpu_usage_percent", node="db-1")[0]["ts_ms"] == T0 + 1000
    nodes = {n["node"]: n for n in store.nodes()}
    assert nodes["web-1"]["points"] == 10 and nodes["web-1"]["last_seq"] == 2
    assert nodes["web-1"]["first_seen_ms"] == T0 + 1000
    assert nodes["web-1"]["last_seen_ms"] == T0 + 2000


def test_range_filters(store):
    store.write([batch("a", s) for s in range(1, 11)])
    rows = store.query("system_memory_usage_percent", since_ms=T0 + 3000, until_ms=T0 + 6000)
    assert [x["ts_ms"] for x in rows] == [T0 + 3000, T0 + 4000, T0 + 5000]
    assert store.query("nope") == []


def test_duplicates_within_and_across_calls(store):
    r = store.write([batch("a", 1), batch("a", 1), batch("a", 2)])
    assert r.stored == (("a", 1, 1), ("a", 1, 2)) and r.duplicates == (("a", 1, 1),)
    r = store.write([batch("a", 2), batch("a", 3), batch("a", 1, epoch=2)])
    assert r.stored == (("a", 1, 3), ("a", 2, 1)) and r.duplicates == (("a", 1, 2),)
    assert len(store.query("system_memory_usage_percent")) == 4
    assert store.write([batch("a", 3)]).stored == ()


def test_duplicates_across_reopen(tmp_path):
    path = tmp_path / "x.duckdb"
    s = Store(path)
    s.write([batch("a", seq) for seq in (1, 2, 3, 7)])
    s.close()
    s = Store(path)
    try:
        r = s.write([batch("a", 2), batch("a", 7), batch("a", 4)])
        assert r.stored == (("a", 1, 4),) and set(r.duplicates) == {("a", 1, 2), ("a", 1, 7)}
        assert len(s.query("system_memory_usage_percent", node="a")) == 5
        assert s.stored_ranges("a", 1) == [(1, 4), (7, 7)]
        assert s.nodes()[0]["points"] == 25
    finally:
        s.close()


def test_missing_and_epochs(store):
    store.write([batch("a", s) for s in (1, 2, 5, 9)])
    (n,) = store.nodes()
    assert (n["epoch"], n["last_seq"], n["missing"]) == (1, 9, 5)  # 3, 4, 6, 7, 8
    store.write([batch("a", 3), batch("a", 4)])
    assert store.nodes()[0]["missing"] == 3
    store.write([batch("a", 2, epoch=5)])  # a wiped agent: new epoch, seq 1 not (yet) stored
    (n,) = store.nodes()
    assert (n["epoch"], n["last_seq"], n["missing"]) == (5, 2, 1)
    store.write([batch("a", 30, epoch=1)])  # late backlog of the old epoch changes nothing here
    assert store.nodes()[0]["epoch"] == 5


def test_dropped_reported_by_agent(store):
    drop = Sample("legion_agent_batches_dropped_total", (), 17.0, T0 + 5000)
    store.write([batch("a", 5, extra=[drop])])
    assert store.nodes()[0]["dropped"] == 17


def test_node_bookkeeping_is_the_same_after_reopening(tmp_path):
    """Per-node figures are not written per commit but derived from `batches` (and `dropped`
    from the agent's own metric) at open: every figure survives a restart as it was."""
    path = tmp_path / "n.duckdb"
    s = Store(path)
    drop = Sample("legion_agent_batches_dropped_total", (), 17.0, T0 + 5000)
    older = Sample("legion_agent_batches_dropped_total", (), 3.0, T0 + 1000)
    s.write([batch("a", 1), batch("a", 4, extra=[drop]), batch("b", 2)])
    s.write([batch("a", 2, epoch=7), batch("a", 30, epoch=1, extra=[older])])
    before = s.nodes()
    assert {n["node"]: n["dropped"] for n in before} == {"a": 17, "b": 0}
    assert [(n["epoch"], n["last_seq"]) for n in before] == [(7, 2), (1, 2)]
    s.close()
    s = Store(path)
    try:
        assert s.nodes() == before
        with s._cursor() as cur:
            tables = {r[0] for r in cur.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
        assert "nodes" not in tables and "batches" in tables
    finally:
        s.close()


def test_empty_batch_is_recorded(store):
    empty = IncomingBatch("a", 1, 1, MetricsBatch.from_samples([]), T0)
    assert store.write([empty]).stored == (("a", 1, 1),)
    assert store.write([empty]).duplicates == (("a", 1, 1),)


def test_schema_version_newer_refused(tmp_path):
    path = tmp_path / "v.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, 0)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_foreign_database_refused(tmp_path):
    path = tmp_path / "f.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INT)")
    con.close()
    with pytest.raises(StoreError, match="not a Legion Monitor database"):
        Store(path)


def test_closed_store_raises(tmp_path):
    s = Store(tmp_path / "c.duckdb")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.write([batch("a", 1)])


def test_bad_aggregation_is_store_error(store):
    store.write([batch("a", 1)])
    with pytest.raises(StoreError, match="unknown aggregation"):
        store.query("system_cpu_usage_percent", step_ms=60_000, agg="median")


AGG_NP = {"avg": np.mean, "min": np.min, "max": np.max, "sum": np.sum, "count": len,
          "p50": lambda v: np.quantile(v, 0.5), "p95": lambda v: np.quantile(v, 0.95),
          "p99": lambda v: np.quantile(v, 0.99)}


@pytest.mark.parametrize("step_ms", [7_000, 60_000, 3_600_000])
def test_stepped_equals_numpy(tmp_path, step_ms):
    rng = np.random.default_rng(step_ms)
    store = Store(tmp_path / "s.duckdb")
    try:
        truth: dict[str, list[tuple[int, float]]] = {"0": [], "1": [], "2": []}
        batches = []
        for seq in range(1, 400):
            ts = T0 + int(rng.integers(0, 3 * 3_600_000))  # out of order, spread over 3 h
            samples = []
            for c in truth:
                if rng.random() < 0.8:
                    v = round(float(rng.normal(50, 20)), 1)
                    truth[c].append((ts, v))
                    samples.append(Sample("m_percent", canonical_labels({"cpu": c}), v, ts))
            batches.append(IncomingBatch("h", 1, seq, MetricsBatch.from_samples(samples), ts))
        for i in range(0, len(batches), 37):
            store.write(batches[i:i + 37])
        since, until = T0 + 1_234_567, T0 + 2 * 3_600_000 + 7
        lo, hi = since // step_ms * step_ms, -(-until // step_ms) * step_ms
        for agg in ("avg", "min", "max", "sum", "count", "last", "p50", "p95", "p99"):
            got = {(r["labels"]["cpu"], r["ts_ms"]): r["value"] for r in store.query(
                "m_percent", since_ms=since, until_ms=until, step_ms=step_ms, agg=agg)}
            want = {}
            for c, pts in truth.items():
                by_bucket: dict[int, list[tuple[int, float]]] = {}
                for t, v in pts:
                    if lo <= t < hi:
                        by_bucket.setdefault(t // step_ms * step_ms, []).append((t, v))
                for b, tv in by_bucket.items():
                    vals = np.array([v for _, v in tv])
                    want[(c, b)] = (max(tv)[1] if agg == "last" else float(AGG_NP[agg](vals)))
            assert got.keys() == want.keys(), agg
            for k in want:
                assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), (agg, k)
    finally:
        store.close()


def test_queries_from_other_threads_while_writing(tmp_path):
    import threading

    store = Store(tmp_path / "t.duckdb")
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                store.query("system_cpu_usage_percent", step_ms=60_000)
                store.nodes()
                store.latest()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for seq in range(1, 200, 5):
            store.write([batch("a", s) for s in range(seq, seq + 5)])
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        store.close()
    assert errors == []


def test_rounds_inside_write_follow_the_injected_clock(tmp_path, monkeypatch):
    """With an injected clock, the rounds `write` runs by itself are timed on that clock, not
    on the machine's: however long a run really takes (a loaded CI runner), a store on a fixed
    clock runs only what its caller asks; moving the clock on runs them as before."""
    from legion.aggregator.config import StorageConfig
    from legion.aggregator.store import store as store_mod

    calls: list[str] = []
    monkeypatch.setattr(Store, "_light_round", lambda self: calls.append("light"))
    monkeypatch.setattr(Store, "maintain", lambda self, budget_s=None: calls.append("maintain"))
    now = {"ms": T0 + 3_600_000}
    s = Store(tmp_path / "c.duckdb", StorageConfig(rollup_interval_ms=5_000,
                                                     maintenance_interval_secs=60.0),
              clock_ms=lambda: now["ms"])
    try:
        real = store_mod.time.monotonic
        monkeypatch.setattr(store_mod.time, "monotonic", lambda: real() + 3600)  # an hour "later"
        s.write([batch("web-1", 1)])
        assert calls == []
        now["ms"] += 5_000
        s.write([batch("web-1", 2)])
        assert calls == ["light"]
        now["ms"] += 60_000
        s.write([batch("web-1", 3)])
        assert calls == ["light", "maintain"]
    finally:
        monkeypatch.undo()
        s.close()


def test_labels_key_is_canonical_json_whatever_the_characters():
    """The plain-ASCII fast path and the JSON encoder give the same text (keys stored before
    must still match)."""
    import json
    import random

    from legion.aggregator.store.writer import labels_key

    alphabet = ["a", "Z", "0", " ", '"', "\\", "\n", "\t", "é", "\u2028", "~", "/", "\x7f", ":"]
    rng = random.Random(1)
    for _ in range(5000):
        labels = tuple(sorted((f"k{i}", "".join(rng.choice(alphabet) for _ in range(
            rng.randint(0, 6)))) for i in range(rng.randint(0, 3))))
        assert labels_key(labels) == json.dumps([list(p) for p in labels], separators=(",", ":"))
