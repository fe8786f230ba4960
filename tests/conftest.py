"""Shared fixtures: a complete setup on free loopback ports, and real subprocesses cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from legion.kernel.ports import free_port, free_ports  # noqa: F401 - the tests' import point

LEGIONCTL = [sys.executable, "-m", "legion.cli"]


@pytest.fixture
def endpoint() -> Iterator[str]:
    """An ipc endpoint for AgentMonitor's local socket, in a directory that does not exist yet
    (the receiver creates it 0700); short, because ipc paths are limited to 107 bytes."""
    d = tempfile.mkdtemp(prefix="lm", dir="/tmp")
    yield f"ipc://{d}/run/monitor.sock"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def receiver(endpoint: str) -> Iterator[Any]:
    """The node agent's MonitorReceiver bound at `endpoint`."""
    import zmq

    from legion.node_agent.monitor_receiver import MonitorReceiver

    ctx = zmq.Context()
    r = MonitorReceiver(ctx, endpoint)
    yield r
    r.close()
    ctx.term()


@contextlib.contextmanager
def gateway_thread(config: Any, make_app: Callable[[], Any],
                   port: int | None = None) -> Iterator[Any]:
    """The real gateway (the app `make_app` builds) served on its own event loop thread, so
    blocking CLI calls (and browsers) can reach it; yields the running server. `port` as in
    `start_gateway` (0: a free one; None: the configured one)."""
    from legion.aggregator.gateway import start_gateway, stop_gateway

    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            holder["server"] = loop.run_until_complete(start_gateway(make_app(), config,
                                                                      port=port))
        except BaseException as exc:  # raised in the test's thread below
            holder["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(stop_gateway(holder["server"]))
        loop.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(30), "gateway did not start"
    if "error" in holder:
        raise holder["error"]
    try:
        yield holder["server"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(15)


def wait_for(pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll `pred` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s (last value {last!r})")


def make_setup(directory: Path, *, gather_commits: bool = False, **overrides: Any) -> Path:
    """`legionctl init` into `directory` with every port free; return the config path.

    Commits are not gathered (`aggregator.commit_max_delay_ms` 0), so a test that waits for
    stored data does not wait up to the production 3 s per wait; `gather_commits=True` keeps what
    `legionctl init` writes, for tests whose subject is production timing. `overrides` win."""
    from legion.cli.setup_cmds import use_free_ports, write_setup

    made = write_setup(directory, force=True)
    path = Path(made["config"])
    cfg = json.loads(path.read_text())
    use_free_ports(cfg)
    if not gather_commits:
        cfg["aggregator"]["commit_max_delay_ms"] = 0
    for section, values in overrides.items():
        if isinstance(values, dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    path.write_text(json.dumps(cfg, indent=2))
    return path


class Proc:
    """A real `legionctl` subprocess with its output in a log file (`program`: another
    `legionctl`, e.g. an installed wheel's; `cwd`: where it starts)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, *,
                 program: list[str] = LEGIONCTL, cwd: Path | None = None) -> None:
        self.args = args
        self.log = log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen(program + args, stdout=self._fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})}, cwd=cwd,
                                  start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the process (and its group), for real."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, wait, and SIGKILL if it did not stop in time; return the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._fh.close()
        return self.p.returncode


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `legionctl` subprocesses; every one is stopped when the test ends."""
    started: list[Proc] = []

    def start(*args: str, name: str | None = None, env: dict[str, str] | None = None) -> Proc:
        log = tmp_path / f"{name or args[0]}-{len(started)}.log"
        p = Proc(list(args), log, env)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


@pytest.fixture
def setup_dir(tmp_path: Path) -> Path:
    """A fresh, complete setup (config path returned) on free loopback ports."""
    return make_setup(tmp_path / "legion")
