"""Gateway WebSocket: auth, origins, snapshot then updates, coalescing, the connection cap."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from legion.aggregator.alerts.engine import AlertEngine
from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
from legion.aggregator.gateway import ws as ws_mod
from legion.aggregator.gateway.keys import HUB_KEY
from legion.aggregator.store.store import Store
from legion.aggregator.store.types import IncomingBatch
from legion.proto import MetricsBatch, Sample, canonical_labels

from legion.cli.config import config_from_dict


def run(coro: Any, timeout: float = 60) -> Any:
    """Run one async scenario with a hard time bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def batch(seq: int, now: int, cpu: float, response_ms: float = 300.0) -> IncomingBatch:
    base = {"agent_id": "planner-1", "department": "strategy"}
    s = [Sample("system_cpu_usage_percent", (), cpu, now),
         Sample("system_memory_usage_percent", (), 40.0, now),
         Sample("agent_response_time_ms", canonical_labels({**base, "quantile": "p95"}),
                response_ms, now),
         Sample("agent_tokens_total", canonical_labels({**base, "type": "input"}),
                1000.0 * seq, now)]
    return IncomingBatch("web-1", 1, seq, MetricsBatch.from_samples(s), now)


class Env:
    def __init__(self, tmp: Path, **dashboard: Any) -> None:
        self.config = config_from_dict(
            {"security": {"enable_tls": False},
             "dashboard_config": {"update_interval_ms": 100, **dashboard}}, base_dir=tmp).aggregator_settings()
        self.store = Store(tmp / "legion.duckdb")
        self.tokens = TokenStore(tmp / "tokens.json")
        self.token = {r: self.tokens.add(r, r) for r in ("admin", "operator", "viewer")}
        self.now = int(time.time() * 1000)
        self.seq = 1
        self.store.write([batch(1, self.now, cpu=20.0)])
        # the alerting engine (default rules), evaluated after each write on the data's clock
        self.engine = AlertEngine(self.config, self.store,
                                  clock_ms=lambda: self.now + 1000 * self.seq)

    def write(self, cpu: float, response_ms: float = 300.0) -> None:
        self.seq += 1
        self.store.write([batch(self.seq, self.now + 1000 * self.seq, cpu, response_ms)])
        self.engine.evaluate_once()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[Any]:
        app = create_app(self.config, self.store, lambda: {"accepted": 0}, self.tokens,
                         sources={"alerts": self.engine.dashboard_alerts},
                         alert_actions=self.engine)
        server = await start_gateway(app, self.config, port=0)
        server.app = app
        try:
            yield server
        finally:
            await stop_gateway(server)


@pytest.fixture
def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.store.close()


