"""The ingest receive loop: owns the agents' SUB socket, receives frames (Curve-authenticated by
ZAP), accepts each at once (`acceptance.Acceptor`: decode, identity, limits, live feed) and hands
what it accepted to the writer's bounded queue. Nothing here waits for DuckDB; when the queue is
full it stops reading (back-pressure into ZeroMQ's high-water mark, then the agents' spools).
It sleeps in one `zmq.poll` until a frame arrives, `stop` wakes it, or the allowlist is due for
its scan. When a key leaves the allowlist it re-binds, so every peer re-handshakes and the
revoked one is cut off."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.inbound import Frame, Inbound
from legion.aggregator.telemetry import IngestTelemetry
from legion.kernel.curve import server_socket

__all__ = ["Accept", "Frame", "Inbound", "Receiver", "heartbeat_ms"]

log = logging.getLogger("legion.aggregator.ingest")

ALLOWLIST_POLL_SECS = 1.0
ALLOWLIST_FULL_SCAN_SECS = 10.0
"""Every `ALLOWLIST_POLL_SECS` the receiver looks at the allowlist directory's own mtime (adding or
removing a key changes it) and rescans the key files only when it moved, or when this long has
passed since the last scan (a key rewritten in place changes only its own mtime). A scan stats
every key file: ~2 ms of this thread at 200 keys, which held frames back once a second."""
OVERSIZE_HEAD_BYTES = 4096
"""Of a frame over `max_message_bytes` only this much is kept (its header, for the ack)."""
FULL_WAIT_SECS = 0.1
"""While the writer's queue is full, how often the receiver looks whether it was stopped."""
HANDOFF_FRAMES = 32
"""Frames read and accepted before they are handed to the writer together: the writer wakes once
per hand-off instead of once per frame (each wake-up takes the GIL from the receiver)."""

Accept = Callable[[Frame], Inbound | None]
"""What the receiver does with each frame before queueing it (None: dropped, counted)."""


def heartbeat_ms(config: AggregatorSettings) -> int:
    """ZMTP heartbeat interval of the aggregator's agent-facing sockets."""
    return int(config.aggregator.heartbeat_interval_secs * 1000)


class Receiver(threading.Thread):
    """Owns the ingest SUB socket: receives frames, accepts them (`accept`; without one the
    frames go on as they are, for the writer to accept) and hands them to a bounded queue."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]], config: AggregatorSettings,
                 keypair: tuple[bytes, bytes], registry: KeyRegistry,
                 out: queue.Queue[Inbound], telemetry: IngestTelemetry,
                 accept: Accept | None = None):
        super().__init__(name="legion-ingest-recv", daemon=True)
        self._ctx, self._cfg, self._keypair = ctx, config, keypair
        self._registry, self._out, self._tm = registry, out, telemetry
        self._accept: Accept = accept or (lambda frame: frame)
        self._stopping = threading.Event()
        self._wake_addr = f"inproc://legion-ingest-recv-wake-{id(self):x}"
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
        wake = self._ctx.socket(zmq.PULL)
        wake.bind(self._wake_addr)
        self.ready.set()
        known = set(self._registry.nodes())
        next_scan = time.monotonic() + ALLOWLIST_POLL_SECS
        listing, next_full_scan = self._listing(), time.monotonic() + ALLOWLIST_FULL_SCAN_SECS
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                wait_ms = max(0, int((next_scan - time.monotonic()) * 1000) + 1)
                if sock in dict(poller.poll(wait_ms)):  # a frame, `stop`, or the scan is due
                    self._drain(sock)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + ALLOWLIST_POLL_SECS
                    now_listing = self._listing()
                    if now_listing is not None and now_listing == listing \
                            and time.monotonic() < next_full_scan:
                        continue
                    listing = now_listing
                    next_full_scan = time.monotonic() + ALLOWLIST_FULL_SCAN_SECS
                    self._registry.refresh()
                    current = set(self._registry.nodes())
                    if known - current:
                        log.info("event=key_revoked count=%d action=rebind", len(known - current))
                        poller.unregister(sock)
                        sock.close(linger=0)
                        sock = self._rebind()
                        poller.register(sock, zmq.POLLIN)
                        self._tm.add(socket_rebinds=1)
                    known = current
        finally:
            sock.close(linger=0)
            wake.close(linger=0)

    def _listing(self) -> int | None:
        """The allowlist directory's mtime (ns), None when it cannot be read (then it is
        scanned, and the scan logs why)."""
        try:
            return os.stat(self._registry.directory).st_mtime_ns
        except OSError:
            return None

    def _drain(self, sock: zmq.Socket[Any]) -> None:
        """Accept and queue what the socket holds (at most 1,000 frames), handed off in groups
        of at most `HANDOFF_FRAMES` and never more than the writer's queue has room for (one
        frame when it is full). Each hand-off waits while the queue is full: the receiver stops
        reading, which pushes back into ZeroMQ's HWM and finally the agents' spools (accepted
        data is never dropped)."""
        read = 0
        while read < 1000:
            room = self._out.maxsize - self._out.qsize() if self._out.maxsize > 0 \
                else HANDOFF_FRAMES
            items: list[Inbound] = []
            n, empty = 0, False
            for n in range(1, max(1, min(HANDOFF_FRAMES, room)) + 1):
                try:
                    msg = sock.recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    n, empty = n - 1, True
                    break
                item = self._accept(self._frame(msg))
                if item is not None:
                    items.append(item)
            read += n
            if n:
                self._tm.add(frames_received=n)
            for item in items:
                self._hand_off(item)
            if empty:
                return

    def _hand_off(self, item: Inbound) -> None:
        """Queue one accepted item, waiting while the queue is full (until stopped)."""
        while not self._stopping.is_set():
            try:
                self._out.put(item, timeout=FULL_WAIT_SECS)
                return
            except queue.Full:
                self._tm.add(queue_full_waits=1)

    def _frame(self, msg: zmq.Frame) -> Frame:
        size = len(msg.buffer)
        big = size > self._cfg.aggregator.max_message_bytes
        data = bytes(msg.buffer[:OVERSIZE_HEAD_BYTES]) if big else msg.bytes
        return Frame(data, str(msg.get("User-Id") or "").encode(), int(time.time() * 1000), size)

    def stop(self) -> None:
        """End the loop (idempotent): wakes it from its poll."""
        self._stopping.set()
        wake = self._ctx.socket(zmq.PUSH)
        try:
            wake.connect(self._wake_addr)
            wake.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the loop has ended (or never started): nothing to wake
        finally:
            wake.close(linger=100)
