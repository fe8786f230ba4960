"""`group_by` over label sets and `agg=rate`: Store, HTTP API and `legionctl query`."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from click.testing import CliRunner

from legion.aggregator.gateway import TokenStore, create_app
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import Config, config_to_dict, load_config
from legion.cli.main import cli
from legion.kernel.config import CONFIG_FILENAME
from legion.kernel.errors import StoreError
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.aggregator.test_gateway_api import Env, run
from tests.aggregator.test_store_tiers import HOUR, MIN, assert_close, expected, make_batches
from tests.conftest import free_port, gateway_thread

T0 = 1_700_006_400_000  # a UTC midnight
COUNTER = "net_bytes_total"


def counter_batches(node: str, first_seq: int, values: dict[str, list[float]], ts0: int,
                    every_ms: int) -> list[IncomingBatch]:
    """One batch per tick: each interface's counter value at that tick."""
    out = []
    for i in range(len(next(iter(values.values())))):
        ts = ts0 + i * every_ms
        samples = [Sample(COUNTER, canonical_labels({"if": k}), v[i], ts) for k, v in
                   values.items()]
        out.append(IncomingBatch(node, 1, first_seq + i, MetricsBatch.from_samples(samples), ts))
    return out


def rate_truth(values: list[float], every_ms: int, step_ms: int) -> dict[int, float]:
    """Expected rate per bucket from the last value per bucket (a drop is a restart)."""
    last: dict[int, float] = {}
    for i, v in enumerate(values):
        last[(T0 + i * every_ms) // step_ms * step_ms] = v
    out, buckets = {}, sorted(last)
    for a, b in zip(buckets, buckets[1:], strict=False):
        inc = last[b] - last[a] if last[b] >= last[a] else last[b]
        out[b] = inc * 1000 / step_ms
    return out


@pytest.mark.parametrize("rolled", [False, True])
def test_rate_with_reset_and_sum_by(tmp_path: Path, rolled: bool) -> None:
    rng = np.random.default_rng(3)
    eth0 = np.cumsum(rng.integers(0, 5000, 240)).astype(float)
    eth0[150:] -= eth0[150] - 7.0  # restart: the counter starts again from 7
    eth1 = np.cumsum(rng.integers(0, 100, 240)).astype(float)
    store = Store(tmp_path / "r.duckdb", clock_ms=lambda: T0 + 2 * HOUR)
    try:
        store.write(counter_batches("a", 1, {"eth0": eth0.tolist(), "eth1": eth1.tolist()},
                                    T0, 15_000))
        store.write(counter_batches("b", 1, {"eth0": (eth1 * 2).tolist()}, T0, 15_000))
        if rolled:
            store.roll_up(budget_s=30, include_open=True)
            assert store.plan(MIN) == "1m"
        rows = store.query(COUNTER, node="a", labels={"if": "eth0"}, step_ms=MIN, agg="rate")
        assert_close({r["ts_ms"]: r["value"] for r in rows},
                     rate_truth(eth0.tolist(), 15_000, MIN))
        assert min(r["value"] for r in rows) >= 0  # the restart is not a negative rate
        # since: the bucket before `since` feeds the first rate; nothing before since is shown
        since = T0 + 10 * MIN
        rows = store.query(COUNTER, node="a", labels={"if": "eth0"}, since_ms=since,
                           step_ms=MIN, agg="rate")
        assert rows[0]["ts_ms"] == since
        assert rows[0]["value"] == pytest.approx(rate_truth(eth0.tolist(), 15_000, MIN)[since])
        # sum by interface across nodes, and by node
        by_if = store.query(COUNTER, step_ms=MIN, agg="rate", group_by="if")
        t_a0, t_a1 = (rate_truth(v, 15_000, MIN) for v in (eth0.tolist(), eth1.tolist()))
        t_b0 = rate_truth((eth1 * 2).tolist(), 15_000, MIN)
        assert_close({(r["labels"]["if"], r["ts_ms"]): r["value"] for r in by_if},
                     {**{("eth0", b): t_a0[b] + t_b0[b] for b in t_a0},
                      **{("eth1", b): v for b, v in t_a1.items()}})
        by_node = store.query(COUNTER, step_ms=MIN, agg="rate", group_by="node")
        assert {r["node"] for r in by_node} == {"a", "b"}
        assert all(r["labels"] == {} for r in by_node)
        with pytest.raises(StoreError, match="rate needs a step"):
            store.query(COUNTER, agg="rate")
    finally:
        store.close()


@pytest.mark.parametrize("agg", ["avg", "min", "max", "sum", "count"])
def test_group_by_several_keys_equals_recomputation(tmp_path: Path, agg: str) -> None:
    rng = np.random.default_rng(5)
    store = Store(tmp_path / "g.duckdb")
    try:
        batches, truth = make_batches(rng, 150, 2 * HOUR, nodes=("a", "b", "c"))
        store.write(batches)
        store.roll_up(budget_s=30)
        rows = store.query("cpu_percent", step_ms=HOUR, agg=agg, group_by="node,cpu")
        got = {((r["node"], r["labels"]["cpu"]), r["ts_ms"]): r["value"] for r in rows}
        assert_close(got, expected(truth, HOUR, agg))
        rows = store.query("cpu_percent", step_ms=HOUR, agg=agg, group_by="cpu,node")
        assert all(set(r["labels"]) == {"cpu"} and r["node"] in "abc" for r in rows)
        fleet = store.query("cpu_percent", step_ms=HOUR, agg=agg, group_by="*")
        assert_close({((), r["ts_ms"]): r["value"] for r in fleet},
                     expected(truth, HOUR, agg, key=lambda r: ()))
    finally:
        store.close()


def test_http_query_group_by_and_rate(tmp_path: Path) -> None:
    env = Env(tmp_path)  # writes two ticks of web-1 (agent_tasks_total counts up by 1)
    try:
        async def get(query: str) -> tuple[int, object]:
            async with env.serve() as srv, \
                    aiohttp.ClientSession(headers=env.auth("viewer")) as s:
                async with s.get(srv.url + "/api/v1/query?" + query) as r:
                    return r.status, await r.json()

        status, rows = run(get("metric=agent_success_rate_percent&step=1h&agg=count"
                               "&group_by=node,department&since=2h"))
        assert status == 200, rows
        assert sorted((r["node"], r["labels"]["department"], r["value"]) for r in rows) == [
            ("web-1", "engineering", 2.0), ("web-1", "strategy", 2.0)]
        status, rows = run(get("metric=system_cpu_usage_percent&step=1h&agg=max&group_by=*"
                               "&since=2h"))
        assert status == 200 and [r["value"] for r in rows] == [99.0], rows
        status, rows = run(get("metric=agent_tasks_total&step=1s&agg=rate&group_by=department"
                               "&since=1m"))
        assert status == 200, rows
        assert {(r["labels"]["department"], r["value"]) for r in rows} == {
            ("engineering", 1.0), ("strategy", 1.0)}
        for query, message in (("metric=m&group_by=node", "'group_by' needs 'step'"),
                               ("metric=m&step=1m&group_by=no+de", "invalid group_by"),
                               ("metric=m&step=1m&group_by=node,node", "invalid group_by"),
                               ("metric=m&agg=rate", "'agg' needs 'step'")):
            status, body = run(get(query))
            assert status == 400 and message in body["error"], (query, body)
    finally:
        env.store.close()


def test_legionctl_query_group_by(tmp_path: Path) -> None:
    raw = config_to_dict(Config())
    raw["security"]["enable_tls"] = False
    raw["dashboard_config"]["websocket_port"] = free_port()
    (tmp_path / "cli").mkdir()
    cfg_path = tmp_path / "cli" / CONFIG_FILENAME
    cfg_path.write_text(json.dumps(raw))
    config = load_config(cfg_path).aggregator_settings()
    store = Store(tmp_path / "q.duckdb")
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.add("viewer", "viewer")
    eth = [float(x) for x in range(0, 1200, 10)]  # +10 per 15 s: 0.666.. per second
    store.write(counter_batches("n1", 1, {"eth0": eth, "eth1": eth}, T0, 15_000))
    store.write(counter_batches("n2", 1, {"eth0": eth}, T0, 15_000))
    base = ["--config", str(cfg_path), "--token", token, "--since", str(T0),
            "--until", str(T0 + 30 * MIN), "--step", "1m"]
    try:
        with gateway_thread(config, lambda: create_app(config, store, lambda: {}, tokens)):
            res = CliRunner().invoke(cli, ["query", COUNTER, "--agg", "rate", "--group-by",
                                           "node", "--format", "json", *base])
            assert res.exit_code == 0, res.output
            rows = json.loads(res.stdout)
            per_node = {r["node"]: r["value"] for r in rows if r["ts_ms"] == T0 + 10 * MIN}
            assert per_node == pytest.approx({"n1": 2 * 40 / 60, "n2": 40 / 60})
            res = CliRunner().invoke(cli, ["query", COUNTER, "--agg", "max", "--group-by",
                                           "if", "--format", "csv", *base])
            assert res.exit_code == 0, res.output
            assert res.stdout.splitlines()[0] == "ts,node,metric,labels,value"
            assert "if=eth1" in res.stdout
    finally:
        store.close()
