"""Notifications delivered to real local peers: an HTTP receiver (webhook v4 and Slack payloads
checked field by field), an SMTP server with STARTTLS (aiosmtpd, started here), and a real
Alertmanager (the Debian package, started here on loopback) that routes the alert on to its own
webhook receiver. Every notifier in the NOTIFIERS table is exercised."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from legion.aggregator.alerts.notifiers import NOTIFIERS
from legion.aggregator.gateway.certs import generate_self_signed
from tests.aggregator.alerts.helpers import Clock, Feed, make_engine
from tests.aggregator.alerts.receiver import Receiver
from tests.conftest import free_port, wait_for

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def cpu_rule(**kw):
    return {"rule_id": "cpu_high", "metric_pattern": "system_cpu_usage_percent",
            "threshold_type": "static", "threshold_value": 80.0, "severity": "high",
            "annotations": {"summary": "{node} cpu {value} >= {threshold}",
                            "description": "runbook: look at {node}"}, **kw}


def route(receiver, **kw):
    return {"receiver": receiver, "group_by": ["node"], "group_wait_secs": 0,
            "group_interval_secs": 60, "repeat_interval_secs": 3600, **kw}


def fire(tmp_path, alerting, start_ms=None):
    """An engine whose one rule fires on web-1 at the first evaluation."""
    clock = Clock() if start_ms is None else Clock(start_ms)
    eng, store = make_engine(tmp_path, {"default_rules": False, "rules": [cpu_rule()],
                                        **alerting}, clock)
    eng.dispatcher.start()
    Feed(store).put("web-1", clock.advance(1), ("system_cpu_usage_percent", {}, 93.5))
    eng.evaluate_once()
    return eng, store


def test_table_covers_every_receiver_type():
    from legion.aggregator.alerts.config import RECEIVER_KEYS
    assert set(NOTIFIERS) == set(RECEIVER_KEYS) == {"webhook", "slack", "email",
                                                    "alertmanager", "log"}


def test_webhook_and_slack_payloads(tmp_path):
    hook, slack = Receiver(), Receiver()
    eng, store = fire(tmp_path, {
        "receivers": [{"name": "hook", "type": "webhook", "url": hook.url + "/hook"},
                      {"name": "chat", "type": "slack", "url": slack.url + "/slack",
                       "channel": "#ops"}],
        "route": route("hook", routes=[{"matchers": ["alertname=nothing"],
                                        "receiver": "chat"}])})
    try:
        [(path, p)] = wait_for(lambda: hook.posts, 20)
        assert path == "/hook"
        assert p["version"] == "4" and p["status"] == "firing" and p["receiver"] == "hook"
        assert p["groupLabels"] == {"node": "web-1"} and p["truncatedAlerts"] == 0
        assert p["groupKey"].endswith('{"node": "web-1"}')
        [a] = p["alerts"]
        assert a["status"] == "firing" and a["endsAt"] == "0001-01-01T00:00:00Z"
        assert a["labels"] == {"alertname": "cpu_high", "severity": "high", "node": "web-1",
                               "metric": "system_cpu_usage_percent"}
        assert a["annotations"]["summary"] == "web-1 cpu 93.5 >= 80"
        assert a["annotations"]["description"] == "runbook: look at web-1"
        assert a["startsAt"].endswith("Z") and len(a["fingerprint"]) == 16
        assert p["commonLabels"] == a["labels"]
        assert slack.posts == []  # the child route did not match
    finally:
        eng.stop()
        store.close()
        hook.close()
    slack_eng_dir = tmp_path / "s"
    slack_eng_dir.mkdir()
    eng, store = fire(slack_eng_dir, {
        "receivers": [{"name": "chat", "type": "slack", "url": slack.url + "/slack",
                       "channel": "#ops", "username": "legion"}],
        "route": route("chat")})
    try:
        [(path, s)] = wait_for(lambda: slack.posts, 20)
        assert s["channel"] == "#ops" and s["username"] == "legion"
        assert s["text"].startswith("[FIRING:1] firing node=web-1")
        [att] = s["attachments"]
        assert att["title"] == "cpu_high (firing)" and att["color"] == "#e85d04"
        assert att["text"] == "web-1 cpu 93.5 >= 80"
        assert {"title": "node", "value": "web-1", "short": True} in att["fields"]
    finally:
        eng.stop()
        store.close()
        slack.close()


def test_email_over_starttls(tmp_path):
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    got = []

    class Keep(Message):
        def handle_message(self, message):
            got.append(message)

    cert, key = generate_self_signed(tmp_path / "smtp.crt", tmp_path / "smtp.key",
                                     hosts=("127.0.0.1",))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    port = free_port()
    smtp = Controller(Keep(), hostname="127.0.0.1", port=port, tls_context=ctx,
                      require_starttls=True)
    smtp.start()
    eng = store = None
    try:
        eng, store = fire(tmp_path, {
            "receivers": [{"name": "mail", "type": "email", "smarthost": f"127.0.0.1:{port}",
                           "from": "legion@example.test", "to": ["ops@example.test"],
                           "ca_file": str(cert)}],
            "route": route("mail")})
        [m] = wait_for(lambda: got, 20)
        assert m["To"] == "ops@example.test" and m["From"] == "legion@example.test"
        assert m["Subject"] == "[FIRING:1] firing node=web-1"
        body = m.get_payload(decode=True).decode()
        assert "cpu_high [high] firing: web-1 cpu 93.5 >= 80" in body
        wait_for(lambda: [r for r in eng.journal.notifications() if r["outcome"] == "sent"], 20)
    finally:
        if eng is not None:
            eng.stop()
            store.close()
        smtp.stop()


def test_email_refuses_plaintext_when_tls_is_required(tmp_path):
    """No STARTTLS offered: the notifier fails (recorded), it never sends in the clear."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    port = free_port()
    smtp = Controller(Sink(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        eng, store = fire(tmp_path, {
            "receivers": [{"name": "mail", "type": "email", "smarthost": f"127.0.0.1:{port}",
                           "from": "a@example.test", "to": ["b@example.test"],
                           "max_attempts": 1}],
            "route": route("mail")})
        rows = wait_for(lambda: eng.journal.notifications(), 20)
        assert rows[0]["outcome"] == "failed" and "STARTTLS" in rows[0]["error"]
        eng.stop()
        store.close()
    finally:
        smtp.stop()


@pytest.mark.skipif(not Path(ALERTMANAGER).exists(), reason="needs prometheus-alertmanager "
                    "(APT_PACKAGES in .ci/run installs it)")
def test_real_alertmanager_receives_and_routes_on(tmp_path):
    """... and keeps it active while it fires: Alertmanager resolves an alert that is not
    re-sent within its resolve_timeout (3 s here), so the engine re-pushes it every
    `resend_secs` (1 s here), as Prometheus does."""
    onward = Receiver()
    port = free_port()
    (tmp_path / "am.yml").write_text(
        "global:\n  resolve_timeout: 3s\n"
        "route:\n  receiver: onward\n  group_by: [alertname, node]\n  group_wait: 1s\n"
        "  group_interval: 1s\n  repeat_interval: 1h\n"
        f"receivers:\n  - name: onward\n    webhook_configs:\n      - url: {onward.url}/am\n")
    am = subprocess.Popen([ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}",
                           f"--storage.path={tmp_path / 'am-data'}",
                           f"--web.listen-address=127.0.0.1:{port}",
                           "--cluster.listen-address=", "--log.level=warn"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    eng = store = None
    try:
        def ready():
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, 30)
        eng, store = fire(tmp_path, {
            "receivers": [{"name": "am", "type": "alertmanager", "url": base,
                           "resend_secs": 1}],
            "route": route("am")}, start_ms=int(time.time() * 1000) - 5000)  # AM wants real time

        def in_am():
            with urllib.request.urlopen(base + "/api/v2/alerts", timeout=5) as r:
                return [a for a in json.loads(r.read())
                        if a["labels"].get("alertname") == "cpu_high"]
        [a] = wait_for(in_am, 30)
        assert a["labels"]["node"] == "web-1" and a["labels"]["severity"] == "high"
        assert a["annotations"]["summary"] == "web-1 cpu 93.5 >= 80"
        assert a["status"]["state"] == "active"
        # ... and Alertmanager routed it on to its own webhook receiver
        body = wait_for(lambda: [b for p, b in onward.posts if p == "/am"], 30)[0]
        assert body["receiver"] == "onward"
        assert body["alerts"][0]["labels"]["alertname"] == "cpu_high"
        # still firing for four resolve_timeouts: rounds on the real clock re-push it
        feed, clock = Feed(store), eng.clock_ms
        t_end = time.time() + 12
        while time.time() < t_end:
            clock.t = int(time.time() * 1000)
            feed.put("web-1", clock.t, ("system_cpu_usage_percent", {}, 93.5))
            eng.evaluate_once()
            time.sleep(0.5)
        [b] = in_am()
        assert b["status"]["state"] == "active", b
        assert b["endsAt"] > a["endsAt"]  # re-sent with a later end
        refreshes = [n for n in eng.journal.notifications(limit=1000)
                     if n["kind"] == "refresh" and n["outcome"] == "sent"]
        assert len(refreshes) >= 5
        assert not [p for p, b in onward.posts if p == "/am" and b["status"] == "resolved"]
    finally:
        if eng is not None:
            eng.stop()
            store.close()
        am.terminate()
        try:
            am.wait(10)
        except subprocess.TimeoutExpired:
            am.kill()
        onward.close()
        shutil.rmtree(tmp_path / "am-data", ignore_errors=True)
