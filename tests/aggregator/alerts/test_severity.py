"""AI-assisted severity on an injected clock against a real store: an alert that keeps resolving
by itself is lowered and held back (listed, not notified), correlated alerts are raised, anomaly
confidence raises, and every adjustment is explained in the annotations. Node down is never
lowered."""

from __future__ import annotations

from tests.aggregator.alerts.helpers import Clock, Feed, make_engine

CPU = "system_cpu_usage_percent"


def rig(tmp_path, ai, **extra):
    clock = Clock()
    eng, store = make_engine(tmp_path, {
        "default_rules": False, "ai_severity": ai, "flap_threshold": 50,
        "route": {"receiver": "log", "group_by": ["node"], "group_wait_secs": 0,
                  "group_interval_secs": 0}, **extra}, clock)
    sent = []
    eng.router.send = lambda n: sent.append(n) or True
    return eng, store, Feed(store), clock, sent


def blips(eng, feed, clock, n):
    """n short firings of the cpu rule that resolve by themselves within a minute."""
    for _ in range(n):
        feed.put("web-1", clock.advance(60), (CPU, {}, 95.0))
        eng.evaluate_once()
        feed.put("web-1", clock.advance(30), (CPU, {}, 10.0))
        eng.evaluate_once()


def test_self_resolving_alert_is_lowered_and_held(tmp_path):
    rules = [{"rule_id": "cpu", "metric_pattern": CPU, "threshold_type": "static",
              "threshold_value": 80.0, "severity": "medium"}]
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on, s1, f1, c1, sent_on = rig(tmp_path / "on", True, rules=rules)
    off, s2, f2, c2, sent_off = rig(tmp_path / "off", False, rules=rules)
    try:
        blips(on, f1, c1, 4)
        blips(off, f2, c2, 4)
        firing_on = [n for n in sent_on if n.kind == "firing"]
        firing_off = [n for n in sent_off if n.kind == "firing"]
        # from the 3rd firing on, 2 of 3 (then 3 of 4) resolved by themselves: held back
        assert len(firing_off) == 4 and len(firing_on) == 2
        f1.put("web-1", c1.advance(60), (CPU, {}, 95.0))
        on.evaluate_once()
        [a] = on.alerts("firing")
        assert a["severity"] == "low" and a["base_severity"] == "medium" and a["held_by_ai"]
        assert a["annotations"]["ai_explanation"] == \
            "medium -> low: resolved by itself within 5 min in 4 of 5 firings"
    finally:
        s1.close()
        s2.close()


def test_correlated_alerts_are_raised_and_explained(tmp_path):
    eng, store, feed, clock, sent = rig(tmp_path, True, rules=[
        {"rule_id": r, "metric_pattern": m, "threshold_type": "static", "threshold_value": 80.0,
         "severity": "medium"} for r, m in (("cpu", CPU), ("mem", "system_memory_usage_percent"),
                                            ("disk", "system_disk_usage_percent"))])
    try:
        feed.put("web-1", clock.advance(1), (CPU, {}, 95.0),
                 ("system_memory_usage_percent", {}, 95.0),
                 ("system_disk_usage_percent", {}, 95.0))
        eng.evaluate_once()
        alerts = eng.alerts("firing")
        assert {a["severity"] for a in alerts} == {"high"}
        assert all("correlated with 2 other active alerts on the same node"
                   in a["annotations"]["ai_explanation"] for a in alerts)
    finally:
        store.close()


def test_confidence_raises_and_node_down_is_never_lowered(tmp_path):
    eng, store, feed, clock, sent = rig(tmp_path, True, rules=[
        {"rule_id": "cpu_ml", "metric_pattern": CPU, "threshold_type": "ml_based",
         "severity": "medium"},
        {"rule_id": "node_down", "threshold_type": "node_down", "severity": "critical"}])
    try:
        t = clock.advance(1)
        feed.put("web-1", t, (CPU, {}, 40.0))
        feed.put("analytics", t, ("legion_anomaly_score", {"node": "web-1", "metric": CPU}, 0.97))
        eng.evaluate_once()
        [a] = eng.alerts("firing")
        assert a["severity"] == "high" and "anomaly confidence 0.97" in \
            a["annotations"]["ai_explanation"]
        for _ in range(4):  # web-1 goes down and comes back, quickly, four times
            eng.evaluate_once(clock.advance(60))
            feed.put("web-1", clock.advance(30), (CPU, {}, 40.0))
            eng.evaluate_once()
        eng.evaluate_once(clock.advance(60))
        down = [a for a in eng.alerts("firing") if a["rule_id"] == "node_down"][0]
        assert down["severity"] == "critical" and not down["held_by_ai"]
    finally:
        store.close()


def test_self_resolve_history_outlives_the_listing_and_a_restart(tmp_path):
    """The history is read from the stored transitions (alert_events), for
    `severity_history_secs`: not lost when the resolved alert leaves the list after an hour,
    nor on restart; older firings no longer count."""
    rules = [{"rule_id": "cpu", "metric_pattern": CPU, "threshold_type": "static",
              "threshold_value": 80.0, "severity": "medium"}]
    eng, store, feed, clock, _ = rig(tmp_path, True, rules=rules,
                                     severity_history_secs=3 * 3600)
    try:
        blips(eng, feed, clock, 4)
        eng.evaluate_once(clock.advance(2 * 3600))  # resolved > 1 h ago: no longer listed
        assert eng.alerts() == []
        eng.stop()
        again, _ = make_engine(tmp_path, {"default_rules": False, "rules": rules,
                                          "severity_history_secs": 3 * 3600}, clock, store=store)
        feed.put("web-1", clock.advance(60), (CPU, {}, 95.0))
        again.evaluate_once()
        [a] = again.alerts("firing")
        assert a["severity"] == "low", a["annotations"]
        assert "in 4 of 5 firings" in a["annotations"]["ai_explanation"]
        feed.put("web-1", clock.advance(30), (CPU, {}, 10.0))
        again.evaluate_once()
        feed.put("web-1", clock.advance(4 * 3600), (CPU, {}, 95.0))  # all beyond 3 h now
        again.evaluate_once()
        [a] = again.alerts("firing")
        assert a["severity"] == "medium" and a["annotations"]["ai_explanation"] == \
            "medium: no adjustment"
    finally:
        store.close()


def test_a_blip_after_a_resolution_keeps_the_resolved_alert(tmp_path):
    """A breach shorter than `for_secs` after a resolution leaves the resolved alert listed
    (with when it fired), instead of replacing it with a pending one that then vanishes."""
    rules = [{"rule_id": "cpu", "metric_pattern": CPU, "threshold_type": "static",
              "threshold_value": 80.0, "severity": "medium", "for_secs": 10}]
    eng, store, feed, clock, _ = rig(tmp_path, True, rules=rules)
    try:
        for v, secs in ((95.0, 1), (95.0, 11), (10.0, 5), (95.0, 30), (10.0, 2)):
            feed.put("web-1", clock.advance(secs), (CPU, {}, v))
            eng.evaluate_once()
        [a] = eng.alerts()
        assert a["state"] == "resolved" and a["fired_ms"] is not None
        assert [e["to"] for e in reversed(eng.history())] == \
            ["pending", "firing", "resolved", "pending", "inactive"]
    finally:
        store.close()
