"""The node agent process: collectors → batch → spool → CurveZMQ PUB, acks → spool release.

One thread (`_loop`) owns every socket. Per collection tick it builds one batch from the
collectors' samples, the in-app `AgentMonitor` samples received since the last tick and its own
self-metrics, gives it the next seq, appends it to the spool *before* sending, and sends it.
Acks arrive on a SUB socket subscribed to this node's topic; unacknowledged batches are resent
oldest first, a bounded number per tick, so a backlog drains without starving live data.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from legion.kernel.curve import client_socket, load_public, load_secret, require_curve
from legion.kernel.errors import TransportError
from legion.kernel.spool.spool import Spool
from legion.node_agent.collectors import COLLECTORS, available_collectors, close_collectors
from legion.node_agent.config import AgentSettings
from legion.node_agent.delivery import Delivery
from legion.node_agent.failover import Failover, endpoints_of
from legion.node_agent.monitor_receiver import MonitorReceiver
from legion.node_agent.scheduler import Scheduler
from legion.node_agent.state import SeqAllocator
from legion.node_agent.wire_split import split_for_wire
from legion.proto import KIND_ACK, Ack, Sample, WireError, decode, encode_samples
from legion.proto.limits import MAX_FRAME_BYTES

log = logging.getLogger("legion.node_agent")

MAX_RESENDS_PER_TICK = 50


class NodeAgent:
    """A node agent for one node name; `start()`/`stop()` idempotent, stop safe before start."""

    def __init__(self, settings: AgentSettings, node: str) -> None:
        """`settings`: the `agent` section with its paths resolved, and the two values read."""
        require_curve()
        self.config = settings.agent
        self.node = node
        acfg = settings.agent
        self._server_public = load_public(Path(acfg.server_public_key_path))
        secret_path = Path(acfg.keys_dir) / f"{node}.key_secret"
        if not secret_path.exists():
            raise TransportError(
                f"no key for node {node!r} at {secret_path} "
                f"(create one with `legionctl keys add-agent {node} --config F`)")
        self._keypair = load_secret(secret_path)
        state_dir = Path(acfg.state_dir) / node
        self.state = SeqAllocator.open(state_dir)
        self.spool = Spool(state_dir / "spool", acfg.spool_max_bytes, acfg.spool_sync_interval_ms,
                           epoch=self.state.epoch)
        self.delivery = Delivery(self.spool, resend_timeout=acfg.resend_timeout_secs)
        self.failover = Failover(endpoints_of(acfg), acfg.failover_after_secs,
                                 acfg.failback_probe_secs)
        names = acfg.collectors or tuple(COLLECTORS)
        collectors = available_collectors(names)
        self._ticks: queue.Queue[list[Sample]] = queue.Queue(maxsize=1000)
        self._interval = settings.collection_interval
        self.scheduler = Scheduler(collectors, self._interval, self._on_tick)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self._max_frame_bytes = min(MAX_FRAME_BYTES, settings.max_message_bytes)

    def _on_tick(self, samples: list[Sample]) -> None:
        try:
            self._ticks.put_nowait(samples)
        except queue.Full:  # the loop is stuck; collection must never block
            log.warning("event=tick_dropped reason=loop_behind")

    def start(self) -> None:
        """Start the socket loop and the collection scheduler."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="legion-agent", daemon=True)
        self._thread.start()
        self.scheduler.start()
        log.info("event=started node=%s epoch=%d aggregator=%s collectors=%d",
                 self.node, self.state.epoch, self.failover.endpoints[0][0],
                 len(self.scheduler.collectors))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop collecting, flush the spool to disk, close sockets."""
        self.scheduler.stop(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        close_collectors(self.scheduler.collectors)
        self.spool.close()
        self.state.close()

    def _loop(self) -> None:
        ctx = zmq.Context()
        hb = int(self.config.heartbeat_interval_secs * 1000)  # ZMTP heartbeats to the aggregator
        pub = self._publisher(ctx, self.failover.endpoints[0][0])
        acks = client_socket(ctx, zmq.SUB, self._server_public, self._keypair, hb)
        acks.setsockopt(zmq.SUBSCRIBE, self.node.encode() + b"\0")
        for _ingest, ack_ep in self.failover.endpoints:  # acks from every aggregator count
            acks.connect(ack_ep)
        monitor = self._open_monitor(ctx)
        interval = self._interval
        try:
            while not self._stop.is_set():
                # Wake once per tick, not on a timer: acks only steer resends, which are
                # decided per tick anyway, so draining them here costs no delivery latency.
                try:
                    samples = self._ticks.get(timeout=interval)
                except queue.Empty:
                    samples = None
                self._drain_acks(acks)
                pub = self._maybe_switch(ctx, pub)
                if samples is None:
                    continue
                if monitor is not None:
                    samples += monitor.drain(100_000)
                samples += self._self_metrics(samples[0].ts_ms if samples else None, monitor)
                self._send_live(pub, samples)
                for _seq, frame in self.delivery.due_resends(limit=MAX_RESENDS_PER_TICK):
                    self._send(pub, frame)
                self.spool.sync_if_due()
        finally:
            if monitor is not None:
                monitor.close()
            self.failover.close_probe()
            pub.close(linger=500)
            acks.close(linger=0)
            ctx.term()

    def _publisher(self, ctx: zmq.Context[zmq.Socket[Any]], endpoint: str) -> zmq.Socket[Any]:
        hb = int(self.config.heartbeat_interval_secs * 1000)
        pub = client_socket(ctx, zmq.PUB, self._server_public, self._keypair, hb)
        pub.setsockopt(zmq.SNDHWM, 10_000)
        pub.connect(endpoint)
        return pub

    def _maybe_switch(self, ctx: zmq.Context[zmq.Socket[Any]],
                      pub: zmq.Socket[Any]) -> zmq.Socket[Any]:
        """Fail over (or back) to another aggregator; unacked batches are resent there."""
        if len(self.failover.endpoints) < 2:
            return pub  # one aggregator: nothing to decide, and no stats to build per tick
        age = float(self.delivery.stats()["oldest_unacked_age_seconds"])
        index = self.failover.decide(age, lambda ep: self._publisher(ctx, ep))
        if index is None:
            return pub
        endpoint = self.failover.endpoints[index][0]
        log.warning("event=aggregator_switch node=%s to=%s index=%d", self.node, endpoint, index)
        pub.close(linger=0)  # what it still queued is in the spool and will be resent
        if self.failover.last_switch == "failover":  # the one left went silent: resend now
            self.delivery.resend_all_now()
        return self._publisher(ctx, endpoint)

    def _open_monitor(self, ctx: zmq.Context[zmq.Socket[Any]]) -> MonitorReceiver | None:
        ep = self.config.monitor_endpoint.replace("{node}", self.node)
        try:
            return MonitorReceiver(ctx, ep)
        except TransportError as exc:
            log.warning("event=monitor_endpoint_unavailable endpoint=%s error=%s", ep, exc)
            return None

    def _send_live(self, pub: zmq.Socket[Any], samples: list[Sample]) -> None:
        if not samples:
            return
        now_ms = int(time.time() * 1000)
        for part in split_for_wire(samples, self._max_frame_bytes):
            seq = self.state.next_seq()
            frame = encode_samples(self.node, self.state.epoch, seq, now_ms, part)
            self.spool.append(seq, frame)  # on disk first, then on the wire
            self._send(pub, frame)
            self.delivery.on_sent(seq)

    def _send(self, pub: zmq.Socket[Any], frame: bytes) -> None:
        try:
            pub.send(frame, zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:  # HWM reached: the spool still holds it and resend will retry
            pass

    def _drain_acks(self, sock: zmq.Socket[Any]) -> None:
        for _ in range(1000):
            try:
                _topic, data = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                env = decode(data)
            except WireError as exc:
                log.warning("event=bad_ack reason=%s", exc.reason.value)
                continue
            if env.kind == KIND_ACK and env.node == self.node and isinstance(env.body, Ack):
                self.delivery.on_ack(env.body)
                self.failover.on_ack()  # any epoch: older epochs may still be spooled

    def _self_metrics(self, ts_ms: int | None, monitor: MonitorReceiver | None) -> list[Sample]:
        ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
        out = [Sample(f"legion_agent_{key}", (), float(value), ts)
               for key, value in self.delivery.stats().items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)]
        out += [Sample(f"legion_agent_{k}", (), float(v), ts) for k, v in
                self.failover.counters.items()]
        out.append(Sample("legion_agent_aggregator_index", (), float(self.failover.active), ts))
        if monitor is not None:
            out += monitor.self_samples(ts)
        return out


def run_agent(settings: AgentSettings, node: str) -> None:
    """Run a node agent in the foreground until SIGINT/SIGTERM."""
    import signal

    agent = NodeAgent(settings, node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    try:
        stop.wait()  # the handler runs in this thread during the wait: no periodic wake-up
    finally:
        agent.stop()
        log.info("event=stopped node=%s", node)
