"""`legionctl demo`: the whole stack on this machine, as real processes, with embedded defaults.

The demo runs exactly the production code paths: it writes a setup with `write_setup`, then starts
`legionctl aggregator run`, one `legionctl agent run` per simulated host, the analytics workers
and the Enterprise Legion simulator as child processes, and stops all of them on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion.cli.config import Config, load_config
from legion.kernel.config import CONFIG_FILENAME
from legion.kernel.errors import LegionError

DEMO_HOSTS = ("legion-hq", "gpu-node-1", "vps-eu-1")
STOP_TIMEOUT_SECS = 10.0
READY_TIMEOUT_SECS = 90.0
CHILD_PYTHON = [sys.executable, "-P"]
"""Children run with -P (safe path): the working directory is never put on sys.path, so a
checkout's `legion/` cannot shadow the installed package when the demo runs from it."""


@dataclass
class Child:
    """One child process of the demo."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Demo:
    """A running demo: its directory, config and children."""

    directory: Path
    config: Config
    token: str
    hosts: tuple[str, ...]
    children: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.security.enable_tls else "http"
        return (f"{scheme}://{self.config.aggregator.api_host}:"
                f"{self.config.dashboard_config.websocket_port}/#token={self.token}")

    def start(self, argv: list[str], name: str) -> Child:
        """Start one child (its own process group, output in DIR/logs/NAME.log)."""
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        with open(log, "ab") as fh:
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        child = Child(name, p, log)
        self.children.append(child)
        return child

    def stop(self) -> None:
        """SIGTERM every child (newest first), wait, SIGKILL what is left: nothing survives."""
        for c in reversed(self.children):
            if c.popen.poll() is None:
                _signal_group(c.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECS
        for c in self.children:
            try:
                c.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(c.popen.pid, signal.SIGKILL)  # also reaps grandchildren
            c.popen.wait()

    def dead(self) -> list[Child]:
        """Children that exited."""
        return [c for c in self.children if c.popen.poll() is not None]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def prepare(directory: Path | None, port: int | None, hosts: tuple[str, ...]) -> Demo:
    """Create (or reuse) the demo directory with keys for every simulated host."""
    from legion.cli.client import TOKEN_FILENAME
    from legion.cli.setup_cmds import add_agent_key, use_free_ports, write_setup

    d = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="legion-demo-"))
    d = d.expanduser().resolve()
    cfg_path = d / CONFIG_FILENAME
    if not cfg_path.exists():
        # Free ports for everything the demo starts (the web port too unless --port), so it
        # runs beside an aggregator, a test run or another demo.
        write_setup(d)
        raw = json.loads(cfg_path.read_text())
        use_free_ports(raw, web=port)
        # one monitor socket per simulated host, since the demo runs several on one machine
        raw["agent"]["monitor_endpoint"] = "ipc://" + str(d / "run" / "{node}-monitor.sock")
        # Raw points, not 5-minute maxima: a first model of maxima needs 50 buckets (over 4 h),
        # and the demo's faults last 90 s (docs/analytics.md, "Live detection on 5-minute maxima").
        raw["analytics"]["detect_step_secs"] = 0
        cfg_path.write_text(json.dumps(raw, indent=2) + "\n")
    config = load_config(cfg_path)
    for host in hosts:
        if not (config.path(config.agent.keys_dir) / f"{host}.key_secret").exists():
            add_agent_key(config, host)
    token = (d / TOKEN_FILENAME).read_text().strip()
    return Demo(d, config, token, hosts)


def launch(demo: Demo, workers: int, simulate: bool = True) -> None:
    """Start aggregator, node agents, analytics workers and the simulator."""
    py = [*CHILD_PYTHON, "-m", "legion.cli"]
    cfg = str(demo.directory / CONFIG_FILENAME)
    demo.start(py + ["aggregator", "run", "--config", cfg], "aggregator")
    for host in demo.hosts:
        demo.start(py + ["agent", "run", "--config", cfg, "--node", host], f"agent-{host}")
    if workers > 0:
        demo.start(py + ["analytics", "run", "--config", cfg, "--workers", str(workers)],
                   "analytics")
    if simulate:
        endpoints = [demo.config.endpoint(demo.config.agent.monitor_endpoint.replace(
            "{node}", h)) for h in demo.hosts]
        demo.start([*CHILD_PYTHON, "-m", "legion.demo.simulator", "--endpoints",
                    ",".join(endpoints), "--demo-faults"], "simulator")


def wait_ready(demo: Demo, get: Callable[[str], Any],
               timeout: float = READY_TIMEOUT_SECS) -> None:
    """Return once the aggregator answers its API; raise with its last log line if it exited
    (or never answered) first."""
    deadline = time.monotonic() + timeout
    agg = demo.children[0]
    while time.monotonic() < deadline:
        if agg.popen.poll() is not None:
            raise LegionError(f"the demo's aggregator exited (code {agg.popen.returncode}): "
                              f"{_last_line(agg.log)}")
        try:
            get("/api/v1/status")
            return
        except LegionError:
            time.sleep(0.2)
    raise LegionError(f"the demo's aggregator did not answer in {timeout:.0f} s; see {agg.log}")


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"see {log}"
    return lines[-1][:300] if lines else f"no output; see {log}"


RATE_WINDOW_SECS = 10.0
"""points/s is taken over this much of the past: the aggregator gathers commits at low rates
(`aggregator.commit_max_delay_ms`, 3 s), so over one 2 s status interval alone the rate read 0
between two commits."""


def status_line(get: Callable[[str], Any], seen: deque[tuple[float, float]],
                clock: Callable[[], float] = time.monotonic) -> str:
    """One compact line: points/s (over `RATE_WINDOW_SECS`; `seen` keeps the (time, points)
    samples between calls), hosts, agents, alerts, rejections."""
    st = get("/api/v1/status")
    ingest = st.get("ingest", {})
    now = clock()
    pts = float(ingest.get("points_accepted", 0))
    seen.append((now, pts))
    while len(seen) > 2 and now - seen[1][0] >= RATE_WINDOW_SECS:
        seen.popleft()  # the oldest kept is the newest sample at least a window old
    t0, p0 = seen[0]
    rate = (pts - p0) / (now - t0) if now > t0 else 0.0
    try:
        fleet = get("/api/v1/fleet")
        summary = fleet.get("summary", {})
        hosts, agents = summary.get("hosts", 0), summary.get("agents", 0)
        alerts = sum(1 for _ in fleet.get("alerts", [])) or summary.get("critical", 0)
    except LegionError:
        hosts = agents = alerts = 0
    return (f"points/s {rate:8.0f} | stored {int(pts):>10,} | hosts {hosts} | agents {agents:>2} "
            f"| alerts {alerts} | rejected {ingest.get('rejected_total', 0)}")
