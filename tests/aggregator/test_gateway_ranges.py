"""Valid questions beyond raw retention and absurd ranges, through the real gateway: a tier
answers (and the response says which), absurd values get a 400 naming the parameter, and no
internal class name reaches a client. Real aiohttp server on 127.0.0.1, real DuckDB store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from legion.aggregator.config import StorageConfig
from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample, canonical_labels

HOUR, DAY = 3_600_000, 86_400_000


@pytest.fixture(scope="module")
def aged_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Three days of data every 20 minutes, with raw kept 1 h and 1m kept 1 day (retention run),
    so a week is only in the 1h/1d tiers."""
    cfg = StorageConfig(raw_retention_hours=1, rollup_1m_retention_days=1,
                        maintenance_budget_ms=30_000)
    store = Store(tmp_path_factory.mktemp("aged") / "aged.duckdb", cfg)
    now = int(time.time() * 1000)
    flag = canonical_labels({"node": "web-1", "metric": "system_cpu_usage_percent"})
    seq = 0
    for ts in range(now - 3 * DAY, now, 20 * 60_000):
        seq += 1
        batch = MetricsBatch.from_samples([
            Sample("system_cpu_usage_percent", (), 40.0 + seq % 7, ts)])
        store.write([IncomingBatch("web-1", 1, seq, batch, ts)])
        store.write([IncomingBatch("analytics", 1, seq, MetricsBatch.from_samples([
            Sample("legion_anomaly_flag", flag, float(seq % 10 == 0), ts),
            Sample("legion_anomaly_score", flag, 0.5, ts)]), ts)])
    store.roll_up(budget_s=60, include_open=True)
    for _ in range(20):
        store.maintain(budget_s=30)
        kept = store._kept()  # noqa: SLF001 - the test checks its own premise
        if kept["raw"] > now - 2 * HOUR and kept["1m"] > now - 2 * DAY:
            break
    assert kept["raw"] > now - 2 * HOUR and kept["1m"] > now - 2 * DAY, kept
    yield store
    store.close()


def get_all(store: Store, tmp: Path, paths: list[str]) -> list[tuple[int, Any, str]]:
    """GET each path from a real gateway: (status, JSON body, resolution header)."""
    config = config_from_dict({"security": {"enable_tls": False}}, base_dir=tmp)
    tokens = TokenStore(tmp / "tokens.json")
    token = tokens.add("admin", "admin")

    async def scenario() -> list[tuple[int, Any, str]]:
        app = create_app(config, store, lambda: {}, tokens)
        server = await start_gateway(app, config, port=0)
        out = []
        try:
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {token}"}) as s:
                for p in paths:
                    async with s.get(server.url + p) as r:
                        out.append((r.status, await r.json(),
                                    r.headers.get("X-Legion-Resolution", "")))
        finally:
            await stop_gateway(server)
        return out

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def test_ranges_beyond_raw_retention_are_answered_from_a_tier(aged_store: Store,
                                                              tmp_path: Path) -> None:
    week, two_h, recent, anomalies = get_all(aged_store, tmp_path, [
        "/api/v1/query?metric=system_cpu_usage_percent&since=1w",
        "/api/v1/query?metric=system_cpu_usage_percent&since=2h",
        "/api/v1/query?metric=system_cpu_usage_percent&since=30m",
        "/api/v1/anomalies?since=1w"])
    assert week[0] == 200 and week[2] == "1h", week
    assert len(week[1]) >= 70  # 72 hours of data, one row per hour
    assert two_h[0] == 200 and two_h[2] == "1m", two_h
    assert recent[0] == 200 and recent[2] == "raw" and len(recent[1]) >= 1, recent
    assert anomalies[0] == 200, anomalies
    assert anomalies[1][0]["metric"] == "system_cpu_usage_percent"
    assert 0.05 < anomalies[1][0]["anomaly_rate"] < 0.15


def test_absurd_values_get_a_400_naming_the_parameter(aged_store: Store, tmp_path: Path) -> None:
    cases = {
        "/api/v1/query?metric=system_cpu_usage_percent&since=99999999999w": "since",
        "/api/v1/query?metric=system_cpu_usage_percent&since=1w&until=99999999999999999999":
            "until",
        "/api/v1/query?metric=system_cpu_usage_percent&since=1d&step=99999999999w": "step",
        "/api/v1/query?metric=system_cpu_usage_percent&since=0001-01-01T00:00:00": "since",
        "/api/v1/anomalies?since=99999999999w": "since",
        "/api/v1/anomalies?limit=many": "limit",
        # percentiles need raw points: the store cannot answer, the caller can fix it
        "/api/v1/query?metric=system_cpu_usage_percent&since=1w&step=1m": "range",
    }
    answers = get_all(aged_store, tmp_path, list(cases))
    for (path, word), (status, body, _) in zip(cases.items(), answers, strict=True):
        assert status == 400, (path, status, body)
        assert word in body["error"], (path, body)
        assert "Error" not in body["error"], (path, body)  # no internal class name
