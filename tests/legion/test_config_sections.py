"""Components own their sections; the glue's table composes them; one rule resolves paths."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from legion.cli.config import SECTIONS, Config, config_from_dict
from legion.kernel.config import CONFIG_ENV, resolve_path
from legion.node_agent.monitor import resolve_endpoint

COMPONENTS = ("legion.node_agent.", "legion.aggregator.", "legion.analytics.")
SEED_VALUES = {"collection_interval", "analysis_interval", "base_dir"}


def test_every_section_is_in_the_table_and_owned_by_a_component() -> None:
    sections = {f.name for f in dataclasses.fields(Config)} - SEED_VALUES
    assert sections == set(SECTIONS)
    for name in SECTIONS:
        owner = type(getattr(Config(), name)).__module__
        assert owner.startswith(COMPONENTS) and owner.endswith(".config"), (name, owner)
        validate = getattr(getattr(Config(), name), "validate", None)
        assert validate is None or validate() == [], name  # the defaults are valid


def test_components_are_handed_their_sections_with_paths_resolved(tmp_path: Path) -> None:
    cfg = config_from_dict({"agent": {"state_dir": "st", "keys_dir": "/abs/keys"},
                            "storage": {"db_path": "db/x.duckdb", "archive_dir": "arch"},
                            "collection_interval": 2.5}, base_dir=tmp_path)
    base = tmp_path.resolve()
    handed = cfg.agent_settings()
    assert handed.agent.state_dir == str(base / "st") and handed.agent.keys_dir == "/abs/keys"
    assert handed.agent.monitor_endpoint == f"ipc://{base}/run/agent-monitor.sock"
    assert handed.collection_interval == 2.5
    assert handed.max_message_bytes == cfg.aggregator.max_message_bytes
    storage = cfg.storage.resolved(cfg.base_dir)  # one rule: the config's folder, not the db's
    assert storage.archive_dir == str(base / "arch") == str(resolve_path(base, "arch"))
    worker = cfg.worker_settings()
    assert worker.keys_dir == str(base / "keys/workers")
    assert worker.server_public_key_path == str(base / "keys/aggregator.key")


def test_the_monitor_reads_the_agent_section_of_the_discovered_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEGION_MONITOR_ENDPOINT", raising=False)
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"agent": {"monitor_endpoint": "ipc://m/{node}.sock"}}))
    monkeypatch.setenv(CONFIG_ENV, str(f))
    monkeypatch.setenv("LEGION_NODE", "n1")
    assert resolve_endpoint() == f"ipc://{tmp_path.resolve()}/m/n1.sock"
    f.write_text(json.dumps({"agent": {"monitor_endpoint": 5}}))  # bad: logged, defaults used
    assert resolve_endpoint().endswith("/run/agent-monitor.sock")
