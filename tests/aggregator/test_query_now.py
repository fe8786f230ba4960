"""`Store.query_now`, what the gateway answers on its event loop: exactly `query`'s rows when the
loaded query head holds them, and None (the worker thread's turn) whenever it would have to
wait: head not loaded, a write holding the store's or the head's lock, a range larger than
`NOW_MAX_CELLS`, raw or rate queries, a remote store. Real DuckDB files; the held locks are the
store's own, taken by a real second thread as a write would."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator.config import StorageConfig
from legion.aggregator.remote_query import PromApi, RemoteQueryStore
from legion.aggregator.store import Store, head
from tests.aggregator.test_query_head import HOUR, MIN, T0, batches, random_query


def loaded_store(path: Path, minutes: int = 30) -> tuple[Store, int]:
    """A store with `minutes` of 10 s points from three nodes; returns it and the end."""
    end = T0 + minutes * MIN
    store = Store(path, StorageConfig(rollup_interval_ms=10**9, maintenance_interval_secs=10**9),
                  clock_ms=lambda: end)
    rng = np.random.default_rng(5)
    for i, lo in enumerate(range(T0, end, 10 * MIN)):
        store.write(batches(rng, lo, lo + 10 * MIN, 10_000, 1 + i * 100))
    store.roll_up(budget_s=30, include_open=True)
    return store, end


def test_query_now_answers_what_query_answers_once_loaded(tmp_path: Path) -> None:
    store, end = loaded_store(tmp_path / "a.duckdb")
    one = {"metric": "cpu_percent", "node": "a", "labels": {"cpu": "total"}, "step_ms": MIN,
           "since_ms": T0, "until_ms": end}
    try:
        assert store.query_now(**one) is None  # not loaded: only a worker thread loads it
        assert store.query(**one) == store.query_now(**one) != []
        rng = np.random.default_rng(11)
        answered = 0
        for _ in range(60):
            q = random_query(rng, T0, end)
            now = store.query_now(**q)
            if q["agg"] == "rate" or q["since_ms"] < T0:
                assert now is None, q
            if now is not None:
                answered += 1
                want = store.query(**q)
                assert [(r["ts_ms"], r["node"], r["labels"]) for r in now] == \
                    [(r["ts_ms"], r["node"], r["labels"]) for r in want], q
                assert [r["value"] for r in now] == pytest.approx(
                    [r["value"] for r in want], rel=1e-12, nan_ok=True), q
        assert answered >= 20
        assert store.query_now(metric="cpu_percent", since_ms=T0, until_ms=end) is None  # raw
    finally:
        store.close()


def test_one_series_from_the_head_equals_duckdb(tmp_path: Path) -> None:
    store, end = loaded_store(tmp_path / "g.duckdb")
    try:
        for agg in ("avg", "min", "max", "sum", "count", "last"):
            for step in (MIN, 5 * MIN):
                q = {"metric": "cpu_percent", "node": "c", "labels": {"cpu": "1"}, "agg": agg,
                     "step_ms": step, "since_ms": T0 + 3 * MIN, "until_ms": end - MIN}
                store.query(**q)
                got = store.query_now(**q)
                keep, store.head = store.head, None
                want = store.query(**q)
                store.head = keep
                assert got is not None and len(got) == len(want) > 0, q
                assert [(r["ts_ms"], r["value"]) for r in got] == \
                    [(r["ts_ms"], pytest.approx(r["value"], rel=1e-12)) for r in want], q
    finally:
        store.close()


@pytest.mark.parametrize("lock", ["store", "head"])
def test_query_now_never_waits_for_a_write(tmp_path: Path, lock: str) -> None:
    store, end = loaded_store(tmp_path / "b.duckdb")
    q = {"metric": "cpu_percent", "step_ms": 5 * MIN, "since_ms": T0, "until_ms": end,
         "group_by": "*"}
    held = store._lock if lock == "store" else store.head._lock  # noqa: SLF001 - a write's
    taken, release = threading.Event(), threading.Event()

    def writer() -> None:
        with held:
            taken.set()
            release.wait(30)
    t = threading.Thread(target=writer)
    try:
        want = store.query(**q)
        t.start()
        assert taken.wait(10)
        started = time.monotonic()
        assert store.query_now(**q) is None
        assert time.monotonic() - started < 5  # returned, not waited out the 30 s
        release.set()
        t.join(10)
        assert store.query_now(**q) == want
    finally:
        release.set()
        store.close()


def test_a_range_beyond_the_cell_bound_is_left_to_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, end = loaded_store(tmp_path / "c.duckdb")
    q = {"metric": "cpu_percent", "step_ms": MIN, "since_ms": T0, "until_ms": end}
    try:
        want = store.query(**q)  # loads the head
        assert store.query_now(**q) == want  # 9 series x 30 minutes
        monkeypatch.setattr(head, "NOW_MAX_CELLS", 9 * 30 - 1)
        assert store.query_now(**q) is None
        assert store.query(**q) != []  # the blocking path still answers all of it
    finally:
        store.close()


def test_an_empty_store_loads_an_empty_head(tmp_path: Path) -> None:
    store = Store(tmp_path / "d.duckdb")
    q = {"metric": "cpu_percent", "step_ms": MIN, "since_ms": T0, "until_ms": T0 + HOUR}
    try:
        assert store.query(**q) == []  # was an IndexError in QueryHead.load: HTTP 500
        assert store.head is not None and store.head.start is not None
        assert store.query_now(**q) == []
    finally:
        store.close()


def test_a_remote_store_never_answers_from_the_local_head(tmp_path: Path) -> None:
    store, end = loaded_store(tmp_path / "e.duckdb")
    q = {"metric": "cpu_percent", "step_ms": MIN, "since_ms": T0, "until_ms": end}
    try:
        store.query(**q)
        remote = RemoteQueryStore(PromApi("http://127.0.0.1:9"), store)
        assert store.query_now(**q) is not None
        assert remote.query_now(**q) is None
    finally:
        store.close()


def test_gateway_answers_from_the_head_with_every_header(tmp_path: Path) -> None:
    from legion.aggregator.gateway.app import create_app
    from legion.aggregator.gateway.tokens import TokenStore
    from legion.cli.config import load_config
    from tests.conftest import gateway_thread, make_setup

    store, end = loaded_store(tmp_path / "f.duckdb")
    cfg_path = make_setup(tmp_path / "legion", security={"enable_tls": False})
    config = load_config(cfg_path).aggregator_settings()
    tokens = TokenStore(Path(config.aggregator.tokens_path))
    token = (cfg_path.parent / "admin.token").read_text().strip()
    q = {"metric": "cpu_percent", "node": "b", "labels": {"cpu": "0"}, "step_ms": MIN,
         "since_ms": T0, "until_ms": end}
    want = store.query(**q)
    try:
        with gateway_thread(config, lambda: create_app(config, store, dict, tokens),
                            port=0) as srv:
            url = (f"{srv.url}/api/v1/query?metric=cpu_percent&node=b&label=cpu=0&step=1m"
                   f"&since={T0}&until={end}")
            hits = store.head.hits
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback
                got, headers = json.loads(r.read()), r.headers
            assert store.head.hits == hits + 1
            assert [(g["ts_ms"], g["value"]) for g in got] == \
                [(w["ts_ms"], w["value"]) for w in want]
            assert headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Cache-Control"] == "no-store"
            with pytest.raises(urllib.error.HTTPError) as err:  # no token: still refused
                urllib.request.urlopen(url, timeout=30)  # noqa: S310 - loopback
            assert err.value.code == 401
    finally:
        store.close()
