"""`free_port` picks below the kernel's ephemeral range, so no outgoing connection can take
the port between the pick and the bind (a CI run once lost a test to exactly that)."""

from __future__ import annotations

import socket
from collections.abc import Collection
from pathlib import Path

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


def test_a_setup_moved_to_free_ports_keeps_clear_of_the_ports_it_named(
        tmp_path: Path, monkeypatch) -> None:
    """`use_free_ports` on a copy of a setup (as a second aggregator is made): new listeners,
    none on a port the copy named (the first one may not be bound yet), the agent following."""
    import json

    from legion.cli import setup_cmds
    from legion.cli.setup_cmds import use_free_ports, write_setup

    avoided: list[set[int]] = []  # what each pick was told to keep clear of

    def spy(n: int, host: str = "127.0.0.1", avoid: Collection[int] = ()) -> list[int]:
        avoided.append(set(avoid))
        return free_ports(n, host, avoid)

    monkeypatch.setattr(setup_cmds, "free_ports", spy)
    raw = json.loads(Path(write_setup(tmp_path)["config"]).read_text())
    use_free_ports(raw)
    first = json.loads(json.dumps(raw))
    use_free_ports(raw, agent=False)
    keys = (("aggregator", "ingest_bind"), ("aggregator", "ack_bind"),
            ("analytics", "jobs_bind"), ("analytics", "results_bind"))

    def ports(cfg: dict) -> set[int]:
        return {int(cfg[s][k].rpartition(":")[2]) for s, k in keys} \
            | {cfg["dashboard_config"]["websocket_port"]}

    assert len(ports(first)) == 5 and len(ports(raw)) == 5
    assert not ports(first) & ports(raw)
    assert ports(first) <= avoided[1]  # kept clear by design, not by the luck of the draw
    assert first["agent"]["aggregator_endpoint"] == first["aggregator"]["ingest_bind"]
    assert first["agent"]["ack_endpoint"] == first["aggregator"]["ack_bind"]
    assert raw["agent"] == first["agent"]  # agent=False: it still points at the first
    kept = free_port()
    use_free_ports(raw, web=kept)
    assert raw["dashboard_config"]["websocket_port"] == kept and kept in avoided[2]
