"""Node agent overhead: CPU (% of one core) and RSS of the real agent process, against a baseline.

Usage: `python bench/agent_overhead.py [--duration 60] [--interval 1.0] [--warmup 5] [--json]`

What runs, all on loopback with free ports, in a temporary directory:
  * `legionctl init --dir D`, `legionctl keys add-agent NODE --config D/monitoring_config.json`,
    then `legionctl aggregator run` and `legionctl agent run --node NODE` as subprocesses (the
    aggregator is there so acks flow and the agent's spool behaves as in production; it is not
    measured);
  * in the same run, the baseline: a bare psutil → msgpack → CurveZMQ PUB loop of 63 metrics
    (inline below), publishing at the same interval to a Curve SUB that this script binds;
  * and "core": our collectors + Scheduler + MetricsBatch/encode + CurveZMQ PUB in a bare
    process (no spool, no acks), which isolates what the collectors and scheduler cost and
    counts the samples of each tick exactly. It still runs when the agent cannot (`--no-agent`).
Both processes are measured over the same window, after a warm-up that leaves start-up (imports,
key loading) out: CPU = (user + system time) / wall time, RSS sampled every second.
Agent metrics per tick = distinct series the aggregator stored for the node (gateway API).
Targets (issue 2): agent ≤ 0.3 % CPU, ≤ 30 MiB RSS, ≥ 60 metrics per tick.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

NODE = "bench-node"
TARGET_CPU_PERCENT = 0.3
TARGET_RSS_MIB = 30.0
TARGET_METRICS = 60
BASELINE_METRICS = 63

# The baseline child: exactly what the issue calls "a bare psutil → msgpack → CurveZMQ loop".
BASELINE = r'''
import sys, time, psutil, msgpack, zmq
endpoint, server_public, interval = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3])
public, secret = zmq.curve_keypair()
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.curve_publickey, pub.curve_secretkey, pub.curve_serverkey = public, secret, server_public
pub.connect(endpoint)

def busy(t):
    total = sum(t) - getattr(t, "guest", 0) - getattr(t, "guest_nice", 0)
    return total, total - t.idle - getattr(t, "iowait", 0)

prev = [busy(c) for c in psutil.cpu_times(percpu=True)]
start, k, seq = time.monotonic(), 0, 0
while True:
    cores = psutil.cpu_times(percpu=True)
    now = [busy(c) for c in cores]
    m = {}
    for i, (a, b) in enumerate(zip(prev, now)):
        d = b[0] - a[0]
        m["cpu%d" % i] = 100.0 * (b[1] - a[1]) / d if d > 0 else 0.0
    prev = now
    for k2, v in psutil.cpu_times()._asdict().items(): m["cpu_" + k2] = v
    for k2, v in psutil.virtual_memory()._asdict().items(): m["mem_" + k2] = v
    for k2, v in psutil.swap_memory()._asdict().items(): m["swap_" + k2] = v
    for k2, v in psutil.disk_usage("/")._asdict().items(): m["disk_" + k2] = v
    for k2, v in psutil.disk_io_counters()._asdict().items(): m["io_" + k2] = v
    for k2, v in psutil.net_io_counters()._asdict().items(): m["net_" + k2] = v
    for k2, v in zip(("load1", "load5", "load15"), psutil.getloadavg()): m[k2] = v
    m["procs"] = len(psutil.pids())
    m["uptime"] = time.time() - psutil.boot_time()
    names = sorted(m)[:NMETRICS]
    while len(names) < NMETRICS:  # pad on small hosts so the count is exactly NMETRICS
        names.append("pad%d" % len(names)); m[names[-1]] = 0.0
    seq += 1
    pub.send(msgpack.packb({"node": "baseline", "seq": seq, "ts": int(time.time() * 1000),
                            "names": names, "values": [float(m[n]) for n in names]}))
    k += 1
    time.sleep(max(0.0, start + k * interval - time.monotonic()))
'''.replace("NMETRICS", str(BASELINE_METRICS))


# Our collectors and scheduler with nothing else of the agent around them.
CORE = r'''
import sys, zmq
from legion.node_agent.collectors import available_collectors
from legion.node_agent.scheduler import Scheduler
from legion.proto import encode_samples
endpoint, server_public, interval = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3])
public, secret = zmq.curve_keypair()
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.curve_publickey, pub.curve_secretkey, pub.curve_serverkey = public, secret, server_public
pub.connect(endpoint)
seq = [0]

def send(samples):
    seq[0] += 1  # the agent's own encoder: MetricsBatch would load numpy (~14 MiB) here
    pub.send(encode_samples("core", 1, seq[0], samples[0].ts_ms, samples))

Scheduler(available_collectors(), interval, send).run()
'''


def legionctl(*args: str, log: Path | None = None) -> subprocess.Popen[bytes] | str:
    """Run `legionctl ARGS`: in the background when `log` is given, else to completion."""
    exe = shutil.which("legionctl")
    cmd = [exe] if exe else [sys.executable, "-m", "legion.cli"]
    if log is not None:
        out = log.open("wb")
        return subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        raise SystemExit(f"legionctl {' '.join(args)} failed ({res.returncode}):\n"
                         f"{res.stdout}{res.stderr}")
    return res.stdout


def prepare(d: Path, interval: float) -> Path:
    """init + add-agent, then move every port off the defaults (other runs share this host)."""
    from legion.cli.setup_cmds import use_free_ports

    legionctl("init", "--dir", str(d))
    cfg_path = d / "monitoring_config.json"
    legionctl("keys", "add-agent", NODE, "--config", str(cfg_path))
    raw = json.loads(cfg_path.read_text())
    raw["collection_interval"] = interval
    use_free_ports(raw)
    cfg_path.write_text(json.dumps(raw, indent=2) + "\n")
    return cfg_path


def cpu_seconds(proc: psutil.Process) -> float:
    """On-CPU seconds of a process: schedstat (ns, all threads) on Linux, else user + system.

    /proc/PID/stat counts in 10 ms ticks, too coarse for a process that runs ~1 ms per second.
    """
    try:
        total = 0
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        t = proc.cpu_times()
        return float(t.user + t.system)


class Sampler:
    """CPU time and RSS of one process over a window."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.rss: list[int] = []
        self.t0 = self.c0 = 0.0
        self.cpu_percent = 0.0

    def begin(self) -> None:
        """Start the window."""
        self.t0, self.c0 = time.monotonic(), cpu_seconds(self.proc)

    def sample(self) -> None:
        """Record the current RSS."""
        self.rss.append(self.proc.memory_info().rss)

    def end(self) -> None:
        """Close the window and compute CPU % of one core."""
        wall = time.monotonic() - self.t0
        self.cpu_percent = 100.0 * (cpu_seconds(self.proc) - self.c0) / wall

    def result(self) -> dict[str, float]:
        """cpu_percent, rss_mib_max, rss_mib_mean."""
        mib = [r / 2**20 for r in self.rss] or [0.0]
        return {"cpu_percent": self.cpu_percent, "rss_mib_max": max(mib),
                "rss_mib_mean": sum(mib) / len(mib)}


