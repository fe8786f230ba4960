"""The seed's socket.io subscribers against a real gateway: a python-socketio client on loopback.

A viewer token receives `agent_metrics` and `system_health` snapshots, then updates as the store
changes; no token, a bad token and a foreign `Origin` are refused; the allowed origin works.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import socketio

from legion.aggregator.gateway.keys import GATEWAY_STATUS_KEY, HUB_KEY
from tests.aggregator.test_gateway_ws import Env, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.store.close()


async def wait_for(pred: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def collector(client: socketio.AsyncClient) -> dict[str, list[dict[str, Any]]]:
    got: dict[str, list[dict[str, Any]]] = {"agent_metrics": [], "system_health": []}
    for topic, box in got.items():
        client.on(topic, box.append)
    return got


def test_viewer_receives_both_events_then_updates(env: Env) -> None:
    async def main() -> None:
        async with env.serve() as server:
            client = socketio.AsyncClient(reconnection=False)
            got = collector(client)
            await client.connect(server.url, auth={"token": env.token["viewer"]},
                                 transports=["polling", "websocket"], wait_timeout=20)
            try:
                await wait_for(lambda: got["agent_metrics"] and got["system_health"])
                snap = got["agent_metrics"][0]
                assert snap["topic"] == "agent_metrics" and snap["type"] == "snapshot"
                assert [a["agent_id"] for a in snap["data"]["agents"]] == ["planner-1"]
                health = got["system_health"][0]["data"]
                assert [h["node"] for h in health["hosts"]] == ["web-1"]
                assert health["summary"]["hosts"] == 1
                # a change in the store reaches the subscriber as an update of that host
                env.write(cpu=97.0)
                await wait_for(lambda: any(
                    m["type"] == "update" and any(h["metrics"].get("cpu_usage_percent") == 97.0
                                                  for h in m["data"].get("hosts", ()))
                    for m in got["system_health"]))
                hub = server.app[HUB_KEY]
                assert len(hub.clients) == 1
                # unsubscribe stops a topic; the ack says what is left
                left = await client.call("unsubscribe", {"topics": ["system_health"]}, timeout=10)
                assert "system_health" not in left["topics"] and "agent_metrics" in left["topics"]
                bad = await client.call("subscribe", {"topics": ["nope"]}, timeout=10)
                assert "unknown topic" in bad["error"]
            finally:
                await client.disconnect()
            await wait_for(lambda: not hub.clients)
    run(main())


def test_refused_without_token_bad_token_and_foreign_origin(env: Env) -> None:
    async def main() -> None:
        async with env.serve() as server:
            for kwargs in ({}, {"auth": {"token": "lgn_wrong"}},
                           {"auth": {"token": env.token["viewer"]},
                            "headers": {"Origin": "https://evil.example"}}):
                client = socketio.AsyncClient(reconnection=False)
                got = collector(client)
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await client.connect(server.url, wait_timeout=10, **kwargs)
                assert not got["agent_metrics"] and not got["system_health"], kwargs
                await client.disconnect()
            status = server.app[GATEWAY_STATUS_KEY]()
            assert status["refused_origin"] >= 1 and status["bad_token"] >= 1
            assert status["auth_failed"] >= 1
            # the configured origin (a Tauri shell) is allowed, as on /ws
            client = socketio.AsyncClient(reconnection=False)
            got = collector(client)
            await client.connect(server.url, auth={"token": env.token["viewer"]},
                                 headers={"Origin": "tauri://localhost"}, wait_timeout=20)
            try:
                await wait_for(lambda: got["agent_metrics"] and got["system_health"])
            finally:
                await client.disconnect()
    run(main())


def test_revoked_token_is_disconnected(env: Env) -> None:
    async def main() -> None:
        async with env.serve() as server:
            client = socketio.AsyncClient(reconnection=False)
            got = collector(client)
            gone = asyncio.Event()
            client.on("disconnect", lambda *_: gone.set())
            await client.connect(server.url, auth={"token": env.token["operator"]},
                                 wait_timeout=20)
            try:
                await wait_for(lambda: got["system_health"])
                assert env.tokens.revoke("operator")
                env.write(cpu=55.0)  # the next message finds the token revoked
                await asyncio.wait_for(gone.wait(), 30)
                assert not server.app[HUB_KEY].clients
            finally:
                await client.disconnect()
    run(main())
