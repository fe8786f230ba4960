"""The aggregator's event loop (aggregator/event_loop.py, `aggregator.event_loop`): uvloop by
default, asyncio's own when told so or when uvloop cannot be imported; the running aggregator
says which one in `/api/v1/status` (`gateway.event_loop`)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from legion.aggregator.event_loop import loop_factory, loop_name, run
from legion.cli.client import ApiClient
from legion.cli.config import config_from_dict, load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.errors import ConfigError
from tests.conftest import make_setup, wait_for


async def _running_loop() -> str:
    return loop_name(asyncio.get_running_loop())


def test_uvloop_runs_when_asked_and_installed() -> None:
    import uvloop  # a project dependency: its absence fails here

    factory, name = loop_factory("uvloop")
    assert name == "uvloop" and factory is uvloop.new_event_loop
    assert run(_running_loop(), "uvloop") == "uvloop"


def test_asyncio_runs_when_asked() -> None:
    assert loop_factory("asyncio")[1] == "asyncio"
    assert run(_running_loop(), "asyncio") == "asyncio"


def test_a_missing_uvloop_falls_back_to_asyncio_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` sees uninstalled
    with caplog.at_level(logging.WARNING, logger="legion.aggregator.event_loop"):
        assert run(_running_loop(), "uvloop") == "asyncio"
    assert any("event=event_loop_fallback" in r.getMessage() for r in caplog.records)


def test_event_loop_key_is_checked_with_its_path() -> None:
    assert config_from_dict({}).aggregator.event_loop == "uvloop"
    with pytest.raises(ConfigError) as err:
        config_from_dict({"aggregator": {"event_loop": "trio"}})
    assert any(p.startswith("aggregator.event_loop:") for p in err.value.problems)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_running_aggregator_reports_its_loop_and_answers(tmp_path: Path, procs,
                                                         loop: str) -> None:
    cfg_path = make_setup(tmp_path / "legion", aggregator={"event_loop": loop})
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "n1")
    agg = procs("aggregator", "run", "--config", str(cfg_path), name="agg")
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip(), timeout=5)

    def status() -> dict | None:
        try:
            return client.get("/api/v1/status")
        except Exception:  # noqa: BLE001 - not up yet
            return None
    st = wait_for(status, 90)
    assert st["gateway"]["event_loop"] == loop
    assert client.get("/api/v1/whoami")["role"] == "admin"
    assert client.get("/api/v1/query", metric="no_such_metric", step="1m", since="5m") == []
    assert f"event=event_loop wanted={loop} running={loop}" in agg.output()
    assert json.loads(cfg_path.read_text())["aggregator"]["event_loop"] == loop
