"""Failover decisions with a manual clock; failback with a real Curve handshake on loopback;
what the agent resends at each kind of switch, on a real spool, delivery and Curve sockets."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import zmq

from legion.kernel.curve import client_socket, server_socket
from legion.node_agent.agent import NodeAgent
from legion.node_agent.failover import Failover, endpoints_of
from tests.conftest import free_port, free_ports
from tests.node_agent.test_delivery import make, send_live


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def no_probe(endpoint: str) -> zmq.Socket:
    raise AssertionError("no probe expected")


def test_fails_over_only_when_batches_wait_and_acks_stop() -> None:
    clock = Clock()
    f = Failover([("tcp://a:1", "tcp://a:2"), ("tcp://b:1", "tcp://b:2")], 10.0, 15.0, clock)
    clock.t += 11
    assert f.decide(0.0, no_probe) is None  # nothing waiting: quiet is fine
    assert f.decide(5.0, no_probe) is None  # waiting, but not long enough
    f.on_ack()
    clock.t += 5
    assert f.decide(12.0, no_probe) is None  # an ack 5 s ago: the aggregator is alive
    clock.t += 6
    assert f.decide(12.0, no_probe) == 1 and f.active == 1
    assert f.last_switch == "failover"  # the agent resends what is unacked at once
    assert f.decide(30.0, no_probe) is None  # the new one gets its own grace period
    clock.t += 11
    assert f.decide(40.0, lambda ep: _unreachable_probe(ep)) == 0  # both silent: round robin
    assert f.counters["failovers_total"] == 2


def _unreachable_probe(endpoint: str) -> zmq.Socket:
    raise AssertionError("failover comes before any probe")


def test_single_endpoint_never_switches() -> None:
    clock = Clock()
    f = Failover([("tcp://a:1", "tcp://a:2")], 1.0, 1.0, clock)
    clock.t += 100
    assert f.decide(100.0, no_probe) is None


def test_fails_back_after_a_real_curve_handshake(tmp_path: Path) -> None:
    ctx = zmq.Context()
    server_keys = zmq.curve_keypair()
    client_keys = zmq.curve_keypair()
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    clock = Clock()
    f = Failover([(ep, "tcp://127.0.0.1:1"), ("tcp://127.0.0.1:2", "tcp://127.0.0.1:3")],
                 1.0, 2.0, clock)
    f.active, f.switched_at = 1, clock.t  # on the second aggregator, the first one down

    def probe(endpoint: str) -> zmq.Socket:
        s = client_socket(ctx, zmq.PUB, server_keys[0], client_keys)
        s.connect(endpoint)
        return s

    f.on_ack()
    assert f.decide(0.0, probe) is None  # too early to probe
    clock.t += 3
    assert f.decide(0.0, probe) is None  # probing, but nobody listens yet
    server = server_socket(ctx, zmq.SUB, server_keys)  # the first aggregator comes back
    server.bind(ep)
    try:
        deadline = time.monotonic() + 30
        result = None
        while result is None and time.monotonic() < deadline:
            f.on_ack()
            result = f.decide(0.0, probe)
            time.sleep(0.1)
        assert result == 0 and f.active == 0 and f.counters["failbacks_total"] == 1
        assert f.last_switch == "failback"  # no resend at once: the one left still acks
    finally:
        f.close_probe()
        server.close(linger=0)
        ctx.term()


def test_endpoint_list_defaults_to_the_single_pair() -> None:
    from legion.node_agent.config import AgentConfig

    assert endpoints_of(AgentConfig()) == [("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")]
    two = AgentConfig(aggregator_endpoints=("tcp://a:1", "tcp://b:1"),
                      ack_endpoints=("tcp://a:2", "tcp://b:2"))
    assert endpoints_of(two) == [("tcp://a:1", "tcp://a:2"), ("tcp://b:1", "tcp://b:2")]


def test_endpoint_lists_must_pair_up() -> None:
    import pytest

    from legion.cli.config import config_from_dict
    from legion.kernel.errors import ConfigError

    with pytest.raises(ConfigError, match="agent: aggregator_endpoints and ack_endpoints"):
        config_from_dict({"agent": {"aggregator_endpoints": ["tcp://a:1", "tcp://b:1"],
                                    "ack_endpoints": ["tcp://a:2"]}})


def test_a_failover_resends_at_once_a_failback_leaves_batches_to_their_timers(
        tmp_path: Path) -> None:
    # After a failback the aggregator left behind still acks; resending everything unacked to
    # the first one at once would store what the second was still gathering twice (issue 17).
    ctx = zmq.Context()
    server_keys, client_keys = zmq.curve_keypair(), zmq.curve_keypair()
    first, second = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    sp, delivery, dclock = make(tmp_path, timeout=10.0)
    fclock = Clock()
    agent = object.__new__(NodeAgent)  # only the parts `_maybe_switch` uses
    agent.node, agent.delivery = "n1", delivery
    agent.config = SimpleNamespace(heartbeat_interval_secs=1.0)
    agent._server_public, agent._keypair = server_keys[0], client_keys
    agent.failover = Failover([(first, "tcp://127.0.0.1:1"), (second, "tcp://127.0.0.1:2")],
                              5.0, 2.0, fclock)
    servers = []
    for ep in (first, second):
        servers.append(server_socket(ctx, zmq.SUB, server_keys))
        servers[-1].bind(ep)
    pub = agent._publisher(ctx, first)
    try:
        for seq in (1, 2, 3):
            send_live(sp, delivery, dclock, seq)
        dclock.t += 6
        fclock.t += 6  # no ack for 6 s, batches waiting 6 s: the first aggregator is gone
        pub = agent._maybe_switch(ctx, pub)
        assert agent.failover.active == 1 and agent.failover.last_switch == "failover"
        assert [s for s, _ in delivery.due_resends()] == [1, 2, 3]  # resent at once

        dclock.t += 1
        fclock.t += 3  # the second acks; the first is back and the probe's handshake succeeds
        deadline = time.monotonic() + 30
        while agent.failover.active != 0 and time.monotonic() < deadline:
            agent.failover.on_ack()
            pub = agent._maybe_switch(ctx, pub)
            time.sleep(0.05)
        assert agent.failover.active == 0 and agent.failover.last_switch == "failback"
        assert delivery.due_resends() == []  # left to their own timers
        dclock.t += 30
        assert [s for s, _ in delivery.due_resends()] == [1, 2, 3]  # which still fire
    finally:
        agent.failover.close_probe()
        pub.close(linger=0)
        for s in servers:
            s.close(linger=0)
        sp.close()
        ctx.term()
