"""The receiver rescans the allowlist's key files only when the directory changed (a key added
or removed), or after `ALLOWLIST_FULL_SCAN_SECS`: not every second whatever happened (a scan
stats every key file on the receiving thread)."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest
import zmq

from legion.aggregator import receiver as receiver_module
from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.receiver import Receiver
from legion.aggregator.telemetry import IngestTelemetry
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.curve import load_secret
from tests.conftest import make_setup


class CountingRegistry(KeyRegistry):
    """A real registry that counts its directory scans."""

    scans = 0

    def refresh(self) -> bool:
        CountingRegistry.scans += 1
        return super().refresh()


def wait_for(cond, secs: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_keys_are_rescanned_when_the_directory_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiver_module, "ALLOWLIST_POLL_SECS", 0.1)
    monkeypatch.setattr(receiver_module, "ALLOWLIST_FULL_SCAN_SECS", 3600.0)
    cfg = load_config(make_setup(tmp_path))
    add_agent_key(cfg, "n1")
    registry = CountingRegistry(Path(cfg.aggregator.authorized_keys_dir))
    ctx = zmq.Context()
    recv = Receiver(ctx, cfg, load_secret(Path(cfg.aggregator.secret_key_path)), registry,
                    queue.Queue(maxsize=10), IngestTelemetry())
    recv.start()
    try:
        assert recv.ready.wait(10) and recv.bind_error is None
        start = CountingRegistry.scans
        time.sleep(1.5)  # ~15 looks at the directory, nothing changed
        assert CountingRegistry.scans == start
        add_agent_key(cfg, "n2")  # a key added: scanned, the new node known
        assert wait_for(lambda: "n2" in registry.nodes().values())
        assert CountingRegistry.scans > start
        scanned = CountingRegistry.scans
        key = next(Path(cfg.aggregator.authorized_keys_dir).glob("n2*.key"))
        key.unlink()  # a key removed (revoked): scanned again, the node gone
        assert wait_for(lambda: "n2" not in registry.nodes().values())
        assert CountingRegistry.scans > scanned
    finally:
        recv.stop()
        recv.join(10)
        ctx.term()


def test_a_key_rewritten_in_place_is_picked_up_by_the_periodic_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiver_module, "ALLOWLIST_POLL_SECS", 0.1)
    monkeypatch.setattr(receiver_module, "ALLOWLIST_FULL_SCAN_SECS", 1.0)
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
        key = next(keys.glob("n1*.key"))
        before = registry.nodes()
        # the same file rewritten in place, bound to another node: only its own mtime moves
        key.write_text(key.read_text().replace('node = "n1"', 'node = "n9"'))
        assert 'node = "n9"' in key.read_text()
        assert wait_for(lambda: registry.nodes() != before, secs=30)
        assert set(registry.nodes().values()) >= {"n9"}
    finally:
        recv.stop()
        recv.join(10)
        ctx.term()
