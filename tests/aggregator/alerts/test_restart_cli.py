"""Over real processes: `legionctl aggregator run` + `legionctl agent run`, an always-true rule,
a real local webhook receiver. The aggregator is killed with SIGKILL and restarted: the alert is
still firing with the same id and start, and the receiver is not notified again. Then the CLI
verbs (real subprocesses): alerts, alerts ack, silence add/list/expire, rules list, and the
viewer refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from legion.cli.config import load_config
from legion.cli.main import cli
from legion.cli.setup_cmds import add_agent_key
from tests.aggregator.alerts.receiver import Receiver
from tests.conftest import LEGIONCTL, make_setup, wait_for

pytestmark = pytest.mark.timeout(240)


def ctl(config: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(LEGIONCTL + list(args) + ["--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def ctl_json(config: Path, *args: str):
    out = subprocess.run(LEGIONCTL + list(args) + ["--config", str(config), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_kill9_neither_forgets_nor_renotifies_then_cli(tmp_path, procs):
    hook = Receiver()
    config = make_setup(tmp_path / "legion", alerting={
        "default_rules": False, "evaluation_interval_secs": 0.5,
        "rules": [{"rule_id": "memory_in_use", "metric_pattern": "system_memory_usage_percent",
                   "threshold_type": "static", "threshold_value": 0.0, "severity": "high",
                   "annotations": {"summary": "{node} memory {value}%"}}],
        "receivers": [{"name": "hook", "type": "webhook", "url": hook.url + "/hook"}],
        "route": {"receiver": "hook", "group_by": ["node"], "group_wait_secs": 0,
                  "group_interval_secs": 1, "repeat_interval_secs": 3600}})
    add_agent_key(load_config(config), "web-1")
    try:
        agg = procs("aggregator", "run", "--config", str(config))
        procs("agent", "run", "--config", str(config), "--node", "web-1")
        wait_for(lambda: hook.posts, 60, 0.5)

        def sent():
            st = ctl_json(config, "status")
            return st and st["alerting"]["receivers"]["hook"]["sent"] >= 1 and st
        wait_for(sent, 30, 0.5)  # delivered, and its notification log entry written
        [before] = ctl_json(config, "alerts", "--state", "firing")
        assert before["rule_id"] == "memory_in_use" and before["node"] == "web-1"
        assert before["metric"] == "system_memory_usage_percent"

        agg.kill9()
        procs("aggregator", "run", "--config", str(config))

        def rounds():
            st = ctl_json(config, "status")
            return st and st["alerting"]["rounds"] >= 10 and st
        wait_for(rounds, 60, 0.5)
        [after] = ctl_json(config, "alerts", "--state", "firing")
        assert (after["id"], after["fired_ms"]) == (before["id"], before["fired_ms"])
        assert len(hook.posts) == 1, [b["status"] for b in hook.bodies()]

        # the CLI verbs, as real subprocesses
        rows = ctl_json(config, "rules", "list")
        assert [r["rule_id"] for r in rows] == ["memory_in_use"]
        assert "memory_in_use" in ctl(config, "alerts").stdout
        out = ctl(config, "alerts", "ack", before["id"]).stdout
        assert f"acknowledged {before['id']}" in out
        assert ctl_json(config, "alerts")[0]["acked_by"] == "admin"
        made = ctl(config, "silence", "add", "--match", "node=~web-.*", "--for", "2h",
                   "--comment", "maintenance", "--format", "json").stdout
        sid = json.loads(made)["id"]
        [s] = ctl_json(config, "silence", "list")
        assert s["id"] == sid and s["status"] == "active" and s["matchers"] == ["node=~web-.*"]
        wait_for(lambda: (ctl_json(config, "alerts") or [{}])[0].get("silenced_by") == sid, 30)
        assert "expired" in ctl(config, "silence", "expire", sid).stdout
        assert ctl_json(config, "silence", "list")[0]["status"] == "expired"
        bad = ctl(config, "silence", "expire", sid, ok=False)
        assert bad.returncode != 0 and bad.stderr.startswith("error:")
        bad = ctl(config, "silence", "add", "--match", "node=~(", ok=False)
        assert bad.returncode != 0

        # a viewer may read but not acknowledge (the API refuses)
        token = ctl(config, "users", "add", "vic", "--role", "viewer").stdout.strip()
        refused = ctl(config, "alerts", "ack", before["id"], "--token", token, ok=False)
        assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout
        listed = CliRunner().invoke(cli, ["alerts", "--config", str(config), "--token", token,
                                          "--format", "csv"])
        assert listed.exit_code == 0 and before["id"] in listed.output
    finally:
        hook.close()
