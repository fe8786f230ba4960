"""Noise control on an injected clock, against a real store: grouping into incidents,
group_wait / group_interval / repeat, inhibition (node down, critical over lesser), silences
(=, !=, =~, !~, expiry), flap detection, acknowledgement, escalation levels.

The router's decisions are captured at its `send` seam (what would be handed to the receiver
threads), so "nothing sent" is decided synchronously; delivery itself is tested against real
peers in test_notifiers.py and test_dispatch.py.
"""

from __future__ import annotations

import pytest

from tests.aggregator.alerts.helpers import Clock, Feed, make_engine

RECEIVERS = [{"name": "ops", "type": "log"}, {"name": "pager", "type": "log"},
             {"name": "boss", "type": "log"}]


def rule(rid, metric, thr, sev="high", **kw):
    return {"rule_id": rid, "metric_pattern": metric, "threshold_type": "static",
            "threshold_value": thr, "severity": sev, **kw}


class Rig:
    def __init__(self, tmp_path, **alerting):
        self.clock = Clock()
        alerting.setdefault("receivers", RECEIVERS)
        alerting.setdefault("route", {"receiver": "ops", "group_by": ["node"],
                                      "group_wait_secs": 30, "group_interval_secs": 300,
                                      "repeat_interval_secs": 3600})
        alerting.setdefault("ai_severity", False)
        self.eng, self.store = make_engine(tmp_path, alerting, self.clock)
        self.feed = Feed(self.store)
        self.sent = []
        self.eng.router.send = lambda n: self.sent.append(n) or True

    def step(self, secs, node="web-1", **metrics):
        t = self.clock.advance(secs)
        if metrics:
            self.feed.put(node, t, *[(m.replace("__", "_"), {}, v) for m, v in metrics.items()])
        self.eng.evaluate_once()
        return [n for n in self.sent]

    def kinds(self):
        return [(n.receiver, n.kind, sorted(a["rule_id"] for a in n.alerts)) for n in self.sent]

    def close(self):
        self.store.close()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**alerting):
        r = Rig(tmp_path / str(len(made)), **alerting)
        made.append(r)
        return r

    (tmp_path / "0").mkdir()
    for i in range(1, 4):
        (tmp_path / str(i)).mkdir()
    yield make
    for r in made:
        r.close()


CPU = "system_cpu_usage_percent"
MEM = "system_memory_usage_percent"


def test_grouping_wait_interval_repeat_and_resolve(rig):
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80), rule("mem", MEM, 80)])
    r.step(1, system_cpu_usage_percent=90, system_memory_usage_percent=10)
    assert r.sent == []                                       # group_wait 30 s
    r.step(10, system_cpu_usage_percent=90, system_memory_usage_percent=90)  # joins the group
    r.step(25, system_cpu_usage_percent=90, system_memory_usage_percent=90)
    assert r.kinds() == [("ops", "firing", ["cpu", "mem"])]   # one notification, two alerts
    [inc] = r.eng.incidents()
    assert inc["closed_ms"] is None and len(inc["alerts"]) == 2
    r.step(100, system_cpu_usage_percent=90, system_memory_usage_percent=90)
    assert len(r.sent) == 1                                   # unchanged: no repeat yet
    for _ in range(12):                                       # 1 h later: the repeat
        r.step(300, system_cpu_usage_percent=90, system_memory_usage_percent=90)
    assert r.kinds()[1:] == [("ops", "repeat", ["cpu", "mem"])]
    r.step(10, system_cpu_usage_percent=10, system_memory_usage_percent=10)
    r.step(300, system_cpu_usage_percent=10, system_memory_usage_percent=10)
    assert r.kinds()[-1] == ("ops", "resolved", ["cpu", "mem"])
    [inc] = r.eng.incidents()
    assert inc["closed_ms"] is not None


def test_ack_stops_repeats_and_escalation(rig):
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80, "critical")],
            escalation={"severities": ["critical"],
                        "levels": [{"after_secs": 600, "receiver": "pager"},
                                   {"after_secs": 1800, "receiver": "boss"}]})
    r.step(1, system_cpu_usage_percent=99)
    r.step(30, system_cpu_usage_percent=99)
    assert r.kinds() == [("ops", "firing", ["cpu"])]
    r.step(600, system_cpu_usage_percent=99)
    assert r.kinds()[-1] == ("pager", "escalation", ["cpu"])  # level 1 after 10 min
    assert r.sent[-1].group_labels == {"level": "1"}
    alert_id = r.eng.alerts("firing")[0]["id"]
    r.eng.ack(alert_id, "alice")
    n = len(r.sent)
    for _ in range(20):                                        # 100 min: no level 2, no repeat
        r.step(300, system_cpu_usage_percent=99)
    assert len(r.sent) == n
    assert r.eng.alerts("firing")[0]["acked_by"] == "alice"
    assert [e["to"] for e in r.eng.history(alert_id=alert_id)][0] == "acknowledged"


def test_escalation_walks_the_levels_without_ack(rig):
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80, "critical")],
            escalation={"levels": [{"after_secs": 600, "receiver": "pager"},
                                   {"after_secs": 1800, "receiver": "boss"}]})
    for _ in range(8):
        r.step(300, system_cpu_usage_percent=99)
    esc = [(n.receiver, n.group_labels["level"]) for n in r.sent if n.kind == "escalation"]
    assert esc == [("pager", "1"), ("boss", "2")]


