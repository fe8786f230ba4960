"""`free_port` picks below the kernel's ephemeral range, so no outgoing connection can take
the port between the pick and the bind (a CI run once lost a test to exactly that)."""

from __future__ import annotations

import socket

from legion.kernel.ports import LOWEST, ephemeral_start, free_port, free_ports


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound() -> None:
    start = ephemeral_start()
    assert start > LOWEST
    picks = [free_port() for _ in range(50)]
    assert all(LOWEST <= p < start for p in picks), picks
    assert len(set(picks)) > 40  # spread over the range, not one port handed out again
    for p in picks[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
            s.listen()


def test_outgoing_connections_draw_their_local_port_from_the_ephemeral_range() -> None:
    """What makes a `bind(0)` pick unsafe: a client socket's local port comes from the same
    range, so it can be the very port a test picked and has not bound yet."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            assert client.getsockname()[1] >= ephemeral_start()


def test_ports_picked_together_differ_from_each_other_and_from_those_to_avoid(
        monkeypatch) -> None:
    # A narrow range (1,040 ports): independent picks of 20 would repeat one in ~17 % of the
    # calls, so in 50 calls a repeat is near certain unless picks are kept apart.
    from legion.kernel import ports
    monkeypatch.setattr(ports, "LOWEST", 20_000)
    monkeypatch.setattr(ports, "ephemeral_start", lambda: 21_040)
    avoid = list(range(20_000, 20_005))
    for _ in range(50):
        picked = free_ports(20, avoid=avoid)
        assert len(set(picked)) == 20 and not set(picked) & set(avoid)
        assert all(20_000 <= p < 21_040 for p in picked)
