"""The peers: Debian's VictoriaMetrics, Prometheus, node_exporter and collectd, started on
127.0.0.1 with temp data and explicit listen addresses; prerequisites, versions, the machine."""

from __future__ import annotations

import http.client
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from legion.kernel.ports import free_port  # noqa: F401 - used by the row modules too

APT = {"victoria-metrics": "victoria-metrics", "prometheus": "prometheus",
       "prometheus-node-exporter": "prometheus-node-exporter", "collectd": "collectd"}
"""Binary -> the Debian package that installs it."""
PIP = ("duckdb", "zmq", "aiohttp", "psutil", "numpy")
"""Python modules the bench imports (all in `pip install -e .`)."""


def which(binary: str) -> str | None:
    """Path of a binary, looking in the sbin folders too (collectd lives in /usr/sbin)."""
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")


def check_prerequisites() -> None:
    """Print the install commands for whatever is missing and exit 2; install nothing."""
    missing_apt = sorted({pkg for b, pkg in APT.items() if which(b) is None})
    missing_pip = []
    for mod in PIP:
        try:
            __import__(mod)
        except ImportError:
            missing_pip.append(mod)
    if not missing_apt and not missing_pip:
        return
    print("bench/peers/run.py needs software that is not installed (it installs nothing):",
          file=sys.stderr)
    if missing_apt:
        print(f"  sudo apt-get install -y {' '.join(missing_apt)}", file=sys.stderr)
    if missing_pip:
        print("  python3 -m pip install -e '.[dev]'   # missing: " + ", ".join(missing_pip),
              file=sys.stderr)
    raise SystemExit(2)


def _first_line(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    out = (res.stdout or res.stderr).strip().splitlines()
    return out[0] if out else "?"


def versions() -> dict[str, str]:
    """Versions of every part compared."""
    import duckdb

    def deb(pkg: str) -> str:
        return _first_line(["dpkg-query", "-W", "-f=${Version}", pkg])

    git = _first_line(["git", "-C", str(Path(__file__).resolve().parents[2]), "log", "-1",
                       "--format=%h %cs"])
    return {"legion": git, "python": platform.python_version(), "duckdb": duckdb.__version__,
            **{b: f"{pkg} {deb(pkg)} (Debian)" for b, pkg in APT.items()}}


PROBE_PAGES = 1024
"""Pages (4 MiB) the marker's page probe reads."""


def wake_cost(sleeps: int = 5) -> dict[str, float]:
    """A marker of the machine's state printed with every table: what work costs when done
    after 1 s asleep, as a process working once a second does it, against back to back.

    * `hot_us` / `cold_us`: CPU microseconds of one fixed Python step (read /proc/stat and
      /proc/meminfo, build and msgpack-encode 120 samples), median of 30 back to back and of
      `sleeps` each taken after 1 s asleep;
    * `page_hot_ns` / `page_cold_ns`: wall nanoseconds per 4 KiB page to read one byte of each of
      `PROBE_PAGES` pages of an anonymous mapping, back to back and after 1 s asleep.

    On one host in one day the cold figures moved several-fold with no code change, and every CPU
    row of the 1 s processes with them (docs/peers.md, sessions 11-12;
    bench/results/host_footprint_s12.txt): compare this line before comparing the CPU rows of two
    tables."""
    import mmap

    import msgpack

    def step() -> None:
        with open("/proc/stat", "rb") as f:
            stat = f.read()
        with open("/proc/meminfo", "rb") as f:
            f.read()
        msgpack.packb([(f"m_{i % 20}", (("cpu", str(i)),), float(len(stat) + i), i)
                       for i in range(120)])

    def timed() -> float:
        t = time.thread_time_ns()
        step()
        return (time.thread_time_ns() - t) / 1000

    buf = mmap.mmap(-1, PROBE_PAGES * mmap.PAGESIZE)
    offsets = range(0, PROBE_PAGES * mmap.PAGESIZE, mmap.PAGESIZE)
    for off in offsets:
        buf[off] = 1  # every page present before the probe

    def touch_ns() -> float:
        t = time.perf_counter_ns()
        for off in offsets:
            buf[off]  # noqa: B018 - the read is the probe
        return (time.perf_counter_ns() - t) / PROBE_PAGES

    for _ in range(3):
        step()
        touch_ns()
    hot = sorted(timed() for _ in range(30))[15]
    page_hot = sorted(touch_ns() for _ in range(30))[15]
    cold, page_cold = [], []
    for _ in range(sleeps):
        time.sleep(1.0)
        cold.append(timed())
        time.sleep(1.0)
        page_cold.append(touch_ns())
    buf.close()
    mid = len(cold) // 2
    return {"hot_us": hot, "cold_us": sorted(cold)[mid],
            "page_hot_ns": page_hot, "page_cold_ns": sorted(page_cold)[mid]}


def machine() -> str:
    """One line: CPU model, cores, memory, kernel, load at start."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, Linux {platform.release()}, "
            f"load average at start {load}")


def http_get(url: str, timeout: float = 30, headers: dict[str, str] | None = None) -> bytes:
    """GET a loopback URL (a new connection each time, as urllib does)."""
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
        return bytes(r.read())


class KeepAlive:
    """GETs on one persistent HTTP/1.1 connection to a loopback server (as a poller,
    `requests.Session` or a browser asks), opened on the first; a refused answer or a connection
    the server closed is an error, never a silent reconnect."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(base)
        assert parts.hostname in ("127.0.0.1", "::1", "localhost"), base  # loopback only
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = headers or {}
        self.opened = False

    def get(self, target: str) -> bytes:
        """The body of a 200 answer to `GET target` (path and query)."""
        if self.opened and self.conn.sock is None:
            raise SystemExit(f"{target}: the server closed the keep-alive connection")
        self.conn.request("GET", target, headers=self.headers)
        self.opened = True
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"{target}: {r.status} {body[:200]!r}")
        return body

    def get_url(self, url: str) -> bytes:
        """`get` of a whole URL on this connection's server."""
        parts = urllib.parse.urlsplit(url)
        return self.get(parts.path + (f"?{parts.query}" if parts.query else ""))


