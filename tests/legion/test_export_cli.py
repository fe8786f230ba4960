"""`legionctl export` through the running aggregator: Parquet files equal to what query returns."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from tests.conftest import LEGIONCTL, wait_for

pytestmark = pytest.mark.timeout(120)


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(LEGIONCTL + list(args) + ["--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def test_export_round_trips_exactly(setup_dir: Path, procs, tmp_path: Path) -> None:
    # The export and the query run right after the agent stops: its last batches must not be
    # still gathering for their commit (`aggregator.commit_max_delay_ms`), so commit at once.
    raw = json.loads(setup_dir.read_text())
    raw["aggregator"]["commit_max_delay_ms"] = 0
    setup_dir.write_text(json.dumps(raw, indent=2))
    add_agent_key(load_config(setup_dir), "n1")
    procs("aggregator", "run", "--config", str(setup_dir))
    agent = procs("agent", "run", "--config", str(setup_dir), "--node", "n1")
    wait_for(lambda: (r := run(setup_dir, "query", "system_memory_usage_percent", "--since",
                                "5m", "--format", "json")).returncode == 0 and
             len(json.loads(r.stdout)) >= 3, timeout=40, interval=1)
    agent.stop()
    time.sleep(1.5)  # the last batches committed
    until = int(time.time() * 1000)
    out = tmp_path / "archive"
    r = run(setup_dir, "export", "--since", "10m", "--until", str(until), "--metric",
            "system_memory_usage_percent", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "exported" in r.stdout
    files = list(out.glob("date=*/*.parquet"))
    assert files, "hive-partitioned files expected"
    got = duckdb.sql(f"SELECT node, metric, ts_ms, value FROM read_parquet('{out}/**/*.parquet', "
                     "hive_partitioning = true) ORDER BY ts_ms").fetchall()
    q = json.loads(run(setup_dir, "query", "system_memory_usage_percent", "--since", "10m",
                       "--until", str(until), "--format", "json").stdout)
    want = sorted((x["node"], x["metric"], x["ts_ms"], x["value"]) for x in q)
    assert sorted(got) == want and len(want) >= 3

    bad = run(setup_dir, "export", "--since", "10m", "--out", str(out), "--metric", "bad name")
    assert bad.returncode != 0 and bad.stderr.startswith("error:")
