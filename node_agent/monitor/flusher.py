"""The per-process flusher: one daemon thread and one PUSH socket per endpoint for all monitors.

This is the one documented piece of process-global state (`get_flusher()`): 18 agents in one
process share one thread and one socket, and the envelope of an interval carries all of them. It
starts with the first monitor, exits when the last one is closed or collected, is recreated in a
forked child (monitors do not survive a fork: create them in the child), and makes a best-effort
final flush at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from legion.kernel.config import CONFIG_ENV, default_config_path, parse_section, read_document
from legion.kernel.errors import ConfigError
from legion.node_agent.config import AgentConfig
from legion.proto import KIND_METRICS, Envelope, MetricsBatch, Sample, encode

log = logging.getLogger("legion.node_agent.monitor")

ENDPOINT_ENV = "LEGION_MONITOR_ENDPOINT"
NODE_ENV = "LEGION_NODE"
NODE = "local"
SNDHWM = 32  # a few dozen reports; beyond that the listener is stuck and we drop (counted)
LINGER_MS = 200
CHUNK = 10_000  # samples per envelope, well below MAX_SERIES_PER_BATCH
_SCHEMES = ("ipc://", "tcp://", "inproc://")


def resolve_endpoint(endpoint: str | None = None) -> str:
    """Explicit endpoint, else $LEGION_MONITOR_ENDPOINT, else the config's agent.monitor_endpoint.

    The config is $LEGION_CONFIG or ./monitoring_config.json when present (only its `agent`
    section is read), else the defaults (relative ipc:// paths resolve against the config's
    directory); `{node}` in the endpoint
    becomes $LEGION_NODE or the host name.
    """
    ep = endpoint or os.environ.get(ENDPOINT_ENV)
    if not ep:
        ep = _configured_endpoint()
    if isinstance(ep, str) and "{node}" in ep:  # one socket per node agent on a shared box
        ep = ep.replace("{node}", os.environ.get(NODE_ENV) or socket.gethostname())
    if not isinstance(ep, str) or not ep.startswith(_SCHEMES):
        raise ConfigError([f"endpoint: must start with ipc://, tcp:// or inproc:// (got {ep!r})"])
    return ep


def _configured_endpoint() -> str:
    """`agent.monitor_endpoint` of the config file when there is one, else the default."""
    agent, base_dir = AgentConfig(), "."
    path = default_config_path()
    if os.environ.get(CONFIG_ENV) or os.path.exists(path):
        try:
            raw, folder = read_document(path)
            problems: list[str] = []
            section = parse_section(AgentConfig, raw.get("agent") if isinstance(raw, dict)
                                    else None, "agent", problems)
            if problems:
                raise ConfigError(problems)
            agent, base_dir = section, str(folder)
        except ConfigError as exc:  # the app must not die for its monitoring config
            log.warning("event=monitor_config_ignored path=%s error=%r", path, str(exc))
    return agent.resolved(base_dir).monitor_endpoint


@dataclass
class _Request:
    monitor: Any
    close: bool
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class Flusher:
    """Aggregates every registered monitor each interval and pushes one envelope per endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._monitors: weakref.WeakSet[Any] = weakref.WeakSet()
        self._requests: deque[_Request] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # epoch: this process's flusher lifetime (ms since epoch, pid in the low 20 bits)
        self.epoch = (int(time.time() * 1000) << 20) | (os.getpid() & 0xFFFFF)
        self._seq: dict[tuple[int, str], int] = {}
        self._ctx: zmq.Context[zmq.Socket[Any]] | None = None
        self._proc: Any = None
        self._ncpu = 1
        self._last_warn = 0.0
        self._born: dict[tuple[int, str], float] = {}  # socket key -> creation time
        self.flush_cpu_ns = 0  # thread CPU spent aggregating/encoding/sending (bench reads it)
        self.ticks = 0

    # ---- called from application threads -------------------------------------------------
    def register(self, mon: Any) -> None:
        """Add a monitor; starts the thread if needed."""
        mon._next_due = time.monotonic() + mon.interval_secs
        with self._lock:
            self._monitors.add(mon)
            self._ensure_thread()
        self._wake.set()

    def flush_now(self, mon: Any, timeout: float) -> bool:
        """Report `mon` now; wait up to `timeout` for the send attempt."""
        return self._submit(_Request(mon, close=False), timeout)

    def unregister(self, mon: Any, timeout: float) -> None:
        """Final report for `mon`, then forget it."""
        self._submit(_Request(mon, close=True), timeout)
        with self._lock:
            self._monitors.discard(mon)

    def unregister_many(self, mons: list[Any], timeout: float) -> None:
        """Final report for several monitors in one envelope, then forget them."""
        reqs = [_Request(m, close=True) for m in mons]
        self._submit_all(reqs, timeout)
        with self._lock:
            for m in mons:
                self._monitors.discard(m)

    def _submit(self, req: _Request, timeout: float) -> bool:
        self._submit_all([req], timeout)
        return req.ok

    def _submit_all(self, reqs: list[_Request], timeout: float) -> None:
        with self._lock:
            reqs = [r for r in reqs if r.monitor in self._monitors and not self._stopping]
            if not reqs:
                return
            self._requests.extend(reqs)
            self._ensure_thread()
        self._wake.set()
        if threading.current_thread() is self._thread:
            return  # cannot wait for ourselves
        deadline = time.monotonic() + timeout
        for r in reqs:
            r.done.wait(max(deadline - time.monotonic(), 0.0))

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="legion-monitor-flusher",
                                            daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 1.0) -> None:
        """Final flush of every monitor and close the sockets (runs at interpreter exit)."""
        with self._lock:
            self._stopping = True
            t = self._thread
        self._wake.set()
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        if self._ctx is not None and (t is None or not t.is_alive()):
            self._ctx.term()
            self._ctx = None

    # ---- the flusher thread --------------------------------------------------------------
    def _run(self) -> None:
        socks: dict[tuple[int, str], zmq.Socket[Any]] = {}
        timeout = 0.0
        try:
            while True:
                self._wake.wait(timeout)
                self._wake.clear()
                with self._lock:
                    reqs = list(self._requests)
                    self._requests.clear()
                    mons = list(self._monitors)
                    stopping = self._stopping
                now = time.monotonic()
                due = {id(r.monitor): r.monitor for r in reqs}
                for m in mons:
                    if stopping or m._next_due <= now:
                        m._next_due = max(m._next_due + m.interval_secs, now + 0.001)
                        if m.reporting or stopping:
                            due[id(m)] = m
                t0 = time.thread_time_ns()
                results = self._flush(list(due.values()), socks) if due else {}
                self.flush_cpu_ns += time.thread_time_ns() - t0
                self.ticks += 1
                with self._lock:
                    for r in reqs:
                        if r.close:
                            self._monitors.discard(r.monitor)
                    live = {(id(m.context) if m.context is not None else 0, m.endpoint): m
                            for m in self._monitors}
                    done = stopping or (not live and not self._requests)
                    if done:
                        self._thread = None
                    nxt = min((m._next_due for m in live.values()), default=now + 1.0)
                for r in reqs:
                    r.ok = results.get(id(r.monitor), False)
                    r.done.set()
                for k in [k for k in socks if k not in live or done]:
                    socks.pop(k).close(LINGER_MS)
                    self._born.pop(k, None)
                if done:
                    return
                for k, m in live.items():  # connect early: the first report must not find
                    if k not in socks:       # a connection still being set up (IMMEDIATE)
                        try:
                            socks[k] = self._socket(k, m.context)
                        except zmq.ZMQError:
                            pass  # counted as a drop when its report is due
                timeout = min(max(nxt - time.monotonic(), 0.0), 1.0)
        except Exception:  # pragma: no cover - a bug here must not take the app down
            log.exception("event=monitor_flusher_crashed")
            with self._lock:
                self._thread = None
        finally:
            for s in socks.values():
                s.close(0)

    def _flush(self, due: list[Any], socks: dict[tuple[int, str], Any]) -> dict[int, bool]:
        ts_ms = int(time.time() * 1000)
        proc = self._proc_reading() if any(m.process_metrics for m in due) else None
        groups: dict[tuple[int, str], list[Any]] = {}
        for m in due:
            groups.setdefault((id(m.context) if m.context is not None else 0, m.endpoint),
                              []).append(m)
        results: dict[int, bool] = {}
        for key, mons in groups.items():
            samples: list[Sample] = []
            members: list[tuple[Any, int]] = []
            for m in mons:
                try:
                    got = m.state.collect(ts_ms, proc)
                except Exception as exc:  # noqa: BLE001 - one bad monitor must not stop others
                    m.state.last_error = f"collect: {exc!r}"
                    continue
                samples.extend(got)
                members.append((m, len(got)))
            err = self._send(key, mons[0].context, samples, ts_ms, socks)
            for m, n in members:
                st = m.state
                st.reports += 1
                if err is None:
                    st.sent += 1
                else:
                    st.dropped += 1
                    st.dropped_samples += n
                    st.last_error = err
                results[id(m)] = err is None
            if err is not None:
                self._warn(key[1], err)
        return results

    def _send(self, key: tuple[int, str], ctx: Any, samples: list[Sample], ts_ms: int,
              socks: dict[tuple[int, str], Any]) -> str | None:
        sock = socks.get(key)
        try:
            if sock is None:
                sock = socks[key] = self._socket(key, ctx)
            err = None
            for i in range(0, max(len(samples), 1), CHUNK):
                seq = self._seq[key] = self._seq.get(key, 0) + 1  # per endpoint: gaps = loss
                env = Envelope(KIND_METRICS, NODE, self.epoch, seq, ts_ms,
                               MetricsBatch.from_samples(samples[i:i + CHUNK]))
                frame = encode(env)
                try:
                    sock.send(frame, zmq.NOBLOCK)
                except zmq.Again:
                    # a socket made moments ago may still be connecting: give it (this thread
                    # only, never the app) a short grace period once
                    if time.monotonic() - self._born.get(key, 0.0) < 1.0 and \
                            sock.poll(100, zmq.POLLOUT):
                        sock.send(frame, zmq.NOBLOCK)
                    else:
                        err = "would_block"  # no listener connected, or its queue is full
            return err
        except zmq.ZMQError as exc:
            if key in socks:
                socks.pop(key).close(0)
            return f"zmq: {exc}"
        except Exception as exc:  # noqa: BLE001 - counted as a drop with its reason
            return f"encode: {exc!r}"

    def _socket(self, key: tuple[int, str], ctx: Any) -> Any:
        endpoint = key[1]
        if ctx is None:
            if self._ctx is None:
                self._ctx = zmq.Context()
            ctx = self._ctx
        self._born[key] = time.monotonic()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no peer: send fails at once (counted), no queueing
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError:
            sock.close(0)
            raise
        return sock

    def _proc_reading(self) -> tuple[float, float] | None:
        try:
            if self._proc is None:
                import psutil
                self._proc = psutil.Process()
                self._ncpu = psutil.cpu_count() or 1
                self._proc.cpu_percent(None)  # primes the counter; first value is meaningless
                return None
            return (self._proc.cpu_percent(None) / self._ncpu, self._proc.memory_percent())
        except Exception:  # noqa: BLE001 - psutil missing or process gone: omit the reading
            return None

    def _warn(self, endpoint: str, err: str) -> None:
        now = time.monotonic()
        if not self._last_warn or now - self._last_warn >= 600.0:  # once, then every 10 min
            self._last_warn = now
            log.warning("event=monitor_report_dropped endpoint=%s reason=%s", endpoint, err)


_FLUSHER: Flusher | None = None
_FLUSHER_LOCK = threading.Lock()
_HOOKED = False


def get_flusher() -> Flusher:
    """The process's flusher (created on first use; a forked child gets a fresh one)."""
    global _FLUSHER, _HOOKED
    with _FLUSHER_LOCK:
        if _FLUSHER is None:
            _FLUSHER = Flusher()
            if not _HOOKED:
                _HOOKED = True
                atexit.register(_at_exit)
                if hasattr(os, "register_at_fork"):
                    os.register_at_fork(after_in_child=_after_fork)
        return _FLUSHER


def close_monitors(monitors: list[Any], timeout: float = 1.0) -> None:
    """Close many monitors at once: their final reports travel in one envelope."""
    mons = [m for m in monitors if not m._closed]
    for m in mons:
        m._closed = True
    if mons:
        get_flusher().unregister_many(mons, timeout)


def _at_exit() -> None:
    if _FLUSHER is not None:
        _FLUSHER.shutdown(1.0)


def _after_fork() -> None:
    global _FLUSHER, _FLUSHER_LOCK
    _FLUSHER = None  # the parent's thread and sockets do not exist here; never touch them
    _FLUSHER_LOCK = threading.Lock()
