"""Gateway pieces without a server: tokens, time parsing, fleet folding, merging, exposition."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from legion.aggregator.gateway import PERMISSIONS, TokenStore, check_permission
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.fleet import FleetBuilder, metric_key
from legion.aggregator.gateway.history import Ring
from legion.aggregator.gateway.hub import merge_update
from legion.aggregator.gateway.prom import flatten_status, render, telemetry_samples
from legion.aggregator.gateway.timefmt import iso_ms, parse_duration_ms, parse_time_ms

from legion.cli.config import Config
from legion.kernel.errors import AuthError, ConfigError


def test_permissions_are_the_seeds() -> None:
    assert PERMISSIONS == {"admin": ("read", "write", "configure", "delete"),
                           "operator": ("read", "write"), "viewer": ("read",)}
    assert check_permission("operator", "write") and not check_permission("viewer", "write")
    assert not check_permission("nobody", "read")


def test_token_store_hashes_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokens.json"
    store = TokenStore(path)
    tok = store.add("alice", "operator")
    assert tok.startswith("lgn_") and len(tok) > 40
    assert tok not in path.read_text()
    assert oct(path.stat().st_mode)[-3:] == "600"
    p = store.verify(tok)
    assert p is not None and (p.name, p.role) == ("alice", "operator") and p.can("write")
    for bad in (None, "", tok[:-1], tok + "x", "lgn_" + "A" * 43, "x" * 10_000):
        assert store.verify(bad) is None
    with pytest.raises(AuthError):
        store.add("alice", "viewer")
    with pytest.raises(ValueError):
        store.add("bob", "root")
    with pytest.raises(ValueError):
        store.add("../etc", "viewer")
    # another process (legionctl init) writing the file is seen without a restart
    other = TokenStore(path)
    admin = other.add("root", "admin")
    assert store.verify(admin) is not None
    assert [u["name"] for u in store.list()] == ["alice", "root"]
    assert store.revoke("alice") and not store.revoke("alice")
    assert store.verify(tok) is None
    with pytest.raises(AuthError, match="last admin"):
        store.revoke("root")


def test_token_store_rejects_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="aggregator.tokens_path"):
        TokenStore(path)
    path.write_text(json.dumps({"version": 1, "users": [
        {"name": "x", "role": "god", "token_sha256": "00", "created_ms": 0}]}))
    with pytest.raises(ConfigError, match="unknown role"):
        TokenStore(path)


def test_token_store_is_thread_safe(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    tokens: dict[str, str] = {}

    def add(i: int) -> None:
        tokens[f"u{i}"] = store.add(f"u{i}", "viewer")
    threads = [threading.Thread(target=add, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = TokenStore(tmp_path / "tokens.json")
    assert len(fresh) == 20 and all(fresh.verify(t) for t in tokens.values())


def test_audit_log_appends_json_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.record(user="a", role="admin", action="POST /api/v1/users", target="/api/v1/users",
               outcome="ok", status=201, details={"user": "b"})
    log.record(user=None, role=None, action="DELETE /x", target="/x", outcome="denied",
               status=401)
    rows = log.read()
    assert [r["outcome"] for r in rows] == ["ok", "denied"]
    assert rows[0]["ts"].endswith("Z") and rows[0]["details"] == {"user": "b"}
    assert oct((tmp_path / "audit.log").stat().st_mode)[-3:] == "600"


def test_time_parsing() -> None:
    now = 1_800_000_000_000
    assert parse_time_ms("5m", now) == now - 300_000
    assert parse_time_ms("now", now) == now
    assert parse_time_ms(str(now - 1)) == now - 1
    assert parse_time_ms("2027-01-15T08:00:00Z") == 1_800_000_000_000
    assert parse_time_ms("2027-01-15T09:00:00 01:00") == 1_800_000_000_000  # '+' URL-decoded
    assert parse_duration_ms("90s") == 90_000 and parse_duration_ms("250") == 250
    assert iso_ms(1_800_000_000_123) == "2027-01-15T08:00:00.123Z"
    for bad in ("yesterday", "5 minutes", "12", "-5m"):
        with pytest.raises(ValueError):
            parse_time_ms(bad, now)


def test_metric_keys() -> None:
    assert metric_key("agent_response_time_ms", "agent_", {"quantile": "p95"}) == \
        ("response_time_ms_p95", None)
    assert metric_key("agent_tasks_total", "agent_", {"status": "error"}) == \
        ("tasks_error_total", "tasks_total")
    assert metric_key("system_load1", "system_", {}) == ("load1", None)


def _row(node: str, metric: str, value: float, ts: int, **labels: str) -> dict:
    return {"node": node, "metric": metric, "value": value, "ts_ms": ts, "labels": labels}


def test_fleet_folding_health_rates_and_links() -> None:
    b = FleetBuilder(Config())
    a = {"agent_id": "a1", "department": "ops"}
    sys_rows = [_row("h1", "system_cpu_usage_percent", 10.0, 1000, cpu="0"),
                _row("h1", "system_cpu_usage_percent", 30.0, 1000, cpu="1"),
                _row("h1", "system_memory_usage_percent", 86.0, 1000)]
    agent_rows = [_row("h1", "agent_tasks_total", 8.0, 1000, status="ok", task_type="x", **a),
                  _row("h1", "agent_tasks_total", 2.0, 1000, status="error", task_type="x", **a),
                  _row("h1", "agent_success_rate_percent", 90.0, 1000, task_type="x", **a),
                  _row("h1", "agent_success_rate_percent", 70.0, 1000, task_type="y", **a),
                  _row("h1", "agent_messages_sent_total", 5.0, 1000, to="a2", **a)]
    f = b.build(sys_rows, agent_rows, now_ms=1500)
    host = f["hosts"][0]
    assert host["metrics"] == {"cpu_usage_percent": 30.0, "memory_usage_percent": 86.0}
    assert host["health"] == "critical" and host["agents"] == ["a1"]
    agent = f["agents"][0]
    assert agent["metrics"]["tasks_total"] == 10.0
    assert agent["metrics"]["tasks_error_total"] == 2.0
    assert agent["metrics"]["success_rate_percent"] == 70.0  # worst task type
    assert agent["health"] == "critical" and "tasks_per_s" not in agent["metrics"]
    agent_rows[0] = _row("h1", "agent_tasks_total", 18.0, 3000, status="ok", task_type="x", **a)
    agent_rows[4] = _row("h1", "agent_messages_sent_total", 9.0, 3000, to="a2", **a)
    f = b.build(sys_rows, agent_rows, now_ms=3500)
    assert f["agents"][0]["metrics"]["tasks_per_s"] == 5.0  # +10 over 2 s
    assert f["links"] == [{"source": "a1", "target": "a2", "rate_per_s": 2.0, "sent_per_s": 2.0,
                           "received_per_s": None}]
    f = b.build(sys_rows, agent_rows, now_ms=60_000)
    assert f["hosts"][0]["health"] == "stale" and f["summary"]["stale"] == 2


def test_merge_update_replaces_by_key_without_mutation() -> None:
    base = {"agents": [{"agent_id": "a", "v": 1}, {"agent_id": "b", "v": 1}], "links": []}
    frozen = json.dumps(base)
    out = merge_update(base, {"agents": [{"agent_id": "a", "v": 2}]}, 10)
    assert out["agents"] == [{"agent_id": "a", "v": 2}, {"agent_id": "b", "v": 1}]
    assert json.dumps(base) == frozen
    alerts = merge_update({"alerts": [{"id": "x"}, {"id": "y"}]}, {"resolved": ["x"]}, 10)
    assert alerts == {"alerts": [{"id": "y"}], "resolved": ["x"]}
    again = merge_update(alerts, {"alerts": [{"id": "x"}]}, 10)
    assert {a["id"] for a in again["alerts"]} == {"x", "y"} and "resolved" not in again
    events = merge_update({"anomalies": []}, {"anomalies": [{"id": i} for i in range(9)]}, 3)
    assert [e["id"] for e in events["anomalies"]] == [6, 7, 8]


def test_prometheus_rendering_parses() -> None:
    from legion.proto import Sample, canonical_labels
    from prometheus_client.parser import text_string_to_metric_families

    samples = flatten_status({"uptime_seconds": 3.5, "ingest": {
        "rejected": {"bad_msgpack": 2}, "queue_depth": 0, "ok": True, "name": "x"}})
    samples += telemetry_samples([("legion_x_total", {"reason": 'a"b\\c\nd'}, 1),
                                  Sample("legion_y_seconds", canonical_labels({"k": "v"}), 0.5, 1)])
    text = render(samples)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["legion_aggregator_ingest_rejected"].samples[0].labels == {"key": "bad_msgpack"}
    assert fams["legion_x"].type == "counter"
    assert fams["legion_x"].samples[0].labels["reason"] == 'a"b\\c\nd'
    assert fams["legion_y_seconds"].samples[0].value == 0.5


def test_history_ring_is_compact_and_bounded() -> None:
    ring = Ring()
    for i in range(1000):
        ring.append(i, float(i), keep=100)
    assert 100 <= len(ring) <= 200  # trimmed in amortized steps, never more than 2x keep
    assert ring.points(3) == [[997, 997.0], [998, 998.0], [999, 999.0]]
    assert ring.last_ts() == 999 and Ring().points(5) == []
