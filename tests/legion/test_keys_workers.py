"""`legionctl keys generate` on a host, and the workers' allowlist: add-worker, list-workers,
revoke-worker, checked through the aggregator's own KeyRegistry (what ZAP asks)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from legion.aggregator.allowlist import KeyRegistry
from legion.cli.config import load_config
from legion.cli.main import cli
from legion.kernel.curve import load_public
from tests.conftest import make_setup


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def test_generate_is_idempotent_and_keeps_the_secret_private(tmp_path: Path) -> None:
    host = tmp_path / "host-keys"
    code, out = run("keys", "generate", "worker", "--dir", str(host), "--node", "w-1")
    assert code == 0 and "created" in out
    secret = (host / "worker.key_secret").read_text()
    assert stat.S_IMODE((host / "worker.key_secret").stat().st_mode) == 0o600
    assert "secret-key" not in (host / "worker.key").read_text()
    code, out = run("keys", "generate", "worker", "--dir", str(host), "--node", "w-1")
    assert code == 0 and "kept" in out
    assert (host / "worker.key_secret").read_text() == secret
    code, out = run("keys", "generate", "worker", "--dir", str(host), "--node", "other")
    assert code == 1 and "bound to 'w-1'" in out


def test_add_list_revoke_worker(tmp_path: Path) -> None:
    cfg_path = make_setup(tmp_path / "agg")
    cfg = load_config(cfg_path)
    host = tmp_path / "worker-host"
    run("keys", "generate", "worker", "--dir", str(host), "--node", "w-1")
    cert = str(host / "worker.key")

    code, out = run("keys", "add-worker", "w-2", "--config", str(cfg_path), "--public-key", cert)
    assert code == 1 and "bound to 'w-1'" in out  # a certificate speaks for its own name only
    code, out = run("keys", "add-worker", "w-1", "--config", str(cfg_path), "--public-key", cert)
    assert code == 0, out
    registry = KeyRegistry(cfg.path(cfg.analytics.keys_dir))
    assert registry.node_for(load_public(host / "worker.key")) == "w-1"
    assert not list(cfg.path(cfg.analytics.keys_dir).glob("w-1.key_secret"))

    code, out = run("keys", "add-worker", "w-1", "--config", str(cfg_path), "--public-key", cert)
    assert code == 1 and "--force" in out
    code, out = run("keys", "add-worker", "w-local", "--config", str(cfg_path))
    assert code == 0 and "worker secret key" in out

    code, out = run("keys", "list-workers", "--config", str(cfg_path), "--format", "json")
    listed = {r["worker"] for r in json.loads(out)}
    assert {"w-1", "w-local", "analytics-worker"} <= listed

    code, out = run("keys", "revoke-worker", "w-1", "--config", str(cfg_path))
    assert code == 0, out
    registry.refresh()
    assert registry.node_for(load_public(host / "worker.key")) is None
    code, out = run("keys", "revoke-worker", "w-1", "--config", str(cfg_path))
    assert code == 1 and "no authorized key" in out
