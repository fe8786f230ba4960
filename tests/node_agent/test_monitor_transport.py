"""AgentMonitor ↔ MonitorReceiver over real sockets: no listener, restarts, bad frames."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from legion.kernel.errors import TransportError
from legion.node_agent import AgentMonitor
from legion.node_agent.monitor_receiver import MonitorReceiver
from legion.proto import (
    ACK_COMMITTED,
    KIND_ACK,
    KIND_METRICS,
    Ack,
    Envelope,
    MetricsBatch,
    Sample,
    encode,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_no_listener_never_blocks_and_counts_drops(endpoint: str) -> None:
    mon = AgentMonitor("lonely", "ops", endpoint=endpoint, interval_secs=0.05)
    try:
        t0 = time.perf_counter()
        for _ in range(10_000):
            with mon.track_task("t"):
                pass
        mon.track_message_sent({"to": "nobody"})
        assert time.perf_counter() - t0 < 2.0
        t0 = time.perf_counter()
        assert mon.flush() is False
        assert time.perf_counter() - t0 < 1.0
        wait_for(lambda: mon.stats()["dropped"] >= 3)
        st = mon.stats()
        assert st["sent"] == 0 and st["dropped_samples"] > 0 and st["last_error"] == "would_block"
    finally:
        mon.close(timeout=0.5)


def test_listener_restart_reconnects(endpoint: str, ctx: zmq.Context) -> None:
    mon = AgentMonitor("phoenix", "ops", endpoint=endpoint, interval_secs=0.05)
    try:
        r1 = MonitorReceiver(ctx, endpoint)
        with mon.track_task("a"):
            pass
        got: list[Sample] = []
        wait_for(lambda: bool(got.extend(r1.drain()) or got))
        r1.close()  # node agent stops
        with mon.track_task("b"):
            pass
        wait_for(lambda: mon.stats()["dropped"] >= 2)
        dropped = mon.stats()["dropped"]
        r2 = MonitorReceiver(ctx, endpoint)  # node agent restarts on the same endpoint
        got2: list[Sample] = []

        def seen_b() -> bool:
            got2.extend(r2.drain())
            return any(s.name == "agent_tasks_total" and ("task_type", "b") in s.labels
                       for s in got2)
        wait_for(seen_b, timeout=10.0)
        drops = [s.value for s in got2 if s.name == "legion_monitor_dropped_total"]
        assert drops and drops[-1] >= dropped  # the receiver learns what was lost meanwhile
        # counters are cumulative, so nothing tracked while it was down is lost
        ok_b = [s.value for s in got2 if s.name == "agent_tasks_total"
                and ("task_type", "b") in s.labels and ("status", "ok") in s.labels]
        assert ok_b[-1] == 1
        r2.close()
    finally:
        mon.close(timeout=0.5)


def test_tcp_loopback(ctx: zmq.Context) -> None:
    r = MonitorReceiver(ctx, "tcp://127.0.0.1:*")
    ep = r.endpoint
    assert not ep.endswith("*")
    mon = AgentMonitor("net", "ops", endpoint=ep, interval_secs=0.05)
    try:
        mon.track_message_received("hi")
        got: list[Sample] = []
        wait_for(lambda: any(s.name == "agent_messages_received_total" and s.value == 1
                             for s in got + (got.extend(r.drain()) or [])))
    finally:
        mon.close()
        r.close()


def test_receiver_counts_bad_frames_by_reason(endpoint: str, ctx: zmq.Context) -> None:
    r = MonitorReceiver(ctx, endpoint)
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    now = int(time.time() * 1000)
    good = MetricsBatch.from_samples(
        [Sample("agent_x_total", (("agent_id", str(i)),), float(i), now) for i in range(25)])
    push.send(b"\xc1garbage")
    push.send(encode(Envelope(KIND_ACK, "local", 1, 1, now, Ack(ACK_COMMITTED, 1, ((1, 1),)))))
    push.send(encode(Envelope(KIND_METRICS, "local", 7, 1, now, good)))
    push.send(encode(Envelope(KIND_METRICS, "local", 7, 4, now, good)))  # seq 2, 3 lost
    try:
        out: list[Sample] = []
        wait_for(lambda: bool(out.extend(r.drain(10)) or len(out) >= 50))
        assert len(out) == 50
        assert r.drain(10) == []
        st = r.stats()
        assert st["rejected"] == {"bad_msgpack": 1, "unknown_kind": 1}
        assert st["lost"] == 2 and st["frames"] == 4
        names = {s.name for s in r.self_samples(now)}
        assert "legion_agent_monitor_rejected_total" in names
    finally:
        push.close(0)
        r.close()


def test_receiver_bind_errors_are_transport_errors(endpoint: str, ctx: zmq.Context) -> None:
    with pytest.raises(TransportError):
        MonitorReceiver(ctx, "ipc:///tmp/" + "x" * 200 + "/m.sock")
    a = MonitorReceiver(ctx, "tcp://127.0.0.1:*")
    with pytest.raises(TransportError):
        MonitorReceiver(ctx, a.endpoint)
    a.close()
    a.close()  # idempotent