def test_node_down_is_one_notification(rig):
    """A node with ten agents dies: node_down fires and one notification goes out (not eleven):
    its agents are not reported silent one by one (agent_silent counts up to the node's last
    batch), and an alert of that node still firing on its last values is inhibited by it."""
    r = rig(route={"receiver": "ops", "group_by": ["node"], "group_wait_secs": 0,
                   "group_interval_secs": 0})
    agents = [("agent_success_rate_percent", {"agent_id": f"a{i}"}, 100.0) for i in range(10)]
    for _ in range(3):
        r.feed.put("web-1", r.clock.advance(1), ("system_cpu_usage_percent", {}, 5.0), *agents)
        r.eng.evaluate_once()
    assert r.sent == []
    r.step(60)                     # web-1 and its agents fall silent
    assert [a["rule_id"] for a in r.eng.alerts("firing")] == ["node_down"]
    assert r.kinds() == [("ops", "firing", ["node_down"])]
    r.step(60)
    assert len(r.sent) == 1


def test_node_down_inhibits_the_nodes_other_alerts(rig):
    r = rig(route={"receiver": "ops", "group_by": ["node"], "group_wait_secs": 0,
                   "group_interval_secs": 0})
    for _ in range(4):
        r.step(1, system_cpu_usage_percent=97.0)
    assert r.kinds() == [("ops", "firing", ["cpu_usage_high"])]
    r.step(12)  # silent past node_down's 10 s; the cpu value (12 s old) is still fresh
    firing = {a["rule_id"]: a for a in r.eng.alerts("firing")}
    assert firing["cpu_usage_high"]["inhibited_by"] == firing["node_down"]["id"]
    assert r.kinds()[-1] == ("ops", "firing", ["node_down"])


def test_critical_inhibits_lesser_alert_of_same_series(rig):
    r = rig(default_rules=False, route={"receiver": "ops", "group_by": ["node"],
                                        "group_wait_secs": 0},
            rules=[rule("cpu_warn", CPU, 80, "medium"), rule("cpu_crit", CPU, 95, "critical")])
    r.step(1, system_cpu_usage_percent=99)
    warn = [a for a in r.eng.alerts("firing") if a["rule_id"] == "cpu_warn"][0]
    assert warn["inhibited_by"] is not None
    assert r.kinds() == [("ops", "firing", ["cpu_crit"])]


@pytest.mark.parametrize("matcher,muted", [
    ("node=web-1", True), ("node!=web-1", False), ("node=~web-.*", True),
    ("node!~web-.*", False), ("alertname=~cpu|mem", True)])
def test_silence_matchers(rig, matcher, muted):
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80)],
            route={"receiver": "ops", "group_wait_secs": 0})
    s = r.eng.add_silence([matcher], 3600, "maintenance", "alice")
    r.step(1, system_cpu_usage_percent=99)
    assert (r.sent == []) is muted
    assert (r.eng.alerts("firing")[0]["silenced_by"] == s["id"]) is muted


def test_silence_expiry_and_expire(rig):
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80)],
            route={"receiver": "ops", "group_wait_secs": 0, "group_interval_secs": 60})
    s = r.eng.add_silence(["node=web-1"], 120, "short", "alice")
    r.step(1, system_cpu_usage_percent=99)
    r.step(60, system_cpu_usage_percent=99)
    assert r.sent == []
    r.step(70, system_cpu_usage_percent=99)  # the silence ended after 120 s
    assert r.kinds() == [("ops", "firing", ["cpu"])]
    assert [x["status"] for x in r.eng.silences()] == ["expired"]
    s2 = r.eng.add_silence(["alertname=cpu"], 3600, "long", "bob")
    assert r.eng.expire_silence(s2["id"]) and not r.eng.expire_silence(s2["id"])
    assert not r.eng.expire_silence("nope") and s["id"] != s2["id"]
    with pytest.raises(ValueError):
        r.eng.add_silence(["node=~("], 60, "", "x")


def test_flapping_alert_notifies_once(rig):
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80)], flap_threshold=3,
            flap_window_secs=600,
            route={"receiver": "ops", "group_wait_secs": 0, "group_interval_secs": 0})
    for _ in range(10):
        r.step(20, system_cpu_usage_percent=99)
        r.step(20, system_cpu_usage_percent=10)
    kinds = [k for _, k, _ in r.kinds()]
    assert kinds.count("flapping") == 1
    assert kinds.count("firing") <= 2           # the first firings, before it was flapping
    assert r.eng.router.counts["flapping_notices"] == 1


def test_silence_added_or_expired_between_rounds_takes_effect_next_round(rig):
    """Rounds read the silences from memory once read (issue 17); one added or expired after
    rounds already ran still applies from the very next round."""
    r = rig(default_rules=False, rules=[rule("cpu", CPU, 80)],
            route={"receiver": "ops", "group_wait_secs": 0})
    r.step(1, system_cpu_usage_percent=50)
    r.step(1, system_cpu_usage_percent=50)  # rounds ran: the (empty) silences are cached
    s = r.eng.add_silence(["node=web-1"], 3600, "maintenance", "alice")
    r.step(1, system_cpu_usage_percent=99)
    assert r.sent == [] and r.eng.alerts("firing")[0]["silenced_by"] == s["id"]
    assert r.eng.expire_silence(s["id"])
    r.step(1, system_cpu_usage_percent=99)
    assert r.eng.alerts("firing")[0]["silenced_by"] is None
    assert r.kinds() == [("ops", "firing", ["cpu"])]
