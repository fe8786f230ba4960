"""The `alerting` config contract (every problem with its key path, round trip through
`legionctl init`'s writer), rules files reloaded without restart, and the HTTP routes: rules,
silences, history, incidents, self-metrics on /metrics."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
from legion.cli.config import config_from_dict, config_to_dict
from legion.kernel.errors import ConfigError
from tests.aggregator.alerts.helpers import Clock, Feed, make_engine


def test_section_round_trips_and_defaults():
    cfg = config_from_dict({})
    a = cfg.alerting
    assert a.route.receiver == "log" and a.route.group_wait_secs == 30
    assert a.route.group_interval_secs == 300 and a.route.repeat_interval_secs == 14400
    assert config_from_dict(config_to_dict(cfg)).alerting == a
    full = {"rules": [{"rule_id": "r", "metric_pattern": "x_*", "threshold_type": "static",
                       "threshold_value": 1, "comparison": "below", "for_secs": 5,
                       "clear_value": 2, "keep_firing_for_secs": 10, "matchers": ["a=b"],
                       "annotations": {"summary": "s"}}],
            "rules_files": ["more.json"],
            "receivers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:1/x"},
                          {"name": "pager", "type": "slack", "url": "http://127.0.0.1:1/s"}],
            "route": {"receiver": "hook", "group_by": ["node"], "group_wait_secs": 1,
                      "group_interval_secs": 2, "repeat_interval_secs": 3,
                      "routes": [{"matchers": ["severity=critical"], "receiver": "pager"}]},
            "inhibit_rules": [{"source_matchers": ["a=b"], "target_matchers": ["c=d"],
                               "equal": ["node"]}],
            "escalation": {"severities": ["critical"],
                           "levels": [{"after_secs": 60, "receiver": "pager"}]}}
    a = config_from_dict({"alerting": full}).alerting
    assert a.route.routes[0].receiver == "pager" and a.route.routes[0].group_wait_secs == 1
    assert a.rules[0].clear_value == 2 and a.escalation.levels[0].receiver == "pager"
    assert config_from_dict({"alerting": config_to_dict(config_from_dict(
        {"alerting": full}))["alerting"]}).alerting == a


def test_every_problem_with_its_key_path():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"alerting": {
            "nope": 1,
            "rules": [{"rule_id": "r", "threshold_type": "static"},
                      {"rule_id": "s", "threshold_type": "static", "threshold_value": 90,
                       "clear_value": 95}],
            "receivers": [{"name": "w", "type": "webhook"}, {"name": "x", "type": "pigeon"}],
            "route": {"receiver": "missing", "group_wait_secs": -1,
                      "routes": [{"matchers": ["a=~("], "receiver": "w"}]},
            "inhibit_rules": [{"target_matchers": []}],
            "escalation": {"levels": [{"after_secs": 5, "receiver": "ghost"}]}}})
    got = "\n".join(e.value.problems)
    for path in ("alerting.nope: unknown key",
                 "alerting.rules[0].threshold_value: required",
                 "alerting.rules[1].clear_value: must be on the quiet side",
                 "alerting.receivers[0].url: missing required key",
                 "alerting.receivers[1].type: must be one of",
                 "alerting.route.receiver: must name a receiver",
                 "alerting.route.group_wait_secs: must be a number >= 0",
                 "alerting.route.routes[0].matchers[0]:",
                 "alerting.inhibit_rules[0].source_matchers: missing required key",
                 "alerting.escalation.levels[0].receiver: must name a receiver"):
        assert path in got, (path, got)


def test_rules_files_reload_without_restart(tmp_path):
    f = tmp_path / "more.json"
    f.write_text(json.dumps([{"rule_id": "a", "threshold_type": "node_down"}]))
    clock = Clock()
    eng, store = make_engine(tmp_path, {"default_rules": False, "rules_files": [str(f)]}, clock)
    try:
        assert [r.rule_id for r in eng.rules()] == ["a"]
        f.write_text(json.dumps({"rules": [{"rule_id": "b", "threshold_type": "node_down"}]}))
        os.utime(f, (1, 2))  # a new mtime even within the filesystem's resolution
        assert [r.rule_id for r in eng.rules()] == ["b"]
        f.write_text("[{\"rule_id\": \"c\", \"threshold_type\": \"bad\"}]")
        os.utime(f, (3, 4))
        assert [r.rule_id for r in eng.rules()] == ["b"]  # the last good rules stay
        assert "threshold_type" in eng.status()["rule_errors"][str(f)][0]
    finally:
        store.close()


def test_routes_history_incidents_metrics(tmp_path):
    clock = Clock()
    eng, store = make_engine(tmp_path, {
        "default_rules": False, "ai_severity": False,
        "rules": [{"rule_id": "cpu", "metric_pattern": "system_cpu_usage_percent",
                   "threshold_type": "static", "threshold_value": 80.0}],
        "route": {"receiver": "log", "group_wait_secs": 0}}, clock)
    Feed(store).put("web-1", clock.advance(1), ("system_cpu_usage_percent", {}, 99))
    eng.dispatcher.start()
    eng.evaluate_once()
    cfg = config_from_dict({"security": {"enable_tls": False}},
                           base_dir=tmp_path).aggregator_settings()
    tokens = TokenStore(tmp_path / "tokens.json")
    admin, viewer = tokens.add("ann", "admin"), tokens.add("vic", "viewer")

    async def scenario():
        app = create_app(cfg, store, dict, tokens, alert_actions=eng, telemetry=eng,
                         sources={"alerts": eng.dashboard_alerts})
        srv = await start_gateway(app, cfg, port=0)
        h = {"Authorization": f"Bearer {admin}"}
        try:
            async with aiohttp.ClientSession(headers=h) as s:
                async with s.get(srv.url + "/api/v1/rules") as r:
                    assert [x["rule_id"] for x in await r.json()] == ["cpu"]
                async with s.get(srv.url + "/api/v1/alerts?state=firing") as r:
                    [a] = await r.json()
                async with s.get(srv.url + "/api/v1/alerts?state=bogus") as r:
                    assert r.status == 400
                async with s.get(srv.url + f"/api/v1/alerts/history?alert_id={a['id']}") as r:
                    assert [e["to"] for e in await r.json()] == ["firing", "pending"]
                async with s.get(srv.url + "/api/v1/incidents") as r:
                    [inc] = await r.json()
                    assert inc["alerts"] == [a["id"]] and inc["closed_ms"] is None
                async with s.post(srv.url + "/api/v1/silences", json={
                        "matchers": ["node=~web.*"], "duration_s": 600}) as r:
                    assert r.status == 201
                    sid = (await r.json())["id"]
                async with s.get(srv.url + "/api/v1/silences") as r:
                    assert [x["id"] for x in await r.json()] == [sid]
                async with s.delete(srv.url + f"/api/v1/silences/{sid}") as r:
                    assert r.status == 200
                async with s.delete(srv.url + f"/api/v1/silences/{sid}") as r:
                    assert r.status == 404
                async with s.get(srv.url + "/metrics") as r:
                    text = await r.text()
                assert "legion_alerts_rules_evaluated_total 1" in text
                assert 'legion_alerts_alerts{state="firing"} 1' in text
                assert "legion_alerts_evaluation_seconds_total" in text
                assert 'legion_alerts_notifications_sent_total{receiver="log"}' in text
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer}"}) as s:
                async with s.delete(srv.url + "/api/v1/silences/x") as r:
                    assert r.status == 403
                async with s.post(srv.url + f"/api/v1/alerts/{a['id']}/ack", json={}) as r:
                    assert r.status == 403
        finally:
            await stop_gateway(srv)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        eng.stop()
        store.close()
