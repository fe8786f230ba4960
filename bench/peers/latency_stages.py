"""Where the end-to-end latency goes: `legionctl aggregator run` with stage clocks attached.

Run as `python bench/peers/latency_stages.py OUT.json aggregator run --config ...`: the aggregator
runs as usual, and each accepted batch is timed, keyed by (node, newest sample ts_ms), at

* `received`: the receiver thread took the frame off the socket (`Frame.received_ms`);
* `accepted`: the receiving side decoded, authenticated and admitted it (`Acceptor.accept`);
* `committed`: the write that holds it returned (`CommitGroups.commit`);
* `hub`: the hub published the first `system_health` update carrying that (node, ts_ms).

It also times the hub's rebuilds (wall and CPU), the CPU of each `accept` (per frame), Python's
garbage collections, and the CPU of each of the aggregator's threads from the first frame on
(named by Python's thread names, or the kernel's for native ones: ZeroMQ's I/O thread, DuckDB's).

The WebSocket client adds `ws_send` (the message's own `ts_ms`, taken as it is built) and
`client` (arrival). Wall clock ms on one machine; written to OUT.json at exit. A bench tool: the
wrappers cost a little and are never installed by the product.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

STAGES = ("received", "accepted", "committed", "hub")


def install(out: Path) -> None:
    """Wrap the stage points of the aggregator; write what they saw to `out` at exit."""
    from legion.aggregator.acceptance import Acceptor
    from legion.aggregator.commit_groups import CommitGroups
    from legion.aggregator.gateway.hub import Hub
    from legion.aggregator.inbound import Accepted

    seen: dict[str, dict[str, float]] = {}
    threads = ThreadClock()
    threads.start()

    def key(node: str, ts: int) -> str:
        return f"{node}|{ts}"

    accept, commit, publish = Acceptor.accept, CommitGroups.commit, Hub.publish
    refresh = Hub._refresh
    rebuilds: list[tuple[float, float, int]] = []  # (wall ms, CPU ms, poll?) per hub rebuild

    async def timed_refresh(self: Any, read_store: bool, read_sources: bool = True) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return await refresh(self, read_store, read_sources)
        finally:
            rebuilds.append(((time.perf_counter() - t0) * 1000,
                             (time.thread_time() - c0) * 1000, int(read_sources)))

    accept_cpu_us: list[float] = []

    def timed_accept(self: Any, frame: Any) -> Any:
        if not accept_cpu_us:  # the first frame: thread CPU counts from here (not start-up)
            threads.mark()
        c0 = time.thread_time()
        item = accept(self, frame)
        accept_cpu_us.append((time.thread_time() - c0) * 1e6)
        if isinstance(item, Accepted) and len(item.batch.batch):
            k = key(item.batch.node, int(item.batch.batch.ts_ms.max()))
            seen.setdefault(k, {"received": float(frame.received_ms),
                                "accepted": time.time() * 1000})
        return item

    def timed_commit(self: Any, group: Any) -> Any:
        stored = commit(self, group)
        now = time.time() * 1000
        for b in group.batches:
            if len(b.batch):
                rec = seen.get(key(b.node, int(b.batch.ts_ms.max())))
                if rec is not None:
                    rec.setdefault("committed", now)
        return stored

    def timed_publish(self: Any, topic: str, data: dict[str, Any], *args: Any) -> None:
        if topic == "system_health":
            now = time.time() * 1000
            for h in data.get("hosts", ()):
                rec = seen.get(key(h["node"], int(h["ts_ms"])))
                if rec is not None:
                    rec.setdefault("hub", now)
        publish(self, topic, data, *args)

    gc_passes: list[tuple[int, float, float]] = []  # (generation, wall ms, CPU ms) of each
    gc_started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[:] = time.perf_counter(), time.thread_time()
        elif accept_cpu_us:  # from the first frame on, like the thread clocks
            gc_passes.append((info["generation"], (time.perf_counter() - gc_started[0]) * 1000,
                              (time.thread_time() - gc_started[1]) * 1000))

    gc.callbacks.append(on_gc)
    _variant_knobs()
    Acceptor.accept = timed_accept  # type: ignore[method-assign]
    CommitGroups.commit = timed_commit  # type: ignore[method-assign]
    Hub.publish = timed_publish  # type: ignore[method-assign]
    Hub._refresh = timed_refresh  # type: ignore[method-assign]
    atexit.register(lambda: out.write_text(json.dumps({
        "batches": seen, "rebuilds": rebuilds, "gc": gc_passes, "accept_cpu_us": accept_cpu_us,
        "threads": threads.cpu_s()})))


def _variant_knobs() -> None:
    """Experiment knobs (environment): LEGION_BENCH_IO_THREADS (ZeroMQ I/O threads of the
    aggregator's context), LEGION_BENCH_SWITCH_MS (the GIL switch interval)."""
    io = os.environ.get("LEGION_BENCH_IO_THREADS")
    if io:
        import zmq

        plain = zmq.Context

        class IoContext(plain):  # type: ignore[type-arg,misc,valid-type]
            def __init__(self, io_threads: int = int(io), **kw: Any) -> None:
                super().__init__(io_threads, **kw)

        zmq.Context = IoContext  # type: ignore[misc]
    if os.environ.get("LEGION_BENCH_NO_BANDS"):
        from legion.aggregator.analytics_bridge.band_book import BandBook

        BandBook.refresh = lambda self, *a, **kw: 0  # type: ignore[method-assign]
    switch = os.environ.get("LEGION_BENCH_SWITCH_MS")
    if switch:
        sys.setswitchinterval(float(switch) / 1000)


class ThreadClock(threading.Thread):
    """CPU seconds of every thread of this process, read from /proc every 0.5 s (a thread's
    last reading stays when it ends)."""

    def __init__(self) -> None:
        super().__init__(name="bench-thread-clock", daemon=True)
        self._cpu: dict[int, tuple[str, float]] = {}
        self._base: dict[int, float] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while True:
            self.read()
            time.sleep(0.5)

    def read(self) -> None:
        """One reading of every thread."""
        names = {t.native_id: t.name for t in threading.enumerate()}
        for task in Path("/proc/self/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            tid = int(task.name)
            cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
            self._cpu[tid] = (names.get(tid, self._cpu.get(tid, (comm,))[0]), cpu)

    def mark(self) -> None:
        """Count CPU from now on."""
        self.read()
        self._base = {tid: cpu for tid, (_, cpu) in self._cpu.items()}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds per thread name since `mark` (threads of one name summed)."""
        self.read()
        out: dict[str, float] = {}
        for tid, (name, cpu) in self._cpu.items():
            out[name] = round(out.get(name, 0.0) + cpu - self._base.get(tid, 0.0), 2)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def breakdown(found: dict[str, Any],
              client: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Per stage, p50/p99 ms from the sample's timestamp to reaching it (cumulative), over the
    samples the client saw (`client` maps key -> (ws_send, arrival)); and the hub's rebuilds
    (pushes and polls): how many, wall and CPU ms each."""
    import numpy as np

    stages: dict[str, dict[str, float]] = found["batches"]
    out: dict[str, dict[str, float]] = {}
    acc = found.get("accept_cpu_us") or []
    if acc:
        out["accept_cpu_us"] = {"count": len(acc), "mean": round(float(np.mean(acc)), 1),
                                "p50": round(float(np.percentile(acc, 50)), 1),
                                "p99": round(float(np.percentile(acc, 99)), 1)}
    if found.get("threads"):
        out["thread_cpu_s"] = found["threads"]
    for gen in (0, 1, 2):
        passes = [x for x in found.get("gc", ()) if x[0] == gen]
        if passes:
            ms, cpu = [x[1] for x in passes], [x[2] for x in passes]
            out[f"gc_gen{gen}"] = {"count": len(ms), "max_ms": round(max(ms), 1),
                                   "total_ms": round(sum(ms), 1),
                                   "cpu_max_ms": round(max(cpu), 2),
                                   "cpu_total_ms": round(sum(cpu), 1)}
    for poll in (0, 1):
        r = [x for x in found["rebuilds"] if x[2] == poll]
        if r:
            wall, cpu = [x[0] for x in r], [x[1] for x in r]
            out["hub_" + ("polls" if poll else "pushes")] = {
                "count": len(r), "wall_p50_ms": round(float(np.percentile(wall, 50)), 2),
                "wall_p99_ms": round(float(np.percentile(wall, 99)), 2),
                "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
                "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 2)}
    cols: dict[str, list[float]] = {s: [] for s in (*STAGES, "ws_send", "client")}
    for k, (ws_send, arrival) in client.items():
        rec = stages.get(k)
        if rec is None or any(s not in rec for s in STAGES):
            continue
        ts = int(k.rsplit("|", 1)[1])
        for s in STAGES:
            cols[s].append(rec[s] - ts)
        cols["ws_send"].append(ws_send - ts)
        cols["client"].append(arrival - ts)
    out.update({s: {"p50_ms": round(float(np.percentile(v, 50)), 1),
                    "p99_ms": round(float(np.percentile(v, 99)), 1), "n": len(v)}
                for s, v in cols.items() if v})
    return out


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    sys.argv = ["legionctl", *sys.argv[2:]]
    from legion.cli.main import main

    main()
