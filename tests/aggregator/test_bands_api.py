"""Learned normal bands (`ai_settings.ml_threshold_adjustment`) in the running system: computed by
the analytics bridge from a real DuckDB Store, saved and reloaded as model files, served by the real
aiohttp gateway and printed by `legionctl bands`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import zmq
from click.testing import CliRunner

from legion.aggregator.analytics_bridge import AnalyticsBridge, BandBook
from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
from legion.aggregator.store.store import Store
from legion.aggregator.store.types import IncomingBatch
from legion.analytics.bands import HOUR_MS
from legion.cli.config import Config, config_from_dict, config_to_dict, load_config
from legion.cli.main import cli
from legion.kernel.config import CONFIG_FILENAME
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.conftest import free_port, gateway_thread

MIN = 60_000
CPU = "system_cpu_usage_percent"
MEM = "system_memory_usage_percent"
OUTLIER = 200.0


def busy(ts: np.ndarray) -> np.ndarray:
    """True in the busy hours 9-17 UTC."""
    h = (ts // HOUR_MS) % 24
    return (h >= 9) & (h < 17)


class World:
    """A real Store holding one day of 1-minute data of node web-1, ending just before now.

    cpu (no labels): 20 % at night, 80 % in the busy hours, plus noise; its newest point (written
    by `spike`) is far outside. cpu{cpu="0"}: a constant 99 that must not leak into the total's
    band (and is not watched). memory: 50 % plus noise, newest point normal.
    """

    def __init__(self, tmp: Path, ml: bool = True) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = config_from_dict({
            "security": {"enable_tls": False},
            "ai_settings": {"ml_threshold_adjustment": ml, "model_retrain_interval": 3600}},
            base_dir=tmp).aggregator_settings()
        self.store = Store(tmp / "legion.duckdb")
        self.tokens = TokenStore(tmp / "tokens.json")
        self.viewer = self.tokens.add("viewer", "viewer")
        now = int(time.time() * 1000)
        last = now // MIN * MIN - 2 * MIN + 30_000          # one point per 1-minute bucket
        self.ts = last - np.arange(24 * 60)[::-1].astype(np.int64) * MIN
        rng = np.random.default_rng(7)
        self.cpu = np.where(busy(self.ts), 80.0, 20.0) + rng.normal(0, 2, len(self.ts))
        self.mem = 50.0 + rng.normal(0, 1, len(self.ts))
        self.seq = 0
        samples = []
        for t, c, m in zip(self.ts.tolist(), self.cpu.tolist(), self.mem.tolist(), strict=True):
            samples += [Sample(CPU, (), c, t), Sample(MEM, (), m, t),
                        Sample(CPU, canonical_labels({"cpu": "0"}), 99.0, t)]
        for i in range(0, len(samples), 3000):
            self.write(samples[i:i + 3000])

    def write(self, samples: list[Sample]) -> None:
        self.seq += 1
        self.store.write([IncomingBatch("web-1", 1, self.seq, MetricsBatch.from_samples(samples),
                                        int(time.time() * 1000))])

    def spike(self) -> int:
        """The newest minute: cpu far above anything seen, memory normal."""
        t = int(self.ts[-1]) + MIN
        self.write([Sample(CPU, (), OUTLIER, t), Sample(MEM, (), 50.0, t)])
        return t

    def bridge(self) -> AnalyticsBridge:
        """The aggregator's analytics side (not started: no sockets are needed for bands)."""
        return AnalyticsBridge(zmq.Context.instance(), self.config, (b"", b""), self.store,
                               lambda batch: None)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def get(world: World, bands: Any, path: str) -> tuple[int, Any]:
    app = create_app(world.config, world.store, lambda: {}, world.tokens, bands=bands)
    server = await start_gateway(app, world.config, port=0)
    try:
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {world.viewer}"}) as s, \
                s.get(server.url + path) as r:
            return r.status, await r.json()
    finally:
        await stop_gateway(server)


