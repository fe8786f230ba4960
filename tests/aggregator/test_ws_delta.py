"""`/ws` delta subscriptions: changed hosts/agents as their changed fields only, merged by the
client into what equals the plain stream's full objects; coalescing keeps that true."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from legion.aggregator.gateway.delta import (
    delta_update,
    display_metrics,
    entity_delta,
    merge_entity,
)
from legion.aggregator.gateway.hub import merge_update
from tests.aggregator.test_gateway_ws import Env, receive_until, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.store.close()


def _agent(n: int, **metrics: float) -> dict[str, Any]:
    return {"agent_id": f"a{n}", "node": "h", "health": "ok", "ts_ms": 1,
            "metrics": {"cpu": 1.0, "mem": 2.0, **metrics}}


def test_delta_round_trip_and_coalescing() -> None:
    old = {"agents": [_agent(1), _agent(2)]}
    new_a1 = {**_agent(1, cpu=5.0), "ts_ms": 2}
    del new_a1["metrics"]["mem"]                      # a metric that disappears
    diff = {"agents": [new_a1, _agent(3)]}            # a1 changed, a3 is new
    d = delta_update(old, diff)
    assert d["delta"] is True
    assert d["agents"][0] == {"agent_id": "a1", "ts_ms": 2, "metrics": {"cpu": 5.0},
                              "metrics_removed": ["mem"]}
    assert d["agents"][1] == _agent(3)                # new: whole
    assert merge_entity(old["agents"][0], d["agents"][0]) == new_a1
    # two deltas coalesced for a slow client, then applied: the same as applying both
    later = {**new_a1, "ts_ms": 3, "metrics": {"cpu": 6.0, "mem": 9.0}}
    d2 = delta_update({"agents": [new_a1]}, {"agents": [later]})
    both = merge_update(d, d2, 100)
    a1 = next(e for e in both["agents"] if e["agent_id"] == "a1")
    assert merge_entity(old["agents"][0], a1) == later
    assert "metrics_removed" not in a1                # mem came back
    # a delta merged into a pending snapshot leaves a full object
    snap = merge_update(old, d, 100)
    assert next(e for e in snap["agents"] if e["agent_id"] == "a1") == new_a1
    assert entity_delta(None, _agent(4), "agent_id") == _agent(4)


def test_delta_sends_display_precision_and_restores_last_seen() -> None:
    stamp = {"ts_ms": 1_700_000_000_000, "last_seen_ms": 1_700_000_000_000,
             "last_seen": "2023-11-14T22:13:20.000Z"}
    old = {"agents": [{**_agent(1, rate=314.296665), **stamp}]}
    later = {"ts_ms": 1_700_000_001_250, "last_seen_ms": 1_700_000_001_250,
             "last_seen": "2023-11-14T22:13:21.250Z"}
    jitter = {**_agent(1, rate=314.301234), **later}     # the same at 4 significant digits
    moved = {**_agent(1, rate=318.0, cpu=1.23456789), **later}
    d = delta_update(old, {"agents": [jitter, moved]})
    assert d["agents"][0] == {"agent_id": "a1", "ts_ms": later["ts_ms"]}  # time only
    assert d["agents"][1] == {"agent_id": "a1", "ts_ms": later["ts_ms"],
                              "metrics": {"rate": 318.0, "cpu": 1.235}}
    merged = merge_entity(old["agents"][0], d["agents"][1])
    assert {k: merged[k] for k in later} == later          # restored from ts_ms
    assert display_metrics(merged["metrics"]) == display_metrics(moved["metrics"])
    # an entity with nothing new at display precision, and an unchanged link, are left out
    same = {**_agent(2, rate=5.000001)}
    d = delta_update({"agents": [_agent(2, rate=5.0)],
                      "links": [{"source": "a", "target": "b", "rate_per_s": 0.3832891}]},
                     {"agents": [same], "links": [
                         {"source": "a", "target": "b", "rate_per_s": 0.3832894},
                         {"source": "a", "target": "c", "rate_per_s": 1.23456}]})
    assert d["agents"] == []
    assert d["links"] == [{"source": "a", "target": "c", "rate_per_s": 1.235}]


def test_delta_stream_equals_full_stream_and_is_smaller(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            url = f"{srv.url}/ws?token={env.token['viewer']}"
            async with s.ws_connect(url) as full, s.ws_connect(url) as part:
                for ws, delta in ((full, False), (part, True)):
                    await receive_until(ws, lambda m: m.get("type") == "hello")
                    await ws.send_json({"op": "subscribe", "topics": ["agent_metrics"],
                                        "history": False, "delta": delta})
                snaps = [await receive_until(ws, lambda m: m.get("type") == "snapshot")
                         for ws in (full, part)]
                assert snaps[0]["data"] == snaps[1]["data"]
                state = {a["agent_id"]: a for a in snaps[1]["data"]["agents"]}
                sizes = {"full": 0, "delta": 0}
                for cpu in (30.0, 40.0, 50.0):
                    env.write(cpu=cpu)           # tokens and seq move; success etc. do not
                    f = await receive_until(full, lambda m: m.get("type") == "update")
                    d = await receive_until(part, lambda m: m.get("type") == "update")
                    assert d["data"]["delta"] is True and "delta" not in f["data"]
                    for e in d["data"]["agents"]:
                        state[e["agent_id"]] = merge_entity(state[e["agent_id"]], e)
                        assert "agent_id" in e and "department" not in e  # unchanged: absent
                    # equal at display precision (what the page shows), every other field exact
                    want = {a["agent_id"]: {**a, "metrics": display_metrics(a["metrics"])}
                            for a in f["data"]["agents"]}
                    assert {k: {**state[k], "metrics": display_metrics(state[k]["metrics"])}
                            for k in want} == want
                    sizes["full"] += len(json.dumps(f["data"]["agents"]))
                    sizes["delta"] += len(json.dumps(d["data"]["agents"]))
                assert sizes["delta"] < sizes["full"] * 0.8, sizes
                await part.send_json({"op": "subscribe", "topics": ["agent_metrics"],
                                      "delta": "yes"})
                err = await receive_until(part, lambda m: m.get("type") == "error")
                assert "'delta'" in err["error"]
    run(scenario())