def wait_http(url: str, timeout: float = 60) -> None:
    """Poll until the URL answers."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            http_get(url, 5)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def wait_quiet(*pids: int, cpu_below: float = 0.1, window_s: float = 0.5, windows: int = 2,
               timeout: float = 20.0) -> float:
    """Poll until each process in `pids` has used under `cpu_below` of one core in `windows`
    windows of `window_s` in a row (their start-up work done: what a fixed settle sleep guessed
    at); return the seconds waited. At `timeout` it returns anyway, saying so: a busy machine is
    no error."""
    import psutil

    procs = [psutil.Process(pid) for pid in pids]

    def cpu() -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in procs]

    start = time.monotonic()
    quiet, last = 0, cpu()
    while quiet < windows and time.monotonic() - start < timeout:
        time.sleep(window_s)
        now = cpu()
        busy = any(b - a >= cpu_below * window_s for a, b in zip(last, now, strict=True))
        quiet, last = (0 if busy else quiet + 1), now
    waited = time.monotonic() - start
    if quiet < windows:
        print(f"  (pids {pids} still busy after {waited:.0f} s; measuring anyway)", flush=True)
    return waited


class Peer:
    """A peer process in its own session, with its log; `stop()` ends it (and only it)."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.cmd = cmd
        self._log = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _wait_or_stop(peer: Peer, url: str) -> None:
    try:
        wait_http(url)
    except BaseException:
        peer.stop()
        raise


def start_victoria_metrics(work: Path) -> tuple[Peer, str]:
    """VictoriaMetrics single-node: HTTP on a free loopback port, data in `work`; its other
    listeners (graphite, influx, opentsdb) are off unless given an address, so they stay off."""
    port = free_port()
    data = work / "vm-data"
    data.mkdir(parents=True, exist_ok=True)
    peer = Peer(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}",
                 f"-storageDataPath={data}", "-retentionPeriod=100y",
                 "-search.latencyOffset=0s", "-search.disableCache",
                 "-loggerLevel=ERROR"], work / "vm.log")
    url = f"http://127.0.0.1:{port}"
    _wait_or_stop(peer, url + "/health")
    return peer, url


def start_node_exporter(work: Path) -> tuple[Peer, str]:
    """node_exporter with its default collectors on a free loopback port."""
    port = free_port()
    peer = Peer(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}"],
                work / "node_exporter.log")
    url = f"http://127.0.0.1:{port}"
    _wait_or_stop(peer, url + "/metrics")
    return peer, url


def start_prometheus(work: Path, target: str, interval_s: float = 1.0) -> tuple[Peer, str]:
    """Prometheus scraping `target` (host:port) every `interval_s`, TSDB in `work`."""
    port = free_port()
    cfg = work / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: {int(interval_s * 1000)}ms
  evaluation_interval: 60s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['{target}']
""")
    peer = Peer(["prometheus", f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
                 f"--storage.tsdb.path={work / 'prom-data'}"], work / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    _wait_or_stop(peer, url + "/-/ready")
    return peer, url


def start_collectd(work: Path, interval_s: float = 1.0) -> tuple[Peer, Path]:
    """collectd in the foreground with the usual host plugins, writing CSV into `work`."""
    out = work / "collectd-csv"
    out.mkdir(parents=True, exist_ok=True)
    cfg = work / "collectd.conf"
    cfg.write_text(f"""Hostname "bench"
FQDNLookup false
BaseDir "{work}"
PIDFile "{work}/collectd.pid"
Interval {interval_s}
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin interface
LoadPlugin disk
LoadPlugin df
LoadPlugin swap
LoadPlugin processes
LoadPlugin csv
<Plugin csv>
  DataDir "{out}"
  StoreRates false
</Plugin>
""")
    peer = Peer([which("collectd") or "collectd", "-f", "-C", str(cfg)], work / "collectd.log")
    return peer, out
