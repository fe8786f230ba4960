"""Port clashes and start-up, with real processes: a second aggregator on taken ports says which
address and key in one line (exit 2); two demos run side by side on free ports; a demo whose
aggregator cannot start says why and prints no dashboard URL; children ignore the working
directory (a checkout's `legion/` cannot shadow the installed package)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from legion.cli.client import ApiClient
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.demo.runner import CHILD_PYTHON
from tests.conftest import LEGIONCTL, free_port, make_setup, wait_for

pytestmark = pytest.mark.timeout(240)


def second_config(first: Path, tmp: Path) -> Path:
    """The same ports as `first`, its own database and gateway port."""
    raw = json.loads(first.read_text())
    raw["storage"]["db_path"] = str(tmp / "second.duckdb")
    raw["dashboard_config"]["websocket_port"] = free_port()
    for key in ("secret_key_path", "authorized_keys_dir", "tokens_path"):
        raw["aggregator"][key] = str(first.parent / raw["aggregator"][key])
    for key in ("certificate_path", "private_key_path"):
        raw["security"][key] = str(first.parent / raw["security"][key])
    path = tmp / "second.json"
    path.write_text(json.dumps(raw))
    return path


def test_second_aggregator_on_taken_ports_names_address_and_key(tmp_path: Path,
                                                                 procs) -> None:
    cfg_path = make_setup(tmp_path / "legion")
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "n1")
    procs("aggregator", "run", "--config", str(cfg_path), name="first")
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip(), timeout=5)

    def up() -> bool:
        try:
            return bool(client.get("/api/v1/status"))
        except Exception:  # noqa: BLE001 - not up yet
            return False
    wait_for(up, 60)
    second = subprocess.run(LEGIONCTL + ["aggregator", "run", "--config",
                                         str(second_config(cfg_path, tmp_path))],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    err = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, second.stderr
    assert "aggregator.ack_bind" in err[0] and cfg.aggregator.ack_bind in err[0]
    assert "already in use" in err[0]
    assert "Traceback" not in second.stderr and "cannot join thread" not in second.stderr


def test_two_demos_side_by_side_on_free_ports(tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        log = open(tmp_path / f"demo{i}.log", "wb")
        runs.append((subprocess.Popen(
            LEGIONCTL + ["demo", "--dir", str(tmp_path / f"d{i}"), "--hosts", "1",
                         "--workers", "0", "--duration", "6"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    ports = set()
    for i, (p, log) in enumerate(runs):
        try:
            assert p.wait(150) == 0, (tmp_path / f"demo{i}.log").read_text()
        finally:
            if p.poll() is None:
                p.kill()
            log.close()
        out = (tmp_path / f"demo{i}.log").read_text()
        assert "dashboard" in out and "points/s" in out, out
        raw = json.loads((tmp_path / f"d{i}" / "monitoring_config.json").read_text())
        ports |= {raw["dashboard_config"]["websocket_port"], raw["aggregator"]["ingest_bind"],
                  raw["aggregator"]["ack_bind"], raw["analytics"]["jobs_bind"],
                  raw["analytics"]["results_bind"]}
    assert len(ports) == 10  # nothing shared, nothing on the fixed defaults
    assert not ports & {8765, "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"}


def test_demo_whose_aggregator_fails_says_why_and_prints_no_url(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(LEGIONCTL + ["demo", "--dir", str(tmp_path / "d"), "--port",
                                           str(port), "--hosts", "1", "--workers", "0",
                                           "--duration", "5"],
                              capture_output=True, text=True, timeout=150)
    assert done.returncode != 0
    assert "dashboard" not in done.stdout
    assert "dashboard_config.websocket_port" in done.stderr and str(port) in done.stderr


def test_children_ignore_the_working_directory(tmp_path: Path) -> None:
    shadow = tmp_path / "checkout"
    (shadow / "legion").mkdir(parents=True)
    (shadow / "legion" / "__init__.py").write_text("raise ImportError('shadowed by a checkout')\n")
    plain = subprocess.run([sys.executable, "-m", "legion.cli", "--version"], cwd=shadow,
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "shadowed" in plain.stderr  # the failure, reproduced
    child = subprocess.run([*CHILD_PYTHON, "-m", "legion.cli", "--version"], cwd=shadow,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
