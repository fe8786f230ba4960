"""Gateway HTTP API against a real aiohttp server on 127.0.0.1 and a real DuckDB-backed Store."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from legion.aggregator.gateway import (
    AuditLog,
    TokenStore,
    create_app,
    generate_self_signed,
    start_gateway,
    stop_gateway,
)
from legion.aggregator.gateway.tls import client_ssl_context
from legion.aggregator.store.store import Store
from legion.aggregator.store.types import IncomingBatch
from legion.proto import MetricsBatch, Sample, canonical_labels

from legion.cli.config import config_from_dict

STATUS = {"accepted": 7, "duplicates": 1, "rejected": {"bad_msgpack": 2, "node_mismatch": 1},
          "queue_depth": 0}


def run(coro: Any, timeout: float = 60) -> Any:
    """Run one async scenario with a hard time bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def fleet_batch(node: str, seq: int, now: int, cpu: float = 42.0) -> IncomingBatch:
    """System and agent samples for one node, as the ingest loop would store them."""
    s = [Sample("system_cpu_usage_percent", (), cpu, now),
         Sample("system_cpu_usage_percent", canonical_labels({"cpu": "0"}), 99.0, now),
         Sample("system_memory_usage_percent", (), 50.0, now),
         Sample("system_disk_usage_percent", canonical_labels({"mount": "/"}), 70.0, now),
         Sample("system_disk_usage_percent", canonical_labels({"mount": "/data"}), 91.5, now)]
    for agent, dept in (("planner-1", "strategy"), ("coder-1", "engineering")):
        base = {"agent_id": agent, "department": dept}
        s += [Sample("agent_response_time_ms", canonical_labels({**base, "quantile": "p95",
                                                                 "task_type": "plan"}), 900.0, now),
              Sample("agent_success_rate_percent", canonical_labels(base), 97.0, now),
              Sample("agent_tasks_total", canonical_labels({**base, "status": "ok"}),
                     100.0 + seq, now),
              Sample("agent_messages_sent_total", canonical_labels(base), 10.0 * seq, now)]
    return IncomingBatch(node, 1, seq, MetricsBatch.from_samples(s), now)


class Env:
    """Config dir, real Store, tokens for each role."""

    def __init__(self, tmp: Path, **overrides: Any) -> None:
        raw: dict[str, Any] = {"security": {"enable_tls": False},
                               "dashboard_config": {"update_interval_ms": 100}}
        for section, values in overrides.items():
            raw.setdefault(section, {}).update(values)
        self.dir = tmp
        self.config = config_from_dict(raw, base_dir=tmp).aggregator_settings()
        self.store = Store(tmp / "legion.duckdb")
        self.tokens = TokenStore(tmp / "tokens.json")
        self.token = {r: self.tokens.add(r, r) for r in ("admin", "operator", "viewer")}
        self.audit = AuditLog(tmp / "audit.log")
        self.now = int(time.time() * 1000)
        self.store.write([fleet_batch("web-1", 1, self.now - 1000),
                          fleet_batch("web-1", 2, self.now)])

    @contextlib.asynccontextmanager
    async def serve(self, **kwargs: Any) -> AsyncIterator[Any]:
        app = create_app(self.config, self.store, lambda: STATUS, self.tokens, audit=self.audit,
                         **kwargs)
        server = await start_gateway(app, self.config, port=0)
        try:
            yield server
        finally:
            await stop_gateway(server)
            await stop_gateway(server)  # idempotent

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token[role]}"}


@pytest.fixture
def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.store.close()


READ_ROUTES = ["/api/v1/nodes", "/api/v1/series", "/api/v1/query?metric=system_cpu_usage_percent",
               "/api/v1/status", "/api/v1/fleet", "/api/v1/whoami", "/metrics"]


