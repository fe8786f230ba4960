"""Node agent: CPU time of each step of one tick, measured in-process per step.

Usage: `python bench/agent_steps.py [--ticks 100] [--interval 0.25] [--spool-from REV] [--json]`

A real `NodeAgent` (keys from `legionctl init` in a temporary directory, its spool there) is built
but not started: this script drives the steps of its socket loop by hand, against a Curve SUB it
binds on loopback, and acknowledges batches the way the aggregator does: each one committed at
once, and all of them checkpointed every `--checkpoint-secs` (the aggregator's CHECKPOINT, 10 s),
which releases them from the spool. Every step is timed with
`time.thread_time_ns` (CPU time of this thread, not wall time); ZeroMQ's I/O thread (Curve
encryption, TCP) is read from `/proc/self/task/*/schedstat` over the whole run. Reported: mean
CPU microseconds per tick per step, and per sample. The collection interval only has to be long
enough for the CPU collector's percentages (>= 50 ms per core); a shorter one than production
makes fsyncs (every `agent.spool_sync_interval_ms`) look more frequent per tick than they are,
so the spool's two periodic costs are also printed per event (per fsync, per checkpoint ack).
`--spool-from REV` runs `legion/kernel/spool` of git revision REV (the agent code stays the
working tree's), to compare spool versions in alternating runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from agent_overhead import NODE, prepare  # noqa: E402


class Timed:
    """A collector wrapped so each `collect()` adds its thread CPU time to `acc`."""

    def __init__(self, inner: Any, acc: dict[str, int]) -> None:
        self.name = inner.name
        self._inner, self._acc = inner, acc

    def collect(self) -> Any:
        """The inner collector's readings."""
        t0 = time.thread_time_ns()
        try:
            return self._inner.collect()
        finally:
            self._acc[f"collect {self.name}"] += time.thread_time_ns() - t0


def other_threads_ns() -> int:
    """On-CPU ns of every thread of this process but the calling one (ZeroMQ's I/O thread)."""
    me = threading.get_native_id()
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def use_spool_of(rev: str) -> None:
    """Point `legion.kernel.spool` at `legion/kernel/spool` of git revision `rev`."""
    from agent_ab import export

    import legion.kernel.spool as spool_pkg

    where = export(rev, Path(tempfile.mkdtemp(prefix="legion-spool-")), "legion/kernel/spool")
    spool_pkg.__path__[:] = [str(where)]