async def receive_until(ws: aiohttp.ClientWebSocketResponse, pred: Any,
                        timeout: float = 5.0) -> dict[str, Any]:
    """The first JSON message satisfying `pred` (others are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, "timed out waiting for a message"
        msg = await ws.receive_json(timeout=left)
        if pred(msg):
            return msg


def test_snapshot_on_subscribe_then_updates(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{srv.url}/ws?token={env.token['viewer']}") as ws:
                hello = await ws.receive_json(timeout=5)
                assert hello["type"] == "hello" and hello["role"] == "viewer"
                assert hello["update_interval_ms"] == 100
                await ws.send_json({"op": "subscribe",
                                    "topics": ["system_health", "agent_metrics", "alerts"]})
                snap = await receive_until(ws, lambda m: m.get("topic") == "system_health")
                assert snap["type"] == "snapshot"
                host = snap["data"]["hosts"][0]
                assert host["node"] == "web-1" and host["metrics"]["cpu_usage_percent"] == 20.0
                assert snap["data"]["history"]["web-1"]["cpu_usage_percent"][-1][1] == 20.0
                snap = await receive_until(ws, lambda m: m.get("topic") == "agent_metrics")
                assert snap["type"] == "snapshot"
                assert snap["data"]["agents"][0]["agent_id"] == "planner-1"

                env.write(cpu=95.0, response_ms=6000.0)
                upd = await receive_until(ws, lambda m: m.get("topic") == "system_health"
                                          and m["type"] == "update")
                assert upd["data"]["hosts"][0]["metrics"]["cpu_usage_percent"] == 95.0
                assert upd["data"]["hosts"][0]["health"] == "critical"
                assert upd["ts"].endswith("Z") and upd["coalesced"] == 0
                upd = await receive_until(ws, lambda m: m.get("topic") == "agent_metrics"
                                          and m["type"] == "update")
                agent = upd["data"]["agents"][0]
                assert agent["health"] == "critical"
                assert agent["metrics"]["tokens_per_s"] == pytest.approx(500.0)  # 1000 tokens in 2 s
                alert = await receive_until(ws, lambda m: m.get("topic") == "alerts"
                                            and m["type"] == "update")
                # the engine's alerts, named by the stored metric (usable in `legionctl query`)
                got = {(a["rule_id"], a["metric"]): a["id"] for a in alert["data"]["alerts"]}
                assert ("cpu_usage_high", "system_cpu_usage_percent") in got
                assert ("agent_response_time_high", "agent_response_time_ms") in got

                env.write(cpu=10.0)
                resolved = await receive_until(ws, lambda m: m.get("topic") == "alerts"
                                               and "resolved" in m["data"])
                assert got[("cpu_usage_high", "system_cpu_usage_percent")] in \
                    resolved["data"]["resolved"]

                # resubscribing gives a fresh snapshot, with the history of both readings
                await ws.send_json({"op": "subscribe", "topics": ["system_health"]})
                snap = await receive_until(ws, lambda m: m.get("type") == "snapshot")
                hist = [v for _, v in snap["data"]["history"]["web-1"]["cpu_usage_percent"]]
                assert hist[:3] == [20.0, 95.0, 10.0]

                await ws.send_json({"op": "unsubscribe", "topics": ["system_health"]})
                await ws.send_json({"op": "ping"})
                assert (await receive_until(ws, lambda m: m.get("type") == "pong"))
    run(scenario())


def test_history_is_bounded(tmp_path: Path) -> None:
    env = Env(tmp_path, max_history_points=3)

    async def scenario() -> None:
        async with env.serve() as srv:
            hub = srv.app[HUB_KEY]
            for cpu in (30.0, 40.0, 50.0, 60.0, 70.0):
                env.write(cpu=cpu)
                await hub.refresh()
            hist = hub.snapshot("system_health")["history"]["web-1"]["cpu_usage_percent"]
            assert [v for _, v in hist] == [50.0, 60.0, 70.0]
    try:
        run(scenario())
    finally:
        env.store.close()


def test_ws_authentication_paths(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_mod, "AUTH_TIMEOUT_S", 0.5)

    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            url = srv.url + "/ws"
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await s.ws_connect(url + "?token=lgn_nope")
            assert err.value.status == 401
            async with s.ws_connect(url, headers={
                    "Authorization": f"Bearer {env.token['operator']}"}) as ws:
                assert (await ws.receive_json(timeout=5))["role"] == "operator"
            async with s.ws_connect(url) as ws:  # first-message auth keeps tokens out of URLs
                await ws.send_json({"op": "auth", "token": env.token["admin"]})
                assert (await ws.receive_json(timeout=5))["role"] == "admin"
            async with s.ws_connect(url) as ws:  # no auth at all: closed
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
            async with s.ws_connect(url) as ws:
                await ws.send_json({"op": "subscribe", "topics": ["alerts"]})
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
            async with s.ws_connect(url) as ws:
                await ws.send_json({"op": "auth", "token": "lgn_wrong"})
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
    run(scenario())


def test_revoked_token_closes_the_socket(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{srv.url}/ws?token={env.token['viewer']}") as ws:
                await ws.receive_json(timeout=5)
                env.tokens.revoke("viewer")
                await ws.send_json({"op": "ping"})
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
    run(scenario())


def test_revoked_token_closes_an_idle_socket(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from legion.aggregator.gateway import app as app_mod
    monkeypatch.setattr(app_mod, "_REVALIDATE_EVERY_S", 0.1)

    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{srv.url}/ws?token={env.token['operator']}") as ws:
                await ws.receive_json(timeout=5)
                env.tokens.revoke("operator")  # the client sends nothing from now on
                while True:
                    msg = await ws.receive(timeout=5)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
    run(scenario())


def test_bad_ops_get_errors_and_keep_the_connection(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{srv.url}/ws?token={env.token['viewer']}") as ws:
                await ws.receive_json(timeout=5)
                for bad, text in (({"op": "subscribe", "topics": ["nope"]}, "unknown topic"),
                                  ({"op": "subscribe", "topics": "alerts"}, "'topics' must"),
                                  ({"op": "drop_tables"}, "unknown op"),
                                  ({"op": "auth", "token": "x"}, "already authenticated")):
                    await ws.send_json(bad)
                    err = await ws.receive_json(timeout=5)
                    assert err["type"] == "error" and text in err["error"], err
                await ws.send_str("not json")
                assert "not JSON" in (await ws.receive_json(timeout=5))["error"]
                await ws.send_json({"op": "ping"})
                assert (await ws.receive_json(timeout=5))["type"] == "pong"
    run(scenario())


@pytest.mark.parametrize("origin, host, ok", [
    ("tauri://localhost", None, True),
    (None, None, True),
    ("same", None, True),
    ("http://evil.example", None, False),
    ("http://evil.example:{port}", "evil.example:{port}", False),  # DNS rebinding
    ("null", None, False),
])
def test_origin_checked_on_upgrade(env: Env, origin: str | None, host: str | None,
                                   ok: bool) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            headers = {}
            if origin is not None:
                headers["Origin"] = srv.url if origin == "same" else origin.format(port=srv.port)
            if host is not None:
                headers["Host"] = host.format(port=srv.port)
            url = f"{srv.url}/ws?token={env.token['admin']}"
            if ok:
                async with s.ws_connect(url, headers=headers) as ws:
                    assert (await ws.receive_json(timeout=5))["type"] == "hello"
            else:
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(url, headers=headers)
                assert err.value.status == 403
    run(scenario())


def test_connection_cap(tmp_path: Path) -> None:
    env = Env(tmp_path, max_ws_clients=2)

    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            url = f"{srv.url}/ws?token={env.token['viewer']}"
            a = await s.ws_connect(url)
            b = await s.ws_connect(url)
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await s.ws_connect(url)
            assert err.value.status == 503
            await a.close()
            await asyncio.sleep(0.2)
            c = await s.ws_connect(url)
            assert (await c.receive_json(timeout=5))["type"] == "hello"
            async with s.get(srv.url + "/api/v1/status", headers={
                    "Authorization": f"Bearer {env.token['viewer']}"}) as r:
                g = (await r.json())["gateway"]
                assert g["refused_cap"] == 1 and g["ws_clients"] == 2
            await b.close()
            await c.close()
    try:
        run(scenario())
    finally:
        env.store.close()


class RawWsClient:
    """A deliberately slow WebSocket client: tiny receive buffer, reads only when told."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_json(self, obj: Any) -> None:
        data, mask = json.dumps(obj).encode(), os.urandom(4)
        assert len(data) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def receive(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def receive_json(self) -> dict[str, Any]:
        while True:
            op, payload = self.receive()
            if op == 0x1:
                return json.loads(payload)
            if op == 0x8:
                raise ConnectionError(f"closed {payload[:2].hex()}")


def test_slow_client_gets_coalesced_updates(env: Env) -> None:
    n_updates, pad = 120, "x" * 200_000
    received: list[dict[str, Any]] = []
    stalled, go = threading.Event(), threading.Event()

    def slow_client(port: int) -> None:
        c = RawWsClient(port, env.token["viewer"])
        assert c.receive_json()["type"] == "hello"
        c.send_json({"op": "subscribe", "topics": ["forecasts"]})
        assert c.receive_json()["type"] == "snapshot"
        stalled.set()
        go.wait(30)  # do not read while the server publishes
        accounted = 0
        while accounted < n_updates:
            m = c.receive_json()
            if m.get("topic") == "forecasts" and m["type"] == "update":
                received.append(m)
                accounted += 1 + m["coalesced"]
        c.sock.close()

    async def scenario() -> None:
        async with env.serve() as srv:
            hub = srv.app[HUB_KEY]
            t = threading.Thread(target=slow_client, args=(srv.port,), daemon=True)
            t.start()
            assert await asyncio.to_thread(stalled.wait, 10)
            for i in range(n_updates):
                hub.publish("forecasts", {"forecasts": [
                    {"id": f"f{i % 4}", "version": i, "pad": pad}]})
                await asyncio.sleep(0.002)
                client = next(iter(hub.clients))
                assert len(client.pending) <= 1  # one pending message per topic, ever
            go.set()
            await asyncio.to_thread(t.join, 30)
            assert not t.is_alive()
    run(scenario())
    assert 1 <= len(received) < n_updates  # fewer, fuller frames
    assert sum(1 + m["coalesced"] for m in received) == n_updates  # every update accounted for
    assert any(m["coalesced"] > 0 for m in received)
    last = {}
    for m in received:
        for f in m["data"]["forecasts"]:
            last[f["id"]] = f["version"]
    assert last == {f"f{k}": n_updates - 4 + k for k in range(4)}  # newest version of each key


def test_stuck_client_is_closed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_mod, "SEND_TIMEOUT_S", 0.5)
    pad = "y" * 500_000
    done = threading.Event()
    holder: dict[str, RawWsClient] = {}

    def stuck_client(port: int) -> None:
        c = RawWsClient(port, env.token["viewer"])
        c.receive_json()
        c.send_json({"op": "subscribe", "topics": ["forecasts"]})
        c.receive_json()
        holder["c"] = c
        done.wait(30)  # never reads again
        c.sock.close()

    async def scenario() -> None:
        async with env.serve() as srv:
            hub = srv.app[HUB_KEY]
            t = threading.Thread(target=stuck_client, args=(srv.port,), daemon=True)
            t.start()
            for _ in range(100):
                if "c" in holder:
                    break
                await asyncio.sleep(0.05)
            deadline = asyncio.get_running_loop().time() + 20
            while hub.clients and asyncio.get_running_loop().time() < deadline:
                hub.publish("forecasts", {"forecasts": [{"id": "f", "pad": pad}]})
                await asyncio.sleep(0.05)
            assert not hub.clients  # dropped, not buffered forever
            async with aiohttp.ClientSession() as s:
                async with s.get(srv.url + "/api/v1/status", headers={
                        "Authorization": f"Bearer {env.token['viewer']}"}) as r:
                    assert (await r.json())["gateway"]["slow_closed"] >= 1
            done.set()
            await asyncio.to_thread(t.join, 10)
    run(scenario())
