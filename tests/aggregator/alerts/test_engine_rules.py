"""Every rule type against stored data (a real DuckDB store), on an injected clock: static with
for / hysteresis / keep_firing_for, ml_based (stored anomaly score and learned band),
predictive, node down, agent silent; the lifecycle stored in the journal."""

from __future__ import annotations

import numpy as np

from legion.aggregator.alerts import AlertRule
from tests.aggregator.alerts.helpers import Clock, Feed, make_engine

LOG = [{"name": "log", "type": "log"}]


def rule(**kw):
    return {"metric_pattern": "system_cpu_usage_percent", "threshold_type": "static",
            "threshold_value": 80.0, **kw}


def states(engine):
    return {a["rule_id"]: a["state"] for a in engine.alerts()}


def test_seed_rules_work_as_written():
    a = AlertRule(rule_id='high_cpu_warning', metric_pattern='*_cpu_usage_percent',
                  threshold_type='ml_based', ai_confidence_threshold=0.8, severity='medium')
    b = AlertRule(rule_id='agent_failure_critical', metric_pattern='*_success_rate_percent',
                  threshold_type='static', threshold_value=80.0, severity='high')
    assert a.direction == "above" and b.direction == "below"
    assert b.breached(79.0, False) and not b.breached(80.0, False)


def test_static_for_hysteresis_keep_firing(tmp_path):
    clock = Clock()
    eng, store = make_engine(tmp_path, {"default_rules": False, "receivers": LOG, "rules": [
        rule(rule_id="cpu", for_secs=3, clear_value=70.0, keep_firing_for_secs=5)]}, clock)
    feed = Feed(store)
    try:
        def tick(v, secs=1):
            feed.put("web-1", clock.advance(secs), ("system_cpu_usage_percent", {}, v))
            eng.evaluate_once()
            return states(eng).get("cpu")

        assert tick(50) is None
        assert tick(90) == "pending"          # for_secs=3 not yet met
        assert tick(90) == "pending"
        assert tick(90) == "pending"
        assert tick(90) == "firing"           # 3 s after it became active
        assert tick(75) == "firing"           # above the clear value 70: hysteresis holds
        assert tick(60) == "firing"           # below clear, but keep_firing_for 5 s
        for _ in range(3):
            assert tick(60) == "firing"
        assert tick(60) == "resolved"
        hist = [(e["from"], e["to"]) for e in reversed(eng.history())]
        assert hist == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]
        a = eng.alerts()[0]
        assert a["labels"]["metric"] == "system_cpu_usage_percent"  # the stored name
        assert a["node"] == "web-1"
    finally:
        store.close()


def test_pending_that_clears_never_fires(tmp_path):
    clock = Clock()
    eng, store = make_engine(tmp_path, {"default_rules": False, "receivers": LOG,
                                        "rules": [rule(rule_id="cpu", for_secs=10)]}, clock)
    feed = Feed(store)
    try:
        feed.put("web-1", clock.advance(1), ("system_cpu_usage_percent", {}, 95))
        eng.evaluate_once()
        assert states(eng) == {"cpu": "pending"}
        feed.put("web-1", clock.advance(1), ("system_cpu_usage_percent", {}, 10))
        eng.evaluate_once()
        assert states(eng) == {}
        assert [e["to"] for e in eng.history()] == ["inactive", "pending"]
    finally:
        store.close()


def test_success_rate_below_and_label_matchers(tmp_path):
    clock = Clock()
    eng, store = make_engine(tmp_path, {"default_rules": False, "receivers": LOG, "rules": [
        {"rule_id": "agent_failure_critical", "metric_pattern": "*_success_rate_percent",
         "threshold_type": "static", "threshold_value": 80.0, "severity": "high",
         "matchers": ["department=~eng.*"]}]}, clock)
    feed = Feed(store)
    try:
        feed.put("h1", clock.advance(1),
                 ("agent_success_rate_percent", {"agent_id": "qa", "department": "eng"}, 40),
                 ("agent_success_rate_percent", {"agent_id": "s", "department": "sales"}, 40),
                 ("agent_success_rate_percent", {"agent_id": "ok", "department": "eng"}, 99))
        eng.evaluate_once()
        firing = eng.alerts("firing")
        assert [a["agent_id"] for a in firing] == ["qa"]
        assert firing[0]["metric"] == "agent_success_rate_percent"
    finally:
        store.close()


class _Band:
    def __init__(self, lo, hi, history_s=7200):
        self.lo, self.hi = lo, hi
        self.trained_from_ms, self.trained_to_ms = 0, history_s * 1000

    def outside(self, ts, v):
        return np.asarray(not (self.lo <= v <= self.hi))


class _Bands:
    def __init__(self):
        self.map = {}

    def band_for(self, node, metric, labels=None):
        return self.map.get((node, metric))


