"""The node agent's end of the AgentMonitor socket: a bound PULL socket drained without blocking.

The node agent owns the endpoint (it binds; every application process connects). For ipc:// the
directory is created with mode 0700: the socket is plain ZeroMQ (local IPC, no Curve), so file
permissions are what keep other users out. Frames are decoded with `legion.proto.decode`; bad ones
are counted by `WireError.reason` and dropped. Use one receiver from one thread.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import zmq

from legion.kernel.errors import TransportError
from legion.proto import (
    KIND_METRICS,
    Labels,
    MetricsBatch,
    Reason,
    Sample,
    WireError,
    canonical_labels,
    decode,
)
from legion.proto.limits import MAX_FRAME_BYTES

RCVHWM = 1000
_MAX_SENDERS = 256
_IPC_PATH_MAX = 107  # sun_path is 108 bytes on Linux, including the NUL


class MonitorReceiver:
    """Binds a PULL socket at `endpoint` and hands out the samples AgentMonitors pushed."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]], endpoint: str) -> None:
        self.endpoint = endpoint
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://"):]
            if len(path.encode()) > _IPC_PATH_MAX:
                raise TransportError(f"ipc path too long ({len(path)} > {_IPC_PATH_MAX}): {path}")
            d = Path(path).parent
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise TransportError(f"cannot create {d}: {exc}") from exc
        self._sock = ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, RCVHWM)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise TransportError(f"cannot bind monitor endpoint {endpoint}: {exc}") from exc
        # the endpoint actually bound (resolves tcp://host:* to the chosen port)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if endpoint.startswith("ipc://"):
            try:
                os.chmod(endpoint[len("ipc://"):], 0o600)
            except OSError:
                pass
        self._pending: deque[Sample] = deque()
        self._last_seq: dict[int, int] = {}  # sender epoch -> last seq (bounded)
        self.frames = 0
        self.samples = 0
        self.lost = 0  # envelopes missing from a sender's seq (dropped at its end or in flight)
        self.rejected: dict[str, int] = {}
        self._closed = False

    @property
    def socket(self) -> zmq.Socket[Any]:
        """The PULL socket, for a zmq.Poller; only `drain` should receive from it."""
        return self._sock

    def drain(self, max_items: int = 10_000) -> list[Sample]:
        """Up to `max_items` samples, without blocking; the rest of a frame waits for next call."""
        out: list[Sample] = []
        while len(out) < max_items:
            if not self._pending and not self._receive_one():
                break
            take = min(max_items - len(out), len(self._pending))
            out.extend(self._pending.popleft() for _ in range(take))
        self.samples += len(out)
        return out

    def _receive_one(self) -> bool:
        if self._closed:
            return False
        try:
            frame = self._sock.recv(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        except zmq.ZMQError:  # e.g. context terminated under us
            return False
        self.frames += 1
        try:
            env = decode(frame)
            if env.kind != KIND_METRICS or not isinstance(env.body, MetricsBatch):
                raise WireError(Reason.UNKNOWN_KIND, env.kind)
        except WireError as exc:
            key = exc.reason.value
            self.rejected[key] = self.rejected.get(key, 0) + 1
            return True
        self._track_seq(env.epoch, env.seq)
        self._pending.extend(env.body.samples())
        return True

    def _track_seq(self, epoch: int, seq: int) -> None:
        last = self._last_seq.get(epoch)
        if last is not None and seq > last + 1:
            self.lost += seq - last - 1
        if last is None and len(self._last_seq) >= _MAX_SENDERS:
            self._last_seq.pop(next(iter(self._last_seq)))
        if last is None or seq > last:
            self._last_seq[epoch] = seq

    def stats(self) -> dict[str, Any]:
        """Frames, samples, lost envelopes, rejections by reason."""
        return {"frames": self.frames, "samples": self.samples, "lost": self.lost,
                "rejected": dict(self.rejected), "senders": len(self._last_seq)}

    def self_samples(self, ts_ms: int) -> list[Sample]:
        """Self-telemetry as samples (`legion_agent_monitor_*`) for the node agent's batch."""
        def s(name: str, value: float, labels: Labels = ()) -> Sample:
            return Sample(name, labels, float(value), ts_ms)
        out = [s("legion_agent_monitor_frames_total", self.frames),
               s("legion_agent_monitor_samples_total", self.samples),
               s("legion_agent_monitor_lost_total", self.lost)]
        out += [s("legion_agent_monitor_rejected_total", n, canonical_labels({"reason": r}))
                for r, n in sorted(self.rejected.items())]
        return out

    def close(self) -> None:
        """Close the socket (idempotent); for ipc:// the socket file is removed by ZeroMQ."""
        if not self._closed:
            self._closed = True
            self._sock.close(0)
