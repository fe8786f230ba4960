"""`free_port` picks below the kernel's ephemeral range, so no outgoing connection can take
the port between the pick and the bind (a CI run once lost a test to exactly that)."""

from __future__ import annotations

import socket

from legion.kernel.ports import LOWEST, ephemeral_start, free_port


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
