"""Components own their sections; the glue's table composes them; one rule resolves paths."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from legion.cli.config import SECTIONS, Config, config_from_dict
from legion.kernel.config import CONFIG_ENV, resolve_path
from legion.kernel.config import resolve_endpoint as resolve_endpoint_rule
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


PATH_KEYS = ("_path", "_dir", "_file", "_files", "_bind")  # how the sections name their paths


def _path_values(obj: object, at: str = "") -> list[tuple[str, str]]:
    """Every (key path, value) of a path-like key in a tree of sections."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [kv for f in dataclasses.fields(obj)
                for kv in _path_values(getattr(obj, f.name), f"{at}.{f.name}".lstrip("."))]
    if isinstance(obj, tuple):
        return [kv for i, x in enumerate(obj) for kv in _path_values(x, f"{at}[{i}]")]
    key = at.rsplit(".", 1)[-1].split("[")[0]
    return [(at, obj)] if isinstance(obj, str) and key.endswith(PATH_KEYS) else []


def test_the_aggregator_is_handed_its_settings_with_every_path_resolved(tmp_path: Path) -> None:
    cfg = config_from_dict({
        "aggregator": {"ingest_bind": "ipc://run/in.sock", "ack_bind": "tcp://127.0.0.1:7"},
        "analytics": {"jobs_bind": "ipc://run/jobs.sock"},
        "storage": {"remote_read_url": "http://127.0.0.1:9/", "remote_read_tls_ca_path": "ca.crt",
                    "remote_read_bearer_token_file": "~/t"},
        "sinks": {"remote_write": [{"name": "p", "url": "http://127.0.0.1:9/w",
                                    "bearer_token_file": "tok", "queue_path": "q"}]},
        "alerting": {"rules_files": ["rules/a.json"]},
        "agent": {"heartbeat_interval_secs": 3.0}}, base_dir=tmp_path)
    base = tmp_path.resolve()
    handed = cfg.aggregator_settings()
    assert not hasattr(handed, "path") and not hasattr(handed, "base_dir")  # not the whole file
    assert handed.agent_heartbeat_secs == 3.0 and handed.analysis_interval == cfg.analysis_interval
    found = dict(_path_values(handed))
    assert len(found) >= 20, found  # the walk sees the sections' paths
    for key, value in found.items():
        unresolved = value.startswith("ipc://") and not value.startswith("ipc:///")
        assert value.startswith(("tcp://", "ipc:///", "/")) and not unresolved, (key, value)
        if not value.startswith("tcp://"):  # the kernel's one rule, applied once by the glue
            raw = _raw_value(cfg, key)
            rule = resolve_endpoint_rule(base, raw) if raw.startswith("ipc://") else \
                str(resolve_path(base, raw))
            assert value == rule, (key, value, raw)
    assert handed.aggregator.ingest_bind == f"ipc://{base}/run/in.sock"
    assert handed.storage.remote_read_bearer_token_file == str(Path("~/t").expanduser())
    assert handed.alerting.rules_files == (str(base / "rules/a.json"),)


def _raw_value(cfg: Config, key: str) -> str:
    """The value at `key` (`sinks.remote_write[0].queue_path`) in the unresolved file."""
    obj: object = cfg
    for part in key.replace("[", ".[").split("."):
        obj = obj[int(part[1:-1])] if part.startswith("[") else getattr(obj, part)  # type: ignore[index]
    assert isinstance(obj, str)
    return obj


def test_the_aggregator_takes_its_settings_not_the_whole_file() -> None:
    """Every aggregator entry point is typed against `AggregatorSettings`, and nothing in the
    aggregator resolves a path again (no `.path(...)` / `.endpoint(...)` calls)."""
    import ast
    import importlib
    import inspect

    from legion.aggregator.config import AggregatorSettings

    entry_points = [("service", "Aggregator.__init__"), ("service", "run_aggregator"),
                    ("receiver", "Receiver.__init__"), ("ingest", "IngestWriter.__init__"),
                    ("receiver", "heartbeat_ms"), ("gateway.app", "create_app"),
                    ("gateway.app", "start_gateway"), ("gateway.hub", "Hub.__init__"),
                    ("alerts.engine", "AlertEngine.__init__"),
                    ("analytics_bridge.bridge", "AnalyticsBridge.__init__"),
                    ("analytics_bridge.bridge", "worker_registry"),
                    ("sinks.table", "build_sinks"), ("remote_query", "query_store")]
    for module_name, qualname in entry_points:
        module = importlib.import_module(f"legion.aggregator.{module_name}")
        fn: object = module
        for part in qualname.split("."):
            fn = getattr(fn, part)
        ann = inspect.signature(fn).parameters["config"].annotation  # type: ignore[arg-type]
        assert getattr(module, ann, None) is AggregatorSettings, (module_name, qualname, ann)
    root = Path(importlib.import_module("legion.aggregator").__file__).parent  # type: ignore[arg-type]
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("path", "endpoint"), f"{py}:{node.lineno}"
