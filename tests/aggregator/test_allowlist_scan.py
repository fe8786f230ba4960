"""The receiver rescans the allowlist's key files only when the directory changed (a key added
or removed), or after `ALLOWLIST_FULL_SCAN_SECS`: not every second whatever happened (a scan
stats every key file on the receiving thread)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

from legion.aggregator import receiver as receiver_module
from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.receiver import Receiver
from legion.aggregator.telemetry import IngestTelemetry
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.curve import load_secret
from tests.conftest import make_setup, wait_for


class CountingRegistry(KeyRegistry):
    """A real registry that counts its directory scans."""

    scans = 0

    def refresh(self) -> bool:
        CountingRegistry.scans += 1
        return super().refresh()


@contextmanager
def running_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     full_scan_secs: float) -> Iterator[tuple[Path, KeyRegistry, Any]]:
    """A real receiver over a setup with key n1, looking at its keys every 0.1 s and scanning
    them all every `full_scan_secs`: (keys directory, registry, config)."""
    monkeypatch.setattr(receiver_module, "ALLOWLIST_POLL_SECS", 0.1)
    monkeypatch.setattr(receiver_module, "ALLOWLIST_FULL_SCAN_SECS", full_scan_secs)
    cfg = load_config(make_setup(tmp_path))
    add_agent_key(cfg, "n1")
    keys = Path(cfg.aggregator.authorized_keys_dir)
    registry = CountingRegistry(keys)
    ctx = zmq.Context()
    recv = Receiver(ctx, cfg, load_secret(Path(cfg.aggregator.secret_key_path)), registry,
                    queue.Queue(maxsize=10), IngestTelemetry())
    recv.start()
    try:
        assert recv.ready.wait(10) and recv.bind_error is None
        yield keys, registry, cfg
    finally:
        recv.stop()
        recv.join(10)
        ctx.term()


def test_keys_are_rescanned_when_the_directory_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_receiver(tmp_path, monkeypatch, 3600.0) as (keys, registry, cfg):
        start = CountingRegistry.scans
        time.sleep(1.5)  # ~15 looks at the directory, nothing changed
        assert CountingRegistry.scans == start
        add_agent_key(cfg, "n2")  # a key added: scanned, the new node known
        assert wait_for(lambda: "n2" in registry.nodes().values(), 20, 0.05)
        assert CountingRegistry.scans > start
        scanned = CountingRegistry.scans
        next(keys.glob("n2*.key")).unlink()  # a key removed (revoked): scanned, the node gone
        assert wait_for(lambda: "n2" not in registry.nodes().values(), 20, 0.05)
        assert CountingRegistry.scans > scanned


def test_a_key_rewritten_in_place_is_picked_up_by_the_periodic_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_receiver(tmp_path, monkeypatch, 1.0) as (keys, registry, _cfg):
        key = next(keys.glob("n1*.key"))
        before = registry.nodes()
        # the same file rewritten in place, bound to another node: only its own mtime moves
        key.write_text(key.read_text().replace('node = "n1"', 'node = "n9"'))
        assert 'node = "n9"' in key.read_text()
        assert wait_for(lambda: registry.nodes() != before, 30, 0.05)
        assert set(registry.nodes().values()) >= {"n9"}