class Receiver:
    """A Curve SUB server on a random loopback port, counting frames (and samples) in a thread."""

    def __init__(self, ctx: zmq.Context, stop: threading.Event, decode_legion: bool) -> None:
        self.public, secret = zmq.curve_keypair()
        self._sub = ctx.socket(zmq.SUB)
        self._sub.curve_server = True
        self._sub.curve_publickey, self._sub.curve_secretkey = self.public, secret
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoint = f"tcp://127.0.0.1:{self._sub.bind_to_random_port('tcp://127.0.0.1')}"
        self.frames = 0
        self.last_tick: dict[str, int] = {}
        self._stop, self._decode = stop, decode_legion
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        from legion.proto import decode

        while not self._stop.is_set():
            if self._sub.poll(100):
                frame = self._sub.recv()
                self.frames += 1
                if self._decode:
                    names = [s.name for s in decode(frame).body.samples()]
                    self.last_tick = {
                        "total": len(names),
                        "system": sum(n.startswith("system_") for n in names),
                        "legion": sum(n.startswith("legion_") for n in names)}
        self._sub.close(linger=0)


def series_of_node(cfg_path: Path) -> dict[str, int]:
    """Distinct stored series of the node by family (system_, legion_, other)."""
    from legion.cli.client import ApiClient, resolve_token
    from legion.cli.config import load_config

    cfg = load_config(cfg_path)
    api = ApiClient(cfg, resolve_token(cfg, None), timeout=10)
    series = api.request("GET", "/api/v1/series", {"node": NODE})
    fam = {"system": 0, "legion": 0, "other": 0}
    for s in series:
        m = s["metric"]
        fam["system" if m.startswith("system_") else "legion" if m.startswith("legion_")
            else "other"] += 1
    fam["total"] = len(series)
    return fam


