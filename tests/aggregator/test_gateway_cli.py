"""`legionctl users` and `legionctl certs` against a real TLS gateway (CliRunner and subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from legion.aggregator.gateway import TokenStore, create_app
from legion.aggregator.store.store import Store
from legion.cli.config import Config, config_to_dict, load_config
from legion.cli.main import cli
from legion.kernel.config import CONFIG_FILENAME
from tests.conftest import free_port, gateway_thread


def legionctl(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"LEGION_TOKEN": token} if token else {})}
    return subprocess.run([sys.executable, "-m", "legion.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_certs_init_then_users_through_the_tls_api(tmp_path: Path) -> None:
    r = legionctl("certs", "init", "--dir", str(tmp_path / "certs"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "certs" / "server.key").stat().st_mode & 0o077 == 0
    again = legionctl("certs", "init", "--dir", str(tmp_path / "certs"))
    assert again.returncode != 0 and "error:" in again.stderr and "--force" in again.stderr

    raw = config_to_dict(Config())
    raw["security"].update(enable_tls=True, certificate_path="certs/server.crt",
                           private_key_path="certs/server.key")
    raw["dashboard_config"]["websocket_port"] = free_port()
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(raw))
    cfg_path = str(tmp_path / CONFIG_FILENAME)
    config = load_config(cfg_path).aggregator_settings()
    tokens = TokenStore(Path(config.aggregator.tokens_path))
    admin = tokens.add("admin", "admin")
    viewer = tokens.add("watcher", "viewer")
    store = Store(config.storage.db_path)
    try:
        with gateway_thread(config, lambda: create_app(config, store, lambda: {"accepted": 0},
                                                        tokens)):
            runner = CliRunner()
            res = runner.invoke(cli, ["users", "add", "bob", "--role", "operator",
                                      "--config", cfg_path, "--token", admin])
            assert res.exit_code == 0, res.output
            bob = res.stdout.splitlines()[0]
            assert bob.startswith("lgn_") and tokens.verify(bob).role == "operator"

            res = legionctl("users", "list", "--config", cfg_path, "--format", "json",
                            token=admin)
            assert res.returncode == 0, res.stderr
            assert {u["name"]: u["role"] for u in json.loads(res.stdout)} == {
                "admin": "admin", "watcher": "viewer", "bob": "operator"}
            assert "lgn_" not in res.stdout

            res = legionctl("users", "add", "eve", "--role", "admin", "--config", cfg_path,
                            token=viewer)
            assert res.returncode != 0 and "403" in res.stderr and not res.stdout

            res = legionctl("users", "revoke", "bob", "--config", cfg_path, token=admin)
            assert res.returncode == 0, res.stderr
            assert tokens.verify(bob) is None
            res = runner.invoke(cli, ["users", "revoke", "bob", "--config", cfg_path,
                                      "--token", admin])
            assert res.exit_code != 0 and "404" in res.output
    finally:
        store.close()
    audit = [json.loads(line) for line in
             (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["user"], e["action"], e["outcome"]) for e in audit] == [
        ("admin", "POST /api/v1/users", "ok"),
        ("watcher", "POST /api/v1/users", "denied"),
        ("admin", "DELETE /api/v1/users/bob", "ok"),
        ("admin", "DELETE /api/v1/users/bob", "failed"),
    ]