def run(ticks: int, interval: float, checkpoint_secs: float = 10.0) -> dict[str, Any]:
    """Drive `ticks` ticks of a real NodeAgent's loop by hand; CPU ns per step."""
    from legion.cli.config import load_config
    from legion.node_agent.agent import NodeAgent
    from legion.node_agent.scheduler import Scheduler
    from legion.node_agent.wire_split import split_for_wire
    from legion.proto import ACK_CHECKPOINTED, ACK_COMMITTED, Ack, encode_samples

    d = Path(tempfile.mkdtemp(prefix="legion-steps-"))
    cfg = prepare(d, interval)
    agent = NodeAgent(load_config(cfg).agent_settings(), NODE)
    acc: dict[str, int] = defaultdict(int)
    ticked: list[list[Any]] = []
    sched = Scheduler([Timed(c, acc) for c in agent.scheduler.collectors], interval,
                      ticked.append)
    ctx = zmq.Context()
    server_public, server_secret = zmq.curve_keypair()
    sub = ctx.socket(zmq.SUB)
    sub.curve_server = True
    sub.curve_publickey, sub.curve_secretkey = server_public, server_secret
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    agent._server_public = server_public
    pub = agent._publisher(ctx, f"tcp://127.0.0.1:{port}")
    time.sleep(0.5)  # the Curve handshake
    n_samples = 0
    first_unchecked = agent.state.peek_next_seq()
    every = max(1, round(checkpoint_secs / interval))
    io0 = other_threads_ns()
    syncs0, acks = agent.spool.syncs, 0
    t = time.thread_time_ns
    for k in range(ticks):
        t0 = t()
        sched.run_once()
        acc["scheduler (stamp, check, self-metrics), minus collectors"] += t() - t0
        samples = ticked.pop()
        t0 = t()
        samples += agent._self_metrics(samples[0].ts_ms, None)
        acc["agent self-metrics"] += t() - t0
        n_samples += len(samples)
        t0 = t()
        parts = split_for_wire(samples, agent._max_frame_bytes)
        acc["split_for_wire"] += t() - t0
        for part in parts:
            t0 = t()
            seq = agent.state.next_seq()
            acc["next_seq"] += t() - t0
            t0 = t()
            frame = encode_samples(NODE, agent.state.epoch, seq, int(time.time() * 1000), part)
            acc["encode (msgpack)"] += t() - t0
            t0 = t()
            agent.spool.sync_if_due()  # the fsync `append` would do when one is due
            acc["spool fsync when due"] += t() - t0
            t0 = t()
            agent.spool.append(seq, frame)
            acc["spool append"] += t() - t0
            t0 = t()
            agent._send(pub, frame)
            acc["Curve send (caller's side)"] += t() - t0
            t0 = t()
            agent.delivery.on_sent(seq)
            acc["delivery on_sent"] += t() - t0
            t0 = t()
            agent.delivery.on_ack(Ack(ACK_COMMITTED, agent.state.epoch, ((seq, seq),)))
            acc["committed ack applied"] += t() - t0
        if (k + 1) % every == 0:
            last = agent.state.peek_next_seq() - 1
            t0 = t()
            agent.delivery.on_ack(Ack(ACK_CHECKPOINTED, agent.state.epoch,
                                      ((first_unchecked, last),)))
            acc["checkpoint ack applied (spool release)"] += t() - t0
            first_unchecked = last + 1
            acks += 1
        t0 = t()
        agent.delivery.due_resends(limit=50)
        agent._maybe_switch(ctx, pub)
        acc["resend check, failover check"] += t() - t0
        t0 = t()
        agent.spool.sync_if_due()
        acc["spool fsync when due"] += t() - t0
        while sub.poll(0):
            sub.recv()
        time.sleep(interval)
    io_ns = other_threads_ns() - io0
    syncs = agent.spool.syncs - syncs0
    for name in list(acc):
        if name.startswith("collect "):
            acc["scheduler (stamp, check, self-metrics), minus collectors"] -= acc[name]
    acc["ZeroMQ I/O thread (Curve, TCP)"] = io_ns
    pub.close(0)
    sub.close(0)
    ctx.term()
    agent.stop()
    per_tick = {k: v / ticks / 1000 for k, v in acc.items()}
    total = sum(per_tick.values())
    return {"ticks": ticks, "interval_s": interval, "samples_per_tick": n_samples / ticks,
            "us_per_tick": per_tick, "total_us_per_tick": total,
            "us_per_sample": total / (n_samples / ticks), "load1": os.getloadavg()[0],
            "fsyncs": syncs, "checkpoint_acks": acks,
            "us_per_fsync": acc["spool fsync when due"] / max(syncs, 1) / 1000,
            "us_per_checkpoint_ack": (acc["checkpoint ack applied (spool release)"]
                                      / max(acks, 1) / 1000)}


def main(argv: list[str] | None = None) -> int:
    """Run and print the breakdown."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--checkpoint-secs", type=float, default=10.0)
    ap.add_argument("--spool-from", metavar="REV",
                    help="run legion/kernel/spool of this git revision")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.spool_from:
        use_spool_of(args.spool_from)
    r = run(args.ticks, args.interval, args.checkpoint_secs)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['ticks']} ticks at {r['interval_s']} s, {r['samples_per_tick']:.0f} samples/tick, "
          f"load1 {r['load1']:.2f}")
    for k, v in sorted(r["us_per_tick"].items(), key=lambda kv: -kv[1]):
        print(f"  {v:8.1f} us/tick  {k}")
    print(f"  {r['total_us_per_tick']:8.1f} us/tick total, {r['us_per_sample']:.2f} us/sample")
    print(f"  spool: {r['us_per_fsync']:.1f} us per fsync ({r['fsyncs']}), "
          f"{r['us_per_checkpoint_ack']:.1f} us per checkpoint ack ({r['checkpoint_acks']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