def test_ml_based_from_stored_score_and_band(tmp_path):
    clock = Clock()
    bands = _Bands()
    eng, store = make_engine(tmp_path, {"default_rules": False, "receivers": LOG, "rules": [
        {"rule_id": "high_cpu_warning", "metric_pattern": "*_cpu_usage_percent",
         "threshold_type": "ml_based", "ai_confidence_threshold": 0.8, "severity": "medium"}]},
        clock, bands=bands)
    feed = Feed(store)
    try:
        t = clock.advance(1)
        feed.put("web-1", t, ("system_cpu_usage_percent", {}, 30))
        feed.put("db-1", t, ("system_cpu_usage_percent", {}, 30))
        feed.put("app-1", t, ("system_cpu_usage_percent", {}, 30))
        # the analytics bridge stores scores as node `analytics` series
        feed.put("analytics", t, ("legion_anomaly_score",
                                  {"node": "web-1", "metric": "system_cpu_usage_percent"}, 0.93))
        eng.evaluate_once()
        assert [a["node"] for a in eng.alerts("firing")] == ["web-1"]
        assert "0.93" in eng.alerts("firing")[0]["summary"]
        bands.map[("db-1", "system_cpu_usage_percent")] = _Band(0, 20)  # 30 is outside
        # a band learnt from 10 minutes (< min_band_history_secs, 1 h) is too narrow to trust
        bands.map[("app-1", "system_cpu_usage_percent")] = _Band(0, 20, history_s=600)
        eng.evaluate_once(clock.advance(1))
        assert sorted(a["node"] for a in eng.alerts("firing")) == ["db-1", "web-1"]
    finally:
        store.close()


def test_ml_based_on_bucketed_scores_stamped_at_their_bucket_start(tmp_path):
    # With analytics.detect_step_secs a score is stamped at its bucket's start and stored after
    # the bucket ends (and settles): it stays the series' newest until the next bucket's.
    clock = Clock()
    for step, age_s, fires in ((300, 330, True), (300, 650, False), (0, 330, False),
                               (0, 5, True)):
        (tmp_path / f"{step}-{age_s}").mkdir()
        eng, store = make_engine(tmp_path / f"{step}-{age_s}", {
            "default_rules": False, "receivers": LOG, "rules": [
                {"rule_id": "cpu_anomaly", "metric_pattern": "system_cpu_usage_percent",
                 "threshold_type": "ml_based", "ai_confidence_threshold": 0.8}]},
            clock, analytics={"detect_step_secs": step})
        try:
            t = clock.advance(1)
            Feed(store).put("analytics", t - age_s * 1000, (
                "legion_anomaly_score", {"node": "web-1", "metric": "system_cpu_usage_percent"},
                0.93))
            eng.evaluate_once()
            assert bool(eng.alerts("firing")) is fires, (step, age_s)
        finally:
            store.close()


def test_predictive_says_when(tmp_path):
    clock = Clock()
    fc = []
    eng, store = make_engine(tmp_path, {"default_rules": False, "receivers": LOG, "rules": [
        {"rule_id": "cpu_forecast", "metric_pattern": "system_cpu_usage_percent",
         "threshold_type": "predictive", "severity": "medium"}]}, clock, forecasts=lambda: fc)
    try:
        fc.append({"node": "web-1", "metric": "system_cpu_usage_percent", "threshold": 80,
                   "horizon_hours": 6, "breach_at_ms": clock() + 7 * 3600_000})
        eng.evaluate_once()
        assert eng.alerts("firing") == []  # beyond the 6 h horizon
        fc[0] = {**fc[0], "breach_at_ms": clock() + 2 * 3600_000}
        eng.evaluate_once(clock.advance(1))
        [a] = eng.alerts("firing")
        assert "forecast to cross 80" in a["summary"] and "T" in a["summary"]
    finally:
        store.close()


def test_node_down_and_agent_silent(tmp_path):
    """agent_silent counts up to its node's last batch: one agent quiet while its node reports
    fires; the whole node quiet is node_down's (after 5 heartbeats), not every agent's."""
    clock = Clock()
    eng, store = make_engine(tmp_path, {"receivers": LOG}, clock)  # default rules
    feed = Feed(store)
    try:
        for _ in range(3):
            t = clock.advance(1)
            feed.put("web-1", t, ("system_cpu_usage_percent", {}, 10),
                     ("agent_success_rate_percent", {"agent_id": "a1"}, 100),
                     ("agent_success_rate_percent", {"agent_id": "a2"}, 100))
            eng.evaluate_once()
        assert eng.alerts("firing") == []
        eng.evaluate_once(clock.advance(8))  # the whole node is quiet 8 s, under node_down's 10
        assert eng.alerts() == []  # not two silent agents: a stalled node (or pipeline)
        for _ in range(8):  # a2 stops reporting, the node keeps sending
            t = clock.advance(1.5)
            feed.put("web-1", t, ("system_cpu_usage_percent", {}, 10),
                     ("agent_success_rate_percent", {"agent_id": "a1"}, 100))
            eng.evaluate_once()
        assert [(a["rule_id"], a["agent_id"]) for a in eng.alerts("firing")] == \
            [("agent_silent", "a2")]
        eng.evaluate_once(clock.advance(30))  # now the whole node is silent
        firing = {a["rule_id"] for a in eng.alerts("firing")}
        assert "node_down" in firing
        down = [a for a in eng.alerts("firing") if a["rule_id"] == "node_down"][0]
        assert down["node"] == "web-1" and down["severity"] == "critical"
    finally:
        store.close()
