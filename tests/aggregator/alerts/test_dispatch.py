"""Delivery isolation against real local HTTP receivers: a receiver that hangs or answers 500
delays neither the others nor evaluation; its circuit opens and closes again; every attempt is
recorded in the journal."""

from __future__ import annotations

from legion.aggregator.alerts.config import ReceiverConfig
from legion.aggregator.alerts.dispatch import Dispatcher
from legion.aggregator.alerts.journal import Journal
from legion.aggregator.alerts.notifiers import Notification
from legion.aggregator.store import Store
from tests.aggregator.alerts.helpers import Clock, Feed, make_engine
from tests.aggregator.alerts.receiver import Receiver
from tests.conftest import wait_for

ALERT = {"id": "f1", "fingerprint": "f1", "rule_id": "cpu", "state": "firing",
         "labels": {"alertname": "cpu", "node": "web-1", "severity": "high"},
         "annotations": {"summary": "hot"}, "fired_ms": 1}


def note(receiver, i=0):
    return Notification(receiver, f"g{i}", "firing", "firing", (ALERT,), {"node": "web-1"})


def test_hanging_and_failing_receivers_do_not_delay_the_good_one(tmp_path):
    hang, bad, good = Receiver(), Receiver(), Receiver()
    hang.mode, bad.mode = "hang", "fail"
    store = Store(tmp_path / "legion.duckdb")
    journal = Journal(store)
    d = Dispatcher((ReceiverConfig("hang", "webhook", {"url": hang.url}, timeout_secs=20,
                                   max_attempts=1),
                    ReceiverConfig("bad", "webhook", {"url": bad.url}, max_attempts=2,
                                   backoff_secs=0.05),
                    ReceiverConfig("good", "webhook", {"url": good.url})),
                   journal.attempt, lambda n: None, Clock())
    d.start()
    try:
        assert d.send(note("hang")) and d.send(note("bad")) and d.send(note("good"))
        wait_for(lambda: hang.in_flight == 1, 10)       # the hang receiver holds its request
        wait_for(lambda: good.posts, 10)                # ... while the good one got its message
        assert hang.posts == [] and hang.in_flight == 1
        wait_for(lambda: d.stats()["bad"]["failed"] == 1, 10)
        rows = journal.notifications()
        bad_rows = sorted((r["attempt"], r["outcome"]) for r in rows if r["receiver"] == "bad")
        assert bad_rows == [(1, "failed"), (2, "failed")]   # retried with backoff, recorded
        assert [r["outcome"] for r in rows if r["receiver"] == "good"] == ["sent"]
        assert "HTTP 500" in [r for r in rows if r["receiver"] == "bad"][0]["error"]
        hang.release.set()
        wait_for(lambda: d.stats()["hang"]["sent"] == 1, 10)
    finally:
        d.stop()
        store.close()
        for r in (hang, bad, good):
            r.close()


def test_circuit_opens_and_closes_again(tmp_path):
    bad = Receiver()
    bad.mode = "fail"
    store = Store(tmp_path / "legion.duckdb")
    journal = Journal(store)
    d = Dispatcher((ReceiverConfig("bad", "webhook", {"url": bad.url}, max_attempts=1,
                                   breaker_failures=2, breaker_reset_secs=1.0),),
                   journal.attempt, lambda n: None, Clock())
    w = d.workers["bad"]
    d.start()
    try:
        d.send(note("bad", 1))
        d.send(note("bad", 2))
        wait_for(lambda: w.stats["failed"] == 2, 10)
        assert w.breaker.state == "open" and len(bad.posts) == 2
        d.send(note("bad", 3))                          # not attempted while open
        wait_for(lambda: w.stats["failed"] == 3, 10)
        assert len(bad.posts) == 2
        assert [r["outcome"] for r in journal.notifications() if r["group_key"] == "g3"] == \
            ["circuit_open"]
        wait_for(lambda: w.breaker.state == "half_open", 10)
        bad.mode = "ok"
        d.send(note("bad", 4))                          # the half-open trial succeeds
        wait_for(lambda: w.stats["sent"] == 1, 10)
        assert w.breaker.state == "closed" and len(bad.posts) == 3
    finally:
        d.stop()
        store.close()
        bad.close()


def test_evaluation_goes_on_while_the_receiver_hangs(tmp_path):
    hang = Receiver()
    hang.mode = "hang"
    clock = Clock()
    eng, store = make_engine(tmp_path, {
        "default_rules": False, "ai_severity": False,
        "rules": [{"rule_id": "cpu", "metric_pattern": "system_cpu_usage_percent",
                   "threshold_type": "static", "threshold_value": 80.0}],
        "receivers": [{"name": "h", "type": "webhook", "url": hang.url, "timeout_secs": 30}],
        "route": {"receiver": "h", "group_wait_secs": 0, "group_interval_secs": 1}}, clock)
    eng.dispatcher.start()
    feed = Feed(store)
    try:
        feed.put("web-1", clock.advance(1), ("system_cpu_usage_percent", {}, 99))
        eng.evaluate_once()
        wait_for(lambda: hang.in_flight == 1, 10)
        for v in (99, 10, 10):                          # rounds complete while it hangs
            feed.put("web-1", clock.advance(5), ("system_cpu_usage_percent", {}, v))
            eng.evaluate_once()
        assert eng.stats["rounds"] == 4 and eng.alerts()[0]["state"] == "resolved"
        assert hang.in_flight == 1
    finally:
        hang.release.set()
        eng.stop()
        store.close()
        hang.close()
