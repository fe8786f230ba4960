"""Enterprise Legion simulator: 18 instrumented agents in one process, with fault injection.

Each agent (see `roster.py`) receives tasks from outside (Poisson arrivals) and from colleagues
(delegation messages), works them with bounded concurrency (LLM calls whose latency grows with the
output tokens, tool calls with lognormal latency and realistic failure rates), and reports through
its own real `AgentMonitor`. Agents here share a process, so CPU and memory per agent are modeled
(a baseline per role plus load) and the *faults* are real: `cpu_hog` burns measured CPU and
`memory_leak` holds real memory, both attributed to their agent (see `faults.py`).

    sim = Simulator("ipc:///run/legion/agent-monitor.sock", seed=1, faults=demo_schedule())
    sim.start(); sim.inject("failing", "qa-tester", 60); ...; sim.stop()

Standalone: `python -m legion.demo.simulator --endpoint ipc://... --duration 60 [--demo-faults]`;
`--endpoints A,B,C` simulates several hosts (departments spread over them round-robin).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psutil

from legion.demo.faults import (
    FAULTS,
    SLOW_FACTOR,
    FaultBoard,
    FaultSpec,
    demo_schedule,
    validate,
)
from legion.demo.roster import AGENTS, MODELS, TOOLS, AgentSpec
from legion.kernel.errors import ConfigError, LegionError
from legion.node_agent.monitor import AgentMonitor, close_monitors, resolve_endpoint

log = logging.getLogger("legion.demo.simulator")

QUEUE_MAX = 1000
CONCURRENCY = 16  # tasks one agent works on at once
DELEGATE_P = 0.35  # chance a finished task hands a subtask to a colleague
LATENCY_SCALE = 0.25
"""Multiplies every LLM and tool latency of the roster: the demo's agents meet the seed's
`agent_response_time` objective (p95 under 5 s) in normal running (the slowest agent's per-task
p99 is about 2.9 s), so a default alert rule stays quiet until a fault (`slow`, `token_runaway`)."""

__all__ = ["FAULTS", "FaultSpec", "Simulator", "demo_schedule", "main"]


class SimulatedFailure(LegionError):
    """A task of a simulated agent failed (counted by its monitor, then swallowed)."""


class Simulator:
    """Runs the legion on a background thread with its own asyncio loop."""

    def __init__(self, endpoint: str | Sequence[str] | None = None, *, seed: int = 0,
                 faults: Iterable[FaultSpec | str] = (), time_scale: float = 1.0,
                 interval_secs: float = 1.0, load: float = 2.0,
                 agents: Sequence[AgentSpec] = AGENTS, board: FaultBoard | None = None,
                 success_window_secs: float = 30.0) -> None:
        if not time_scale > 0 or not load > 0:
            raise ConfigError(["simulator: time_scale and load must be > 0"])
        eps = [endpoint] if endpoint is None or isinstance(endpoint, str) else list(endpoint)
        if not eps:
            raise ConfigError(["simulator: at least one endpoint"])
        # several endpoints = several simulated hosts (one node agent each): departments are
        # spread over them round-robin
        self.endpoints = tuple(resolve_endpoint(e) for e in eps)
        self.endpoint = self.endpoints[0]
        self.seed = seed
        self.time_scale = float(time_scale)
        self.interval_secs = interval_secs
        self.load = load
        self.agents = tuple(agents)
        depts = list(dict.fromkeys(a.department for a in self.agents))
        self.placement = {a.agent_id: self.endpoints[depts.index(a.department) % len(eps)]
                          for a in self.agents}
        self._ids = tuple(a.agent_id for a in self.agents)
        self.schedule = tuple(f if isinstance(f, FaultSpec) else FaultSpec.parse(f)
                              for f in faults)
        for f in self.schedule:
            validate(f.name, f.agent_id, f.duration_secs, self._ids)
        self.board = board or FaultBoard()
        self._window = success_window_secs
        self.monitors: dict[str, AgentMonitor] = {}
        self.counts: dict[str, dict[str, int]] = {
            a.agent_id: {"done": 0, "failed": 0, "in_flight": 0, "dropped": 0}
            for a in self.agents}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_ev: asyncio.Event | None = None
        self._ready = threading.Event()
        self._t0 = 0.0
        self.error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Create the monitors and start the legion (idempotent)."""
        if self._thread is not None:
            return
        for a in self.agents:
            self.monitors[a.agent_id] = AgentMonitor(
                a.agent_id, a.department, endpoint=self.placement[a.agent_id],
                interval_secs=self.interval_secs, success_window_secs=self._window)
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._thread_main, name="legion-simulator",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the agents, send final reports, end the faults (idempotent, safe before start)."""
        loop, ev = self._loop, self._stop_ev
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        self.board.stop()
        close_monitors(list(self.monitors.values()), 1.0)

    def inject(self, fault_name: str, agent_id: str, duration_secs: float) -> None:
        """Start a fault now on one agent, for `duration_secs` of simulated time."""
        validate(fault_name, agent_id, duration_secs, self._ids)
        self.board.activate(fault_name, agent_id, duration_secs / self.time_scale)
        log.info("event=fault_injected fault=%s agent=%s secs=%s", fault_name, agent_id,
                 duration_secs)

    def stats(self) -> dict[str, Any]:
        """Totals, per-agent counts and the active faults."""
        c = self.counts.values()
        return {"uptime_secs": round(time.monotonic() - self._t0, 1) if self._t0 else 0.0,
                "done": sum(x["done"] for x in c), "failed": sum(x["failed"] for x in c),
                "in_flight": sum(x["in_flight"] for x in c),
                "dropped": sum(x["dropped"] for x in c),
                "faults": self.board.active_list(), "agents": dict(self.counts)}

    # ---- the loop --------------------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced through .error and the log, never lost
            self.error = exc
            log.exception("event=simulator_crashed")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_ev = asyncio.Event()
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {
            a.agent_id: asyncio.Queue(QUEUE_MAX) for a in self.agents}
        self._specs = {a.agent_id: a for a in self.agents}
        self._work_tasks: set[asyncio.Task[None]] = set()
        jobs = []
        for i, a in enumerate(self.agents):
            rng = random.Random(self.seed * 1000 + i)
            jobs.append(asyncio.create_task(self._arrivals(a, rng)))
            jobs.append(asyncio.create_task(self._dispatch(a, rng)))
        jobs.append(asyncio.create_task(self._resources()))
        jobs.append(asyncio.create_task(self._run_schedule()))
        self._ready.set()
        await self._stop_ev.wait()
        # final reports (one envelope) before cancelling in-flight work, so that the
        # cancellations are not reported as failures
        await asyncio.to_thread(close_monitors, list(self.monitors.values()), 1.0)
        for t in jobs + list(self._work_tasks):
            t.cancel()
        await asyncio.gather(*jobs, *self._work_tasks, return_exceptions=True)

    async def _sleep(self, secs: float) -> None:
        await asyncio.sleep(secs / self.time_scale)

    def _partitioned(self, agent_id: str) -> bool:
        return self.board.active(agent_id, "partition")

    async def _arrivals(self, a: AgentSpec, rng: random.Random) -> None:
        rate = a.rate_per_sec * self.load
        while True:
            await self._sleep(rng.expovariate(rate))
            self._enqueue(a.agent_id, {"type": rng.choice(a.task_types), "from": None})

    def _enqueue(self, agent_id: str, task: dict[str, Any]) -> None:
        q = self._queues[agent_id]
        try:
            q.put_nowait(task)
        except asyncio.QueueFull:
            self.counts[agent_id]["dropped"] += 1
        self.monitors[agent_id].set_queue_depth(q.qsize())

    async def _dispatch(self, a: AgentSpec, rng: random.Random) -> None:
        q, mon = self._queues[a.agent_id], self.monitors[a.agent_id]
        sem = asyncio.Semaphore(CONCURRENCY)
        while True:
            await sem.acquire()
            while self._partitioned(a.agent_id):
                await asyncio.sleep(0.1)
            task = await q.get()
            mon.set_queue_depth(q.qsize())
            if task["from"] is not None:
                mon.track_message_received(task)
            job = asyncio.create_task(self._process(a, task, rng, sem))
            self._work_tasks.add(job)
            job.add_done_callback(self._work_tasks.discard)

    async def _process(self, a: AgentSpec, task: dict[str, Any], rng: random.Random,
                       sem: asyncio.Semaphore) -> None:
        c = self.counts[a.agent_id]
        c["in_flight"] += 1
        try:
            with self.monitors[a.agent_id].track_task(task.get("type", "unknown")):
                await self._work(a, rng)
            c["done"] += 1
        except SimulatedFailure:
            c["failed"] += 1
        finally:
            c["in_flight"] -= 1
            sem.release()

    async def _work(self, a: AgentSpec, rng: random.Random) -> None:
        mon, board, aid = self.monitors[a.agent_id], self.board, a.agent_id
        scale = LATENCY_SCALE * (SLOW_FACTOR if board.active(aid, "slow") else 1.0)
        runaway = board.active(aid, "token_runaway")
        model = MODELS[a.model]
        for _ in range(4 if runaway else 1):
            tin = max(1, int(rng.lognormvariate(math.log(a.input_tokens), 0.4)))
            tout = max(1, int(rng.lognormvariate(math.log(a.output_tokens), 0.5)))
            tout *= 12 if runaway else 1
            await self._sleep(scale * (model.ttft_secs * rng.lognormvariate(0, 0.3)
                                       + tout * model.secs_per_token))
            mon.track_llm_call(model.name, tin, tout,
                               tin / 1000 * model.usd_in_1k + tout / 1000 * model.usd_out_1k)
        failing = board.active(aid, "failing")
        for name in rng.sample(a.tools, min(rng.choice((0, 1, 1, 2)), len(a.tools))):
            tool = TOOLS[name]
            await self._sleep(scale * rng.lognormvariate(math.log(tool.median_secs), tool.sigma))
            ok = rng.random() >= (0.4 if failing else tool.fail_rate)
            mon.track_tool_call(name, ok)
            if not ok and rng.random() < 0.5:
                raise SimulatedFailure(f"{name} failed")
        if rng.random() < (0.6 if failing else 0.01):
            raise SimulatedFailure("task failed")
        if a.delegates_to and rng.random() < DELEGATE_P and not self._partitioned(aid):
            to = rng.choice(a.delegates_to)
            msg = {"type": rng.choice(self._specs[to].task_types), "from": aid, "to": to}
            mon.track_message_sent(msg)
            if not self._partitioned(to):  # a partitioned colleague never gets it
                self._enqueue(to, msg)

    async def _resources(self) -> None:
        total = psutil.virtual_memory().total
        ncpu = psutil.cpu_count() or 1
        prev = {a.agent_id: self.board.cpu_seconds(a.agent_id) for a in self.agents}
        t_prev = time.monotonic()
        rng = random.Random(self.seed)
        while True:
            await asyncio.sleep(min(self.interval_secs, 1.0))
            now = time.monotonic()
            wall = max(now - t_prev, 1e-3)
            t_prev = now
            for a in self.agents:
                aid = a.agent_id
                burned = self.board.cpu_seconds(aid)
                hog = (burned - prev[aid]) / wall * 100.0 / ncpu
                prev[aid] = burned
                inflight = self.counts[aid]["in_flight"]
                cpu = a.base_cpu_percent * rng.uniform(0.85, 1.15) + 0.8 * inflight + hog
                mem = (a.base_memory_mb * (1 << 20) * (1 + 0.01 * inflight)
                       + self.board.leaked_bytes(aid)) / total * 100.0
                mon = self.monitors[aid]
                mon.set_resource_usage(cpu_percent=min(cpu, 100.0), memory_percent=mem)
                mon.set_reporting(not self._partitioned(aid))

    async def _run_schedule(self) -> None:
        for f in sorted(self.schedule, key=lambda f: f.start_secs):
            delay = self._t0 + f.start_secs / self.time_scale - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.board.activate(f.name, f.agent_id, f.duration_secs / self.time_scale)
            log.info("event=fault_started fault=%s agent=%s secs=%s", f.name, f.agent_id,
                     f.duration_secs)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m legion.demo.simulator`: run the legion against a monitor endpoint."""
    p = argparse.ArgumentParser(prog="python -m legion.demo.simulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", default=None, help="monitor endpoint (default: config/env)")
    p.add_argument("--endpoints", default=None,
                   help="comma-separated endpoints, one per simulated host")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until ^C)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-scale", type=float, default=1.0, help="speed-up factor")
    p.add_argument("--interval", type=float, default=1.0, help="monitor flush interval (s)")
    p.add_argument("--load", type=float, default=2.0, help="multiplies arrival rates")
    p.add_argument("--fault", action="append", default=[], metavar="NAME:AGENT:START:SECS",
                   help=f"schedule a fault ({', '.join(FAULTS)}); repeatable")
    p.add_argument("--demo-faults", action="store_true", help="one of each fault, spaced out")
    p.add_argument("--status-secs", type=float, default=0.0,
                   help="print a status line every N seconds (0: only at start and end)")
    p.add_argument("--verbose", action="store_true", help="log fault events")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        faults = [FaultSpec.parse(f) for f in args.fault]
        if args.demo_faults:
            faults += list(demo_schedule())
        eps = args.endpoints.split(",") if args.endpoints else args.endpoint
        sim = Simulator(eps, seed=args.seed, faults=faults,
                        time_scale=args.time_scale, interval_secs=args.interval, load=args.load)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    sim.start()
    print(f"simulator: {len(sim.agents)} agents -> {', '.join(sim.endpoints)}", file=sys.stderr)
    deadline = time.monotonic() + args.duration if args.duration > 0 else math.inf
    every = args.status_secs if args.status_secs > 0 else math.inf
    next_status = time.monotonic() + every
    while not done.is_set() and time.monotonic() < deadline and sim.error is None:
        done.wait(min(0.5, max(deadline - time.monotonic(), 0.01)))
        if time.monotonic() >= next_status:
            next_status += every
            _print_status(sim)
    sim.stop()
    _print_status(sim)
    return 1 if sim.error is not None else 0


def _print_status(sim: Simulator) -> None:
    s = sim.stats()
    print(f"simulator: up={s['uptime_secs']}s done={s['done']} failed={s['failed']} "
          f"in_flight={s['in_flight']} faults={s['faults']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
