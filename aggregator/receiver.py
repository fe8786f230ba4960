"""The ingest receive loop: owns the agents' SUB socket, receives frames (Curve-authenticated by
ZAP) and hands them to the writer's bounded queue. It only receives: decoding, identity checks and
storage are the writer's (`ingest.IngestWriter`). When a key leaves the allowlist it re-binds, so
every peer re-handshakes and the revoked one is cut off."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

import zmq

from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.store import IncomingBatch
from legion.aggregator.telemetry import IngestTelemetry
from legion.kernel.curve import server_socket

log = logging.getLogger("legion.aggregator.ingest")

ALLOWLIST_POLL_SECS = 1.0
OVERSIZE_HEAD_BYTES = 4096
"""Of a frame over `max_message_bytes` only this much is kept (its header, for the ack)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One received message: its bytes, the sender's Curve key (z85), when it arrived and its
    size on the wire (`data` holds only the head of a frame over `max_message_bytes`)."""

    data: bytes
    sender: bytes
    received_ms: int
    size: int


Inbound: TypeAlias = Frame | IncomingBatch
"""What the writer's queue carries: frames from the agents (Receiver) and batches made inside
the aggregator (the analytics bridge's results), which are stored as they are."""


def heartbeat_ms(config: AggregatorSettings) -> int:
    """ZMTP heartbeat interval of the aggregator's agent-facing sockets."""
    return int(config.aggregator.heartbeat_interval_secs * 1000)


class Receiver(threading.Thread):
    """Owns the ingest SUB socket: receives frames and hands them to a bounded queue."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]], config: AggregatorSettings,
                 keypair: tuple[bytes, bytes], registry: KeyRegistry,
                 out: queue.Queue[Inbound], telemetry: IngestTelemetry):
        super().__init__(name="legion-ingest-recv", daemon=True)
        self._ctx, self._cfg, self._keypair = ctx, config, keypair
        self._registry, self._out, self._tm = registry, out, telemetry
        self._stopping = threading.Event()
        self.ready = threading.Event()
        self.bind_error: Exception | None = None

    def _bind(self) -> zmq.Socket[Any]:
        sock = server_socket(self._ctx, zmq.SUB, self._keypair, heartbeat_ms(self._cfg))
        # No socket size limit: ZeroMQ would drop a larger frame unseen. Every frame is read,
        # one over `max_message_bytes` cut to its head at once (`_frame`) and refused by the
        # writer: counted `frame_too_large` and acked `rejected`. Only authenticated keys get
        # this far.
        sock.setsockopt(zmq.MAXMSGSIZE, -1)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sock.bind(self._cfg.aggregator.ingest_bind)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _rebind(self) -> zmq.Socket[Any]:
        # ZeroMQ closes the old listener asynchronously in its I/O thread, so the port may
        # still be taken for a moment: retry instead of letting the receive loop die.
        for attempt in range(100):
            try:
                return self._bind()
            except zmq.ZMQError as exc:
                if attempt == 99:
                    raise
                log.debug("event=rebind_retry error=%s", exc)
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def run(self) -> None:
        try:
            sock = self._bind()
        except zmq.ZMQError as exc:
            self.bind_error = exc
            self.ready.set()
            return
        self.ready.set()
        known = set(self._registry.nodes())
        next_scan = time.monotonic() + ALLOWLIST_POLL_SECS
        try:
            while not self._stopping.is_set():
                if sock.poll(100):
                    # Drain what is there; each hand-off waits when the writer is behind, which
                    # pushes back into ZeroMQ's HWM and finally the agents' spools (never RAM).
                    for _ in range(1000):
                        try:
                            msg = sock.recv(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        frame = self._frame(msg)
                        self._tm.add(frames_received=1)
                        while not self._stopping.is_set():
                            try:
                                self._out.put(frame, timeout=0.1)
                                break
                            except queue.Full:
                                self._tm.add(queue_full_waits=1)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + ALLOWLIST_POLL_SECS
                    self._registry.refresh()
                    current = set(self._registry.nodes())
                    if known - current:
                        log.info("event=key_revoked count=%d action=rebind", len(known - current))
                        sock.close(linger=0)
                        sock = self._rebind()
                        self._tm.add(socket_rebinds=1)
                    known = current
        finally:
            sock.close(linger=0)

    def _frame(self, msg: zmq.Frame) -> Frame:
        size = len(msg.buffer)
        big = size > self._cfg.aggregator.max_message_bytes
        data = bytes(msg.buffer[:OVERSIZE_HEAD_BYTES]) if big else msg.bytes
        return Frame(data, str(msg.get("User-Id") or "").encode(), int(time.time() * 1000), size)

    def stop(self) -> None:
        """Ask the loop to end (idempotent)."""
        self._stopping.set()