def stop_proc(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def start_agent(d: Path, interval: float) -> tuple[Path, list[subprocess.Popen[bytes]]]:
    """init, add-agent, then the aggregator and the agent in the background."""
    cfg = prepare(d, interval)
    aggregator = legionctl("aggregator", "run", "--config", str(cfg), log=d / "aggregator.log")
    assert isinstance(aggregator, subprocess.Popen)
    time.sleep(1.0)
    agent = legionctl("agent", "run", "--config", str(cfg), "--node", NODE, log=d / "agent.log")
    assert isinstance(agent, subprocess.Popen)
    return cfg, [aggregator, agent]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the numbers; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    ap.add_argument("--interval", type=float, default=1.0, help="collection interval (s)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds left out at the start")
    ap.add_argument("--no-agent", action="store_true", help="measure only core and baseline")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    d = Path(tempfile.mkdtemp(prefix="legion-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    ctx = zmq.Context()
    stop = threading.Event()
    agent_error = None
    series = {"system": -1, "legion": -1, "other": -1, "total": -1}
    try:
        cfg: Path | None = None
        if not args.no_agent:
            try:
                cfg, started = start_agent(d, args.interval)
                procs += started
            except (SystemExit, OSError, subprocess.SubprocessError) as exc:
                agent_error = f"could not set up the agent: {exc}"
        rx_base = Receiver(ctx, stop, decode_legion=False)
        rx_core = Receiver(ctx, stop, decode_legion=True)
        children = {}
        for name, code, rx in (("baseline", BASELINE, rx_base), ("core", CORE, rx_core)):
            children[name] = subprocess.Popen(
                [sys.executable, "-c", code, rx.endpoint, rx.public.decode(), str(args.interval)],
                start_new_session=True)
            procs.append(children[name])

        time.sleep(args.warmup)
        for p, name in zip(procs[:2] if cfg else [], ("aggregator", "agent")):
            if p.poll() is not None and agent_error is None:
                lines = (d / f"{name}.log").read_text(errors="replace").strip().splitlines()
                agent_error = f"{name} exited with {p.returncode}: {' | '.join(lines[-2:])}"
        measured = dict(children)
        if cfg is not None and agent_error is None:
            measured["agent"] = procs[1]
        samplers = {name: Sampler(p.pid) for name, p in measured.items()}
        for smp in samplers.values():
            smp.begin()
        frames_before = rx_base.frames, rx_core.frames
        t_end = time.monotonic() + args.duration
        while time.monotonic() < t_end:
            for smp in samplers.values():
                smp.sample()
            time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        for smp in samplers.values():
            smp.end()
        frames = rx_base.frames - frames_before[0], rx_core.frames - frames_before[1]
        if "agent" in samplers and cfg is not None:
            try:
                series = series_of_node(cfg)
            except Exception as exc:  # noqa: BLE001 - report; CPU and RSS still stand
                agent_error = f"could not list the node's series: {exc!r}"
    finally:
        stop.set()
        for p in reversed(procs):
            stop_proc(p)
        time.sleep(0.2)
        ctx.term()
        if args.keep:
            print(f"kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)

    res = {name: smp.result() for name, smp in samplers.items()}
    base = res["baseline"]
    ratio = lambda a, b: a / b if b else None
    result: dict[str, Any] = {
        "duration_s": args.duration, "interval_s": args.interval,
        "baseline": {**base, "metrics_per_tick": BASELINE_METRICS, "frames": frames[0]},
        "core": {**res["core"], "metrics_per_tick": rx_core.last_tick.get("total", -1),
                 "system_metrics_per_tick": rx_core.last_tick.get("system", -1),
                 "self_metrics_per_tick": rx_core.last_tick.get("legion", -1),
                 "frames": frames[1]},
        "agent": None if "agent" not in res else {
            **res["agent"], "metrics_per_tick": series["total"],
            "system_metrics_per_tick": series["system"],
            "self_metrics_per_tick": series["legion"]},
        "agent_error": agent_error,
        "host": {"cpus": os.cpu_count(), "load1_at_end": os.getloadavg()[0],
                 "python": sys.version.split()[0]},
    }
    for name in ("core", "agent"):
        r = result[name]
        if r is not None:
            r["ratio_cpu"] = ratio(r["cpu_percent"], base["cpu_percent"])
            r["ratio_rss"] = ratio(r["rss_mib_max"], base["rss_mib_max"])
            r["targets"] = {
                "cpu_percent_le_0.3": r["cpu_percent"] <= TARGET_CPU_PERCENT,
                "rss_mib_le_30": r["rss_mib_max"] <= TARGET_RSS_MIB,
                "system_metrics_ge_60": r["system_metrics_per_tick"] >= TARGET_METRICS}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        report(result)
    return 0 if agent_error is None or args.no_agent else 1


def report(result: dict[str, Any]) -> None:
    """Print the result as a small table with ratios and targets."""
    h = result["host"]
    print(f"node agent overhead, {result['duration_s']:.0f} s at {result['interval_s']:g} s "
          f"interval ({h['cpus']} CPUs, load1 {h['load1_at_end']:.2f}, Python {h['python']})")
    print(f"  {'':9} {'CPU % core':>10} {'RSS max MiB':>11} {'RSS mean':>8} {'metrics/tick':>12}"
          f"  {'x baseline (CPU, RSS)':>22}")
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}x"
    for name in ("agent", "core", "baseline"):
        r = result[name]
        if r is None:
            why = result["agent_error"] or "skipped (--no-agent)"
            print(f"  {name:9} not measured: {why}")
            continue
        extra = (f"  {fmt(r.get('ratio_cpu')):>10}, {fmt(r.get('ratio_rss'))}"
                 if name != "baseline" else "")
        detail = (f" (system {r['system_metrics_per_tick']}, self {r['self_metrics_per_tick']})"
                  if name != "baseline" else f" ({r['frames']} frames received)")
        print(f"  {name:9} {r['cpu_percent']:10.3f} {r['rss_mib_max']:11.1f} "
              f"{r['rss_mib_mean']:8.1f} {r['metrics_per_tick']:12d}{extra}{detail}")
    ok = lambda x: "PASS" if x else "FAIL"
    for name in ("agent", "core"):
        r = result[name]
        if r is not None:
            t = r["targets"]
            print(f"  targets ({name}): CPU <= {TARGET_CPU_PERCENT} % {ok(t['cpu_percent_le_0.3'])}"
                  f", RSS <= {TARGET_RSS_MIB:.0f} MiB {ok(t['rss_mib_le_30'])}, >= "
                  f"{TARGET_METRICS} system metrics/tick {ok(t['system_metrics_ge_60'])}")
    if result["agent_error"]:
        print(f"  agent: {result['agent_error']}")


if __name__ == "__main__":
    sys.exit(main())