def test_every_route_needs_a_valid_token(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            for path in [*READ_ROUTES, "/api/v1/users"]:
                for headers in ({}, {"Authorization": "Bearer lgn_wrong"},
                                {"Authorization": "Basic YWRtaW46YWRtaW4="}):
                    async with s.get(srv.url + path, headers=headers) as r:
                        assert r.status == 401, (path, headers)
                        assert "error" in await r.json()
                        assert r.headers["WWW-Authenticate"] == "Bearer"
            # a token in the query string is not accepted on HTTP routes (it would get logged)
            async with s.get(srv.url + "/api/v1/nodes?token=" + env.token["admin"]) as r:
                assert r.status == 401
            async with s.post(srv.url + "/api/v1/users", json={"name": "x"}) as r:
                assert r.status == 401
    run(scenario())
    denied = [e for e in env.audit.read() if e["action"] == "POST /api/v1/users"]
    assert denied and denied[0]["outcome"] == "unauthenticated" and denied[0]["user"] is None


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_each_role_allowed_and_refused(env: Env, role: str) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession(headers=env.auth(role)) as s:
            for path in READ_ROUTES:
                async with s.get(srv.url + path) as r:
                    assert r.status == 200, (role, path, await r.text())
            expected = 200 if role == "admin" else 403
            async with s.get(srv.url + "/api/v1/users") as r:
                assert r.status == expected
            async with s.post(srv.url + "/api/v1/users",
                              json={"name": f"new-{role}", "role": "viewer"}) as r:
                assert r.status == (201 if role == "admin" else 403), await r.text()
            async with s.delete(srv.url + "/api/v1/users/viewer") as r:
                assert r.status == expected
            async with s.get(srv.url + "/api/v1/whoami") as r:
                assert (await r.json())["role"] == role
            # alert write actions: operators and admins pass the role check (no engine: 501)
            async with s.post(srv.url + "/api/v1/alerts/breach:x/ack", json={}) as r:
                assert r.status == (403 if role == "viewer" else 501)
            async with s.post(srv.url + "/api/v1/silences", json={
                    "matchers": {"node": "web-1"}, "duration_s": 3600}) as r:
                assert r.status == (403 if role == "viewer" else 501)
    run(scenario())
    entries = env.audit.read()
    writes = [e for e in entries if e["action"].startswith(("POST", "DELETE"))]
    assert len(writes) == 4 and all(e["user"] == role for e in writes)
    users = {e["outcome"] for e in writes if "/users" in e["action"]}
    assert users == ({"ok"} if role == "admin" else {"denied"})
    alerts = {e["outcome"] for e in writes if "/users" not in e["action"]}
    assert alerts == ({"denied"} if role == "viewer" else {"failed"})
    assert all({"ts", "ts_ms", "user", "role", "action", "outcome"} <= set(e) for e in writes)
    assert not [e for e in entries if e["action"].startswith("GET /api/v1/nodes")]


def test_users_lifecycle_and_audit(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            url = srv.url + "/api/v1/users"
            async with s.post(url, json={"name": "bob", "role": "operator"},
                              headers=env.auth("admin")) as r:
                assert r.status == 201
                bob = (await r.json())["token"]
            async with s.post(url, json={"name": "bob", "role": "viewer"},
                              headers=env.auth("admin")) as r:
                assert r.status == 409
            for bad in ({"name": "x", "role": "root"}, {"name": "bad name!"}, {"nom": "x"}):
                async with s.post(url, json=bad, headers=env.auth("admin")) as r:
                    assert r.status == 400, bad
            async with s.post(url, data=b"not json", headers=env.auth("admin")) as r:
                assert r.status == 400
            async with s.get(url, headers=env.auth("admin")) as r:
                users = await r.json()
                assert {u["name"]: u["role"] for u in users}["bob"] == "operator"
                assert "token" not in json.dumps(users) and "sha256" not in json.dumps(users)
            async with s.get(srv.url + "/api/v1/whoami",
                             headers={"Authorization": f"Bearer {bob}"}) as r:
                assert (await r.json()) == {"user": "bob", "role": "operator",
                                            "permissions": ["read", "write"]}
            async with s.delete(url + "/bob", headers=env.auth("admin")) as r:
                assert r.status == 200
            async with s.delete(url + "/bob", headers=env.auth("admin")) as r:
                assert r.status == 404
            async with s.get(srv.url + "/api/v1/nodes",
                             headers={"Authorization": f"Bearer {bob}"}) as r:
                assert r.status == 401
            async with s.delete(url + "/admin", headers=env.auth("admin")) as r:
                assert r.status == 409  # the last admin stays
    run(scenario())
    raw = (env.dir / "tokens.json").read_text()
    assert "lgn_" not in raw and oct((env.dir / "tokens.json").stat().st_mode)[-3:] == "600"
    entries = env.audit.read()
    assert any(e["details"] == {"user": "bob", "role": "operator"} and e["outcome"] == "ok"
               for e in entries if e.get("details"))
    assert [e["status"] for e in entries if e["action"] == "DELETE /api/v1/users/bob"] == \
        [200, 404]


def test_read_endpoints_with_real_store(env: Env) -> None:
    async def scenario() -> dict[str, Any]:
        async with env.serve() as srv, aiohttp.ClientSession(headers=env.auth("viewer")) as s:
            async with s.get(srv.url + "/api/v1/nodes") as r:
                nodes = await r.json()
                assert nodes[0]["node"] == "web-1" and nodes[0]["last_seen"].endswith("Z")
            async with s.get(srv.url + "/api/v1/series?node=web-1&metric=system_*") as r:
                metrics = {x["metric"] for x in await r.json()}
                assert "system_cpu_usage_percent" in metrics
                assert not any(m.startswith("agent_") for m in metrics)
            q = "/api/v1/query?metric=system_disk_usage_percent&node=web-1&since=5m&label=mount=/"
            async with s.get(srv.url + q) as r:
                rows = await r.json()
                assert [x["value"] for x in rows] == [70.0, 70.0]
                assert rows[0]["ts"].endswith("Z") and rows[0]["labels"] == {"mount": "/"}
            async with s.get(srv.url + "/api/v1/query?metric=system_cpu_usage_percent"
                                       "&since=1h&step=1m&agg=max") as r:
                assert r.status == 200 and await r.json()
            async with s.get(srv.url + "/api/v1/status") as r:
                body = await r.json()
                assert body["rejected"] == STATUS["rejected"] and "ws_clients" in body["gateway"]
            async with s.get(srv.url + "/api/v1/fleet") as r:
                return await r.json()
    fleet = run(scenario())
    host = fleet["hosts"][0]
    assert host["node"] == "web-1" and set(host["agents"]) == {"planner-1", "coder-1"}
    assert host["metrics"]["cpu_usage_percent"] == 42.0  # the total wins over per-core
    assert host["metrics"]["disk_usage_percent"] == 91.5  # worst mount
    assert host["health"] == "critical"  # 91.5 >= disk threshold 90
    agents = {a["agent_id"]: a for a in fleet["agents"]}
    assert agents["coder-1"]["department"] == "engineering"
    assert agents["coder-1"]["metrics"]["response_time_ms_p95"] == 900.0
    assert agents["coder-1"]["health"] == "ok"
    assert {d["name"] for d in fleet["departments"]} == {"engineering", "strategy"}
    assert {x["source"] for x in fleet["links"]} == {"planner-1", "coder-1"}


def test_alert_actions_reach_the_engine(env: Env) -> None:
    calls: list[tuple[Any, ...]] = []

    class Engine:  # records what the gateway hands the alerting engine
        def ack(self, alert_id: str, user: str) -> dict[str, Any]:
            if alert_id == "unknown":
                raise KeyError(alert_id)
            calls.append(("ack", alert_id, user))
            return {"id": alert_id, "acknowledged": True}

        def silence(self, matchers: dict[str, str], duration_s: float, comment: str,
                    user: str) -> dict[str, Any]:
            calls.append(("silence", matchers, duration_s, comment, user))
            return {"id": "s1"}

    async def scenario() -> None:
        async with env.serve(alert_actions=Engine()) as srv, \
                aiohttp.ClientSession(headers=env.auth("operator")) as s:
            async with s.post(srv.url + "/api/v1/alerts/a%2F1/ack") as r:
                assert r.status == 200 and (await r.json())["acknowledged"]
            async with s.post(srv.url + "/api/v1/alerts/unknown/ack") as r:
                assert r.status == 404
            for bad in ({"matchers": {}, "duration_s": 60}, {"matchers": {"n": "x"}},
                        {"matchers": {"n": "x"}, "duration_s": 1},
                        {"matchers": {"bad key": "x"}, "duration_s": 60},
                        {"matchers": {"n": "x"}, "duration_s": 60, "extra": 1}):
                async with s.post(srv.url + "/api/v1/silences", json=bad) as r:
                    assert r.status == 400, bad
            async with s.post(srv.url + "/api/v1/silences", json={
                    "matchers": {"node": "web-1"}, "duration_s": 600, "comment": "deploy"}) as r:
                assert r.status == 201
            async with s.get(srv.url + "/api/v1/alerts") as r:
                assert r.status == 200 and isinstance(await r.json(), list)
    run(scenario())
    assert calls == [("ack", "a/1", "operator"),
                     ("silence", {"node": "web-1"}, 600.0, "deploy", "operator")]
    ok = [e for e in env.audit.read() if e["outcome"] == "ok"]
    assert [e["details"] for e in ok] == [{"alert_id": "a/1"},
                                          {"matchers": {"node": "web-1"}, "duration_s": 600}]


@pytest.mark.parametrize("query, message", [
    ("", "missing required parameter 'metric'"),
    ("metric=x&since=yesterday", "invalid since"),
    ("metric=x&step=fast", "invalid step"),
    ("metric=x&step=10ms", "at least 1s"),
    ("metric=x&agg=median&step=1m", "invalid agg"),
    ("metric=x&agg=max", "'agg' needs 'step'"),
    ("metric=x&since=1h&until=2h", "'until' must be after 'since'"),
    ("metric=x&label=novalue", "invalid label"),
    ("metric=x&colour=red", "unknown parameter 'colour'"),
    ("metric=x;drop table", "invalid metric"),
    ("metric=x&node=a%20b", "invalid node"),
    ("metric=x&node=web-1:9100", "invalid node"),  # the wire's node grammar has no ':'
    ("metric=x&node=web-1%0A", "invalid node"),
    ("metric=x&node=" + "n" * 129, "invalid node"),
    ("metric=cpu%0A", "invalid metric"),
    ("metric=x&label=cl%C3%A9=v", "invalid label"),  # label keys are ASCII on the wire
    ("metric=x&since=1w&step=1s", "too many buckets"),
])
def test_query_parameters_validated(env: Env, query: str, message: str) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        async with env.serve() as srv, aiohttp.ClientSession(headers=env.auth("viewer")) as s:
            async with s.get(srv.url + "/api/v1/query?" + query) as r:
                return r.status, await r.json()
    status, body = run(scenario())
    assert status == 400 and message in body["error"], body


def test_prometheus_metrics(env: Env) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async def scenario() -> tuple[str, str]:
        async with env.serve() as srv, aiohttp.ClientSession(headers=env.auth("viewer")) as s:
            async with s.get(srv.url + "/metrics") as r:
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                plain = await r.text()
            async with s.get(srv.url + "/metrics?latest=system_*&node=web-1") as r:
                latest = await r.text()
            async with s.get(srv.url + "/metrics?latest=bad;glob") as r:
                assert r.status == 400
            return plain, latest
    plain, latest = run(scenario())
    fams = {f.name: f for f in text_string_to_metric_families(plain)}
    assert "legion_gateway_ws_clients" in fams
    assert {s.labels["key"]: s.value for s in fams["legion_aggregator_rejected"].samples} == \
        {"bad_msgpack": 2, "node_mismatch": 1}
    fams = {f.name: f for f in text_string_to_metric_families(latest)}
    disk = {s.labels["mount"]: s.value for s in fams["system_disk_usage_percent"].samples}
    assert disk == {"/": 70.0, "/data": 91.5}
    assert all(s.labels["node"] == "web-1" for s in fams["system_cpu_usage_percent"].samples)


def test_telemetry_callable_feeds_metrics(env: Env) -> None:
    def telemetry() -> list[Any]:
        return [("legion_aggregator_frames_rejected_total", {"reason": "bad_msgpack"}, 3),
                ("legion_aggregator_commit_seconds", (), 0.01)]

    async def scenario() -> str:
        async with env.serve(telemetry=telemetry) as srv, \
                aiohttp.ClientSession(headers=env.auth("viewer")) as s:
            async with s.get(srv.url + "/metrics") as r:
                return await r.text()
    text = run(scenario())
    assert 'legion_aggregator_frames_rejected_total{reason="bad_msgpack"} 3' in text
    assert "# TYPE legion_aggregator_frames_rejected_total counter" in text


def test_ingest_telemetry_object_feeds_metrics(env: Env) -> None:
    from legion.aggregator.telemetry import IngestTelemetry
    from prometheus_client.parser import text_string_to_metric_families

    telemetry = IngestTelemetry()
    telemetry.reject("bad_msgpack")
    telemetry.add(batches_accepted=5)

    async def scenario() -> str:
        async with env.serve(telemetry=telemetry) as srv, \
                aiohttp.ClientSession(headers=env.auth("viewer")) as s:
            async with s.get(srv.url + "/metrics") as r:
                return await r.text()
    fams = list(text_string_to_metric_families(run(scenario())))
    assert any(f.name.startswith("legion_aggregator_") for f in fams)
    assert any(f.name == "legion_gateway_ws_clients" for f in fams)


def test_dashboard_static_files_are_public(env: Env, tmp_path: Path) -> None:
    dash = tmp_path / "dash"
    (dash / "js").mkdir(parents=True)
    inline = '{"imports": {"three": "./vendor/three.module.js"}}'
    (dash / "index.html").write_text(f'<html><script type="importmap">{inline}</script>'
                                     '<script type="module" src="./js/main.js"></script></html>')
    (dash / "js" / "main.js").write_text("console.log('hi')")
    (tmp_path / "secret.txt").write_text("nope")

    async def scenario() -> str:
        async with env.serve(dashboard_dir=dash) as srv, aiohttp.ClientSession() as s:
            async with s.get(srv.url + "/") as r:
                assert r.status == 200 and "importmap" in await r.text()
                csp = r.headers["Content-Security-Policy"]
                assert "'sha256-" in csp and "frame-ancestors 'none'" in csp
                assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with s.get(srv.url + "/js/main.js") as r:
                assert r.status == 200 and "console.log" in await r.text()
            async with s.get(srv.url + "/%2e%2e/secret.txt") as r:
                assert r.status in (403, 404)
            async with s.get(srv.url + "/nothing-here.js") as r:
                assert r.status == 404
            async with s.get(srv.url + "/api/v1/nothing") as r:
                assert r.status in (401, 404)
            return csp
    csp = run(scenario())
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp  # the inline import map is allowed by its hash


def test_cors_only_for_allowed_origins(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            pre = {"Access-Control-Request-Method": "GET",
                   "Access-Control-Request-Headers": "authorization"}
            async with s.options(srv.url + "/api/v1/fleet",
                                 headers={**pre, "Origin": "tauri://localhost"}) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == "tauri://localhost"
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            async with s.options(srv.url + "/api/v1/fleet",
                                 headers={**pre, "Origin": "https://evil.example"}) as r:
                assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
            async with s.get(srv.url + "/api/v1/fleet", headers={
                    **env.auth("viewer"), "Origin": "tauri://localhost"}) as r:
                assert r.headers["Access-Control-Allow-Origin"] == "tauri://localhost"
            async with s.get(srv.url + "/api/v1/fleet", headers={
                    **env.auth("viewer"), "Origin": "https://evil.example"}) as r:
                assert "Access-Control-Allow-Origin" not in r.headers
    run(scenario())


def test_tls_with_generated_certificate(tmp_path: Path) -> None:
    cert, key = generate_self_signed(tmp_path / "certs" / "server.crt",
                                     tmp_path / "certs" / "server.key")
    assert oct(key.stat().st_mode)[-3:] == "600"
    env = Env(tmp_path, security={"enable_tls": True, "certificate_path": "certs/server.crt",
                                  "private_key_path": "certs/server.key"})

    async def scenario() -> None:
        async with env.serve() as srv:
            assert srv.url.startswith("https://127.0.0.1:")
            trust = client_ssl_context(cert)
            async with aiohttp.ClientSession(headers=env.auth("viewer")) as s:
                async with s.get(srv.url + "/api/v1/nodes", ssl=trust) as r:
                    assert r.status == 200
                    assert r.headers["Strict-Transport-Security"]
                async with s.ws_connect(srv.url.replace("https", "wss") + "/ws",
                                        ssl=trust) as ws:
                    assert (await ws.receive_json(timeout=5))["type"] == "hello"
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    async with s.get(srv.url + "/api/v1/nodes",
                                     ssl=ssl.create_default_context()):
                        pass
                with pytest.raises(aiohttp.ClientError):
                    async with s.get(srv.url.replace("https", "http") + "/api/v1/nodes"):
                        pass
    try:
        run(scenario())
    finally:
        env.store.close()


def test_tls_missing_certificate_is_a_clear_config_error(tmp_path: Path) -> None:
    from legion.kernel.errors import ConfigError
    env = Env(tmp_path, security={"enable_tls": True})
    try:
        with pytest.raises(ConfigError, match="security.certificate_path.*certs init"):
            run(env.serve().__aenter__())
    finally:
        env.store.close()


def test_fleet_served_from_the_running_hub_without_a_forced_rebuild(tmp_path: Path) -> None:
    """With the hub's loop running, GET /api/v1/fleet answers its snapshot as it is (a forced
    rebuild took seconds at 100 hosts, issue 16); with the loop stopped, a stale one is re-read."""
    from legion.aggregator.gateway.keys import HUB_KEY

    env = Env(tmp_path, dashboard_config={"update_interval_ms": 600_000})  # one tick, then idle

    async def scenario() -> tuple[int, int, int]:
        app = create_app(env.config, env.store, lambda: STATUS, env.tokens, audit=env.audit)
        server = await start_gateway(app, env.config, port=0)
        hub = app[HUB_KEY]
        try:
            async with aiohttp.ClientSession(headers=env.auth("viewer")) as s:
                for _ in range(200):  # the loop's first tick builds the snapshot
                    if hub.fleet is not None:
                        break
                    await asyncio.sleep(0.05)
                assert hub.running and hub.fleet is not None
                aged = hub.fleet["ts_ms"] - 3_600_000
                hub.fleet["ts_ms"] = aged  # an hour old: the old rule rebuilt it here
                async with s.get(server.url + "/api/v1/fleet") as r:
                    served_running = (await r.json())["ts_ms"]
                await hub.stop()
                assert not hub.running
                hub.fleet["ts_ms"] = aged
                async with s.get(server.url + "/api/v1/fleet") as r:
                    served_stopped = (await r.json())["ts_ms"]
        finally:
            await stop_gateway(server)
            env.store.close()
        return aged, served_running, served_stopped

    aged, served_running, served_stopped = run(scenario())
    assert served_running == aged  # no rebuild while the loop keeps the snapshot current
    assert served_stopped > aged  # nothing keeps it current: read afresh
