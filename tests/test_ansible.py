"""The Ansible roles, run for real on localhost (connection local) into a temporary root.

Only the preflight and configure phases run (install needs PyPI/wheels and run needs systemd);
the rendered files are then checked: the config loads with Legion's own loader, keys are in place
with safe modes, and the systemd units carry the hardening and the right command line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from legion.cli.setup_cmds import add_agent_key, write_setup
from legion.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "ansible" / "site.yml"
pytestmark = pytest.mark.timeout(180)


def play(tmp: Path, keys: Path, *extra: str, tags: str = "preflight,configure",
         node: str = "web-1") -> subprocess.CompletedProcess[str]:
    inv = tmp / "inventory.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "python3"}},
        "children": {"legion_aggregator": {"hosts": {"localhost": {}}},
                     "legion_agents": {"hosts": {"localhost": {}}}}}}))
    ev = {"legion_agent_root": str(tmp / "root"), "legion_aggregator_root": str(tmp / "root"),
          "legion_agent_node": node,
          "legion_agent_controller_keys_dir": str(keys),
          "legion_aggregator_controller_keys_dir": str(keys),
          # the test runs as one user: every owner is that user
          **{f"legion_{r}_{k}": "root" for r in ("agent", "aggregator")
             for k in ("system_user", "system_group", "config_owner", "config_group")},
          "legion_aggregator_bind_address": "127.0.0.1",
          # no systemd in the test sandbox: render the units, do not manage services
          "legion_agent_service_manage": False, "legion_aggregator_service_manage": False}
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    return subprocess.run(["ansible-playbook", "-i", str(inv), str(PLAYBOOK), "--tags", tags,
                           "-e", json.dumps(ev), *extra], capture_output=True, text=True,
                          timeout=170, env=env, cwd=tmp)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    setup = tmp_path / "controller"
    write_setup(setup)
    add_agent_key(load_config(setup / "monitoring_config.json"), "web-1")
    return setup / "keys"


def test_roles_render_a_working_setup(tmp_path: Path, keys: Path) -> None:
    r = play(tmp_path, keys)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    root = tmp_path / "root"
    agent_cfg = root / "etc/legion_agent/monitoring_config.json"
    cfg = config_from_dict(json.loads(agent_cfg.read_text()), base_dir=agent_cfg.parent)
    assert cfg.agent.aggregator_endpoint.startswith("tcp://")
    secret = root / "etc/legion_agent/keys/web-1.key_secret"
    assert secret.read_text() == (keys / "agents/web-1.key_secret").read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    unit = (root / "etc/systemd/system/legion-agent.service").read_text()
    assert "agent run --config /etc/legion_agent/monitoring_config.json --node web-1" in unit
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                      "PrivateTmp=yes", "CapabilityBoundingSet="):
        assert hardening in unit

    agg_cfg_path = root / "etc/legion_aggregator/monitoring_config.json"
    agg = config_from_dict(json.loads(agg_cfg_path.read_text()), base_dir=agg_cfg_path.parent)
    assert agg.aggregator.ingest_bind == "tcp://127.0.0.1:5555"
    authorized = list(root.glob("etc/legion_aggregator/**/web-1.key"))
    assert authorized, "the agent's public certificate is in the aggregator's allowlist"
    assert 'node = "web-1"' in authorized[0].read_text()
    agg_unit = (root / "etc/systemd/system/legion-aggregator.service").read_text()
    assert "aggregator run --config /etc/legion_aggregator/monitoring_config.json" in agg_unit


def test_preflight_refuses_a_node_without_a_key(tmp_path: Path, keys: Path) -> None:
    r = play(tmp_path, keys, tags="preflight", node="ghost")
    assert r.returncode != 0
    assert "ghost" in r.stdout and "keys add-agent" in r.stdout