def test_bridge_computes_bands_served_by_the_api_and_reloaded(world: World,
                                                             tmp_path: Path) -> None:
    bridge = world.bridge()
    assert bridge.bands is not None and bridge.bands.entries() == []
    assert bridge.refresh_bands() == 2                       # cpu total and memory (watched)
    assert bridge.refresh_bands() == 0                       # not due again before the interval
    spike_ts = world.spike()

    status, rows = run(get(world, bridge.bands, f"/api/v1/bands?metric={CPU}&node=web-1"))
    assert status == 200 and len(rows) == 1                  # cpu{cpu="0"} has no band
    r = rows[0]
    assert (r["node"], r["metric"], r["labels"], r["version"]) == ("web-1", CPU, {}, 1)
    assert r["trained_to_ms"] == int(world.ts[-1]) // MIN * MIN   # 1-minute buckets
    # The 24 h ahead at the band's step, from the current minute.
    pts = np.asarray(r["band"], float)
    assert r["step_ms"] == MIN and len(pts) == 24 * 60 + 1
    assert pts[0, 0] == r["now"]["ts_ms"] // MIN * MIN and np.all(np.diff(pts[:, 0]) == MIN)
    # The daily shape came through: busy hours sit above 40 %, quiet ones below, and the
    # per-core series at 99 % leaked into neither.
    hot = busy(pts[:, 0].astype(np.int64))
    assert np.all(pts[hot, 1] > 60) and np.all(pts[~hot, 2] < 40) and pts[:, 2].max() < 99
    for t, lo, hi in pts[::60]:
        same_hour = world.cpu[(world.ts // HOUR_MS) % 24 == (int(t) // HOUR_MS) % 24]
        assert lo < same_hour.min() and same_hour.max() < hi
    now_row = pts[0]
    assert (r["now"]["lower"], r["now"]["upper"]) == (now_row[1], now_row[2])
    assert r["latest"]["ts_ms"] == spike_ts // MIN * MIN and r["latest"]["value"] == OUTLIER
    assert r["outside"] is True

    status, rows = run(get(world, bridge.bands, f"/api/v1/bands?metric={MEM}&step=1h"))
    assert status == 200 and len(rows) == 1 and rows[0]["outside"] is False
    assert len(rows[0]["band"]) == 25 and 40 < rows[0]["now"]["lower"] < 50 < \
        rows[0]["now"]["upper"] < 60

    # The lookup an ml_based alert rule makes, and the files it is kept in.
    band = bridge.bands.band_for("web-1", CPU, {})
    assert band is not None and bool(band.outside(spike_ts, OUTLIER))
    assert bridge.bands.band_for("web-1", CPU, {"cpu": "0"}) is None
    files = sorted((tmp_path / "models" / "bands").glob("*.npz"))
    assert len(files) == 2

    # A restarted aggregator serves the same bands at once, without recomputing them...
    again = world.bridge()
    assert again.bands is not None and again.bands.stats["loaded"] == 2
    back = again.bands.band_for("web-1", CPU, {})
    assert back is not None and np.array_equal(back.low, band.low) \
        and np.array_equal(back.high, band.high)
    assert again.refresh_bands() == 0
    status, rows = run(get(world, again.bands, f"/api/v1/bands?metric={CPU}"))
    assert rows[0]["version"] == 1 and rows[0]["outside"] is True
    # ...and an on-demand retrain recomputes every band, with a new version in its file.
    assert again.request_retrain() is True
    assert again.refresh_bands() == 2
    assert {e.version for e in again.bands.entries()} == {2}
    assert {e.version for e in BandBook(world.store, tmp_path / "models",
                                        retrain_secs=3600).entries()} == {2}


def test_schedule_retrain_interval_retry_and_one_series_on_demand(world: World,
                                                                 tmp_path: Path) -> None:
    clock = [time.time()]
    book = BandBook(world.store, None, retrain_secs=3600, retry_secs=600,
                    clock=lambda: clock[0])
    series = [("web-1|cpu|", "web-1", CPU, {}), ("web-1|mem|", "web-1", MEM, {}),
              ("ghost|cpu|", "ghost", CPU, {})]               # no data: no band, retried later
    assert book.refresh(series) == 2 and book.stats["too_short"] == 1
    assert book.band_for("ghost", CPU) is None
    clock[0] += 599
    assert book.refresh(series) == 0 and book.stats["too_short"] == 1
    clock[0] += 2                                             # ghost's retry is due, not the rest
    assert book.refresh(series) == 0 and book.stats["too_short"] == 2
    book.request_retrain("web-1|mem|")
    assert book.refresh(series) == 1
    assert [(e.metric, e.version) for e in book.entries()] == [(CPU, 1), (MEM, 2)]
    clock[0] += 3600                                          # the retrain interval has passed
    assert book.refresh(series) == 2
    assert [(e.metric, e.version) for e in book.entries(node="web-1")] == [(CPU, 2), (MEM, 3)]
    assert book.entries(metric=MEM)[0].computed_ms == int(clock[0] * 1000)


def test_series_too_young_for_a_band_are_tried_within_the_budget(world: World) -> None:
    book = BandBook(world.store, None, retrain_secs=3600)
    young = [(f"ghost-{i}|cpu|", f"ghost-{i}", CPU, {}) for i in range(5)]  # no data yet
    assert book.refresh(young, budget_s=0.0) == 0
    assert book.stats["too_short"] == 1  # one attempt, then the budget is spent
    assert book.refresh(young, budget_s=0.0) == 0 and book.stats["too_short"] == 2
    assert book.refresh(young, budget_s=60.0) == 0 and book.stats["too_short"] == 5


def test_bands_route_errors(world: World, tmp_path: Path) -> None:
    status, body = run(get(world, None, f"/api/v1/bands?metric={CPU}"))
    assert status == 503 and "ml_threshold_adjustment" in body["error"]
    off = World(tmp_path / "off", ml=False)
    try:
        assert off.bridge().bands is None
    finally:
        off.store.close()
    book = BandBook(world.store, None, retrain_secs=3600)
    for query, status_want in (("step=1ms", 400), ("step=2d", 400), ("bogus=1", 400),
                               ("node=bad node", 400), ("metric=nothing_here", 200)):
        status, body = run(get(world, book, f"/api/v1/bands?{query}"))
        assert status == status_want, (query, body)
    assert body == []


def test_legionctl_bands_table_json_csv(world: World, tmp_path: Path) -> None:
    raw = config_to_dict(Config())
    raw["security"]["enable_tls"] = False
    raw["dashboard_config"]["websocket_port"] = free_port()
    (tmp_path / "cli").mkdir()
    cfg_path = tmp_path / "cli" / CONFIG_FILENAME
    cfg_path.write_text(json.dumps(raw))
    bridge = world.bridge()
    bridge.refresh_bands()
    world.spike()
    base = ["--config", str(cfg_path), "--token", world.viewer]
    runner = CliRunner()
    config = load_config(cfg_path).aggregator_settings()
    with gateway_thread(config, lambda: create_app(config, world.store, lambda: {},
                                                   world.tokens, bands=bridge.bands)):
        res = runner.invoke(cli, ["bands", CPU, "--node", "web-1", "--format", "json", *base])
        assert res.exit_code == 0, res.output
        rows = json.loads(res.stdout)
        assert len(rows) == 1 and rows[0]["outside"] is True and len(rows[0]["band"]) == 1441
        res = runner.invoke(cli, ["bands", CPU, "--format", "csv", *base])
        assert res.exit_code == 0, res.output
        lines = res.stdout.splitlines()
        assert lines[0] == "node,metric,labels,lower,upper,latest,outside,trained_to,version"
        cells = lines[1].split(",")
        assert cells[:3] == ["web-1", CPU, ""] and cells[5] == "200" and cells[6] == "yes"
        assert float(cells[3]) < float(cells[4]) < OUTLIER
        res = runner.invoke(cli, ["bands", MEM, *base])
        assert res.exit_code == 0, res.output
        assert res.stdout.split()[:9] == ["NODE", "METRIC", "LABELS", "LOWER", "UPPER",
                                          "LATEST", "OUTSIDE", "TRAINED_TO", "VERSION"]
        assert " no " in res.stdout and "web-1" in res.stdout


def test_retrain_accepts_only_watched_series_and_keeps_nothing_else(world: World) -> None:
    """Issue 13: 1,500 requests with 7 KB keys were all 202 and kept in memory."""
    bridge = world.bridge()
    operator = world.tokens.add("op", "operator")

    async def post_all(paths: list[str]) -> list[tuple[int, Any]]:
        app = create_app(world.config, world.store, lambda: {}, world.tokens,
                         bands=bridge.bands, analytics_retrain=bridge.request_retrain)
        server = await start_gateway(app, world.config, port=0)
        out = []
        try:
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {operator}"}) as s:
                for p in paths:
                    async with s.post(server.url + p) as r:
                        out.append((r.status, await r.json()))
        finally:
            await stop_gateway(server)
        return out

    junk = [f"/api/v1/analytics/retrain?series=web-1|{i}|" + "x" * 900 for i in range(50)]
    answers = run(post_all([*junk, "/api/v1/analytics/retrain?series=" + "y" * 7000,
                            "/api/v1/analytics/retrain?series=web-1|" + MEM + "|",
                            "/api/v1/analytics/retrain"]))
    assert all(status == 404 and "unknown series" in body["error"]
               for status, body in answers[:50]), answers[:2]
    assert answers[50][0] == 400 and "series" in answers[50][1]["error"]
    assert answers[51][0] == 202 and answers[52][0] == 202
    assert bridge.bands is not None
    assert bridge.bands._requested == {"web-1|" + MEM + "|"}  # noqa: SLF001 - nothing else kept


def test_a_series_new_after_the_first_listing_waits_until_it_can_hold_a_band(
        world: World) -> None:
    clock = [time.time()]
    book = BandBook(world.store, None, retrain_secs=3600, retry_secs=600,
                    clock=lambda: clock[0])
    cpu, mem = ("web-1|cpu|", "web-1", CPU, {}), ("web-1|mem|", "web-1", MEM, {})
    assert book.refresh([cpu]) == 1                 # listed first: of unknown age, tried at once
    assert book.refresh([cpu, mem]) == 0            # appeared later: no store query for it yet
    assert book.stats["deferred_new"] == 1 and book.stats["too_short"] == 0
    clock[0] += 47 * 60
    assert book.refresh([cpu, mem]) == 0 and book.stats["too_short"] == 0
    clock[0] += 61                                  # 48 one-minute buckets could exist now
    assert book.refresh([cpu, mem]) == 1 and book.band_for("web-1", MEM) is not None
