"""Issue 13, small ones: `legionctl series`, queries that match nothing say so, big numbers in
tables print every digit. Real gateway (thread) over a real DuckDB store; CliRunner and one
real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from legion.aggregator.gateway import TokenStore, create_app
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import Config, config_to_dict, load_config
from legion.cli.main import cli
from legion.cli.output import render
from legion.kernel.config import CONFIG_FILENAME
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.conftest import free_port, gateway_thread


def test_series_listing_and_queries_that_match_nothing(tmp_path: Path) -> None:
    raw = config_to_dict(Config())
    raw["security"]["enable_tls"] = False
    raw["dashboard_config"]["websocket_port"] = free_port()
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(raw))
    cfg_path = str(tmp_path / CONFIG_FILENAME)
    config = load_config(cfg_path).aggregator_settings()
    tokens = TokenStore(Path(config.aggregator.tokens_path))
    admin = tokens.add("admin", "admin")
    store = Store(config.storage.db_path)
    now = int(time.time() * 1000)
    store.write([IncomingBatch("web-1", 1, 1, MetricsBatch.from_samples([
        Sample("system_cpu_usage_percent", (), 12.5, now),
        Sample("system_disk_used_bytes", canonical_labels({"mount": "/"}), 71_760_400.0, now),
    ]), now)])
    run = CliRunner().invoke
    try:
        with gateway_thread(config, lambda: create_app(config, store, lambda: {}, tokens)):
            base = ["--config", cfg_path, "--token", admin]
            res = run(cli, ["series", *base])
            assert res.exit_code == 0, res.output
            assert "system_cpu_usage_percent" in res.stdout and "mount=/" in res.stdout
            res = run(cli, ["series", "--metric", "system_disk_*", "--format", "json", *base])
            assert [r["metric"] for r in json.loads(res.stdout)] == ["system_disk_used_bytes"]
            res = run(cli, ["series", "--node", "nope", *base])
            assert res.exit_code == 1 and "nothing matched" in res.stderr

            res = run(cli, ["query", "no_such_metric", *base])
            assert res.exit_code == 1
            assert "nothing matched" in res.stderr and "legionctl series" in res.stderr
            res = run(cli, ["query", "system_cpu_usage_percent", "--node", "web-2", *base])
            assert res.exit_code == 1 and "node 'web-2'" in res.stderr
            res = run(cli, ["query", "system_cpu_usage_percent", "--since", "1w", "--until",
                            "6d", *base])
            assert res.exit_code == 0 and "1 series exist" in res.stderr

            res = run(cli, ["query", "system_disk_used_bytes", *base])
            assert res.exit_code == 0 and "71760400" in res.stdout and "e+07" not in res.stdout

            # and as a real process: the new verb is registered in the installed CLI
            proc = subprocess.run([sys.executable, "-m", "legion.cli", "series", *base],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0 and "web-1" in proc.stdout, proc.stderr
    finally:
        store.close()


def test_table_cells_keep_every_digit() -> None:
    out = render([{"bytes": 71_760_400.0, "ratio": 0.123456789, "big": 1.5e20,
                   "mid": 12_345_678.9}], "table")
    assert "71760400" in out and "0.123457" in out and "1.5e+20" in out and "12345678.9" in out
