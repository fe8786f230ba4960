"""Every refusal is counted: unknown Curve keys, frames over `max_message_bytes` (acked
`rejected`), and the counters that were missing from the aggregator's self-metrics and from the
WebSocket heartbeat. Real aggregator, real Curve sockets and a real gateway on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import zmq

from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
from legion.aggregator.gateway import ws as ws_mod
from legion.aggregator.service import Aggregator
from legion.aggregator.store import Store
from legion.aggregator.telemetry import IngestTelemetry
from legion.cli.config import config_from_dict, load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.curve import client_socket, load_public
from legion.kernel.errors import ConfigError
from legion.node_agent.wire_split import split_for_wire
from legion.proto import Envelope, Sample, decode, encode, encode_samples
from legion.proto import limits as L
from tests.aggregator.curve_peer import CurvePeer, aggregator_with_peers, series_batch
from tests.conftest import make_setup, wait_for

MAX_BYTES = 64 * 1024


@pytest.fixture
def aggregator(tmp_path: Path):
    cfg_path = make_setup(tmp_path / "legion", aggregator={"max_message_bytes": MAX_BYTES})
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "big")
    agg = Aggregator(cfg.aggregator_settings())
    agg.start()
    ctx = zmq.Context()
    yield cfg, agg, ctx
    agg.stop()
    ctx.destroy(linger=0)


def test_a_key_outside_the_allowlist_is_counted(aggregator) -> None:
    cfg, agg, ctx = aggregator
    stranger = client_socket(ctx, zmq.PUB, load_public(cfg.path(cfg.agent.server_public_key_path)),
                             zmq.curve_keypair())
    stranger.connect(cfg.agent.aggregator_endpoint)
    try:
        def refused() -> bool:
            stranger.send(encode(Envelope("metrics", "big", 1, 1, int(time.time() * 1000),
                                          series_batch("x_value", 0, 1))))
            return agg.status()["ingest"]["handshake_failures"].get("unknown_key", 0) >= 1
        wait_for(refused, 30)
        assert agg.status()["ingest"]["batches_accepted"] == 0
    finally:
        stranger.close(linger=0)


def test_a_frame_over_the_limit_is_counted_and_acked_rejected(aggregator) -> None:
    cfg, agg, ctx = aggregator
    peer = CurvePeer(ctx, cfg, "big")
    try:
        peer.connect()
        # ~3.3x the limit: read by the socket, refused by the writer with an ack.
        big = series_batch("big_value_with_a_long_name_for_bytes", 0, 3000)
        frame = encode(Envelope("metrics", "big", 1, 2, int(time.time() * 1000), big))
        assert MAX_BYTES < len(frame) < 4 * MAX_BYTES
        peer.sent[2] = time.monotonic()
        peer.send_raw(frame)
        wait_for(lambda: (peer.pump(100), 2 in peer.acks["rejected"])[1], 30)
        assert agg.status()["ingest"]["rejected"].get("frame_too_large") == 1
        # the same node's next, normal batch goes through
        peer.send(3, series_batch("big_value", 0, 10))
        wait_for(lambda: (peer.pump(100), 3 in peer.acks["committed"])[1], 30)
    finally:
        peer.close()


def test_a_frame_far_over_the_limit_is_counted_and_acked_rejected(tmp_path: Path) -> None:
    """Issue 13: a 16.8 MB frame against max_message_bytes = 4 MiB (over 4x) was dropped by
    ZeroMQ's MAXMSGSIZE unseen: no count, no ack, resent forever. Now every oversized frame is
    read, cut to its head at once, counted and acked. Real Curve sockets on loopback."""
    limit = 4 * 1024 * 1024
    cfg = load_config(make_setup(tmp_path / "legion", aggregator={"max_message_bytes": limit}))
    add_agent_key(cfg, "big")
    with aggregator_with_peers(cfg, "big") as (agg, [peer]):
        frame = encode(Envelope("metrics", "big", 1, 2, int(time.time() * 1000),
                                series_batch("huge_value", 0, 10)))
        frame += b"\0" * (16_800_000 - len(frame))  # trailing bytes: the size is what counts
        assert len(frame) > 4 * limit
        peer.send_raw(frame)
        wait_for(lambda: (peer.pump(100), 2 in peer.acks["rejected"])[1], 60)
        assert agg.status()["ingest"]["rejected"].get("frame_too_large") == 1
        assert [n["last_seq"] for n in agg.store.nodes() if n["node"] == "big"] == [1]
        peer.send(3, series_batch("huge_value", 0, 10))  # the connection is still up
        wait_for(lambda: (peer.pump(100), 3 in peer.acks["committed"])[1], 30)


def test_the_largest_sample_fits_the_smallest_frame_limit() -> None:
    """So `split_for_wire` always yields frames a real agent may send: one sample cannot be
    split further, and the smallest `max_message_bytes` the config accepts still holds it."""
    with pytest.raises(ConfigError, match="aggregator.max_message_bytes"):
        config_from_dict({"aggregator": {"max_message_bytes": 65535}})
    smallest = config_from_dict({"aggregator": {"max_message_bytes": 65536}})
    now = int(time.time() * 1000)
    labels = tuple((f"k{i:02d}".ljust(L.MAX_LABEL_KEY_LEN, "k"), "\U0001d11e" *
                    L.MAX_LABEL_VALUE_LEN) for i in range(L.MAX_LABELS))
    worst = Sample("m" * L.MAX_NAME_LEN, labels, 1.0, now)
    frame = encode_samples("n" * L.MAX_NODE_LEN, 2**62, 2**62, now, [worst])
    assert len(decode(frame).body) == 1
    assert len(frame) <= smallest.aggregator.max_message_bytes
    wide = [Sample(f"m{i}".ljust(L.MAX_NAME_LEN, "m"), labels, 1.0, now) for i in range(5)]
    parts = split_for_wire(wide, 65536)
    assert [s for p in parts for s in p] == wide
    assert all(len(encode_samples("n1", 1, 1, now, p)) <= 65536 for p in parts)


def test_the_agent_splits_a_tick_the_aggregator_would_refuse() -> None:
    now = int(time.time() * 1000)
    samples = [Sample("agent_tokens_total", (("agent_id", f"a{i:05d}"), ("note", "x" * 200)),
                      float(i), now) for i in range(2000)]
    whole = encode_samples("n1", 1, 1, now, samples)
    assert len(whole) > MAX_BYTES
    parts = split_for_wire(samples, MAX_BYTES)
    assert len(parts) > 1
    assert [s for p in parts for s in p] == samples  # nothing lost, order kept
    for i, part in enumerate(parts):
        frame = encode_samples("n1", 1, 2 + i, now, part)
        assert len(frame) <= MAX_BYTES
        assert len(decode(frame).body) == len(part)
    # points and series limits too
    many = [Sample("m", (("i", str(i % (L.MAX_SERIES_PER_BATCH + 5))),), 1.0, now)
            for i in range(L.MAX_POINTS_PER_BATCH + 10)]
    for part in split_for_wire(many, L.MAX_FRAME_BYTES):
        decode(encode_samples("n1", 1, 1, now, part))  # raises if over any limit
    assert split_for_wire(samples[:10], MAX_BYTES) == [samples[:10]]


def test_self_metrics_include_every_counter() -> None:
    tm = IngestTelemetry()
    tm.add(commit_errors=2, checkpoints=3, queue_full_waits=4, socket_rebinds=5)
    tm.handshake_failed("unknown_key")
    got = {(s.name, s.labels): s.value for s in tm.samples(1)}
    assert got[("legion_aggregator_commit_errors_total", ())] == 2
    assert got[("legion_aggregator_checkpoints_total", ())] == 3
    assert got[("legion_aggregator_queue_full_waits_total", ())] == 4
    assert got[("legion_aggregator_socket_rebinds_total", ())] == 5
    assert got[("legion_aggregator_handshake_failures_total", (("reason", "unknown_key"),))] == 1


def test_a_websocket_client_closed_by_the_heartbeat_is_counted(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setattr(ws_mod, "WS_HEARTBEAT_SECS", 0.4)
    config = config_from_dict({"security": {"enable_tls": False}},
                              base_dir=tmp_path).aggregator_settings()
    store = Store(tmp_path / "legion.duckdb")
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.add("viewer", "viewer")

    async def scenario() -> int:
        app = create_app(config, store, dict, tokens)
        server = await start_gateway(app, config, port=0)
        try:
            async with aiohttp.ClientSession() as s:
                # autoping=False: this client never answers the server's pings
                async with s.ws_connect(f"{server.url}/ws?token={token}", autoping=False) as ws:
                    deadline = time.monotonic() + 20
                    while not ws.closed and time.monotonic() < deadline:
                        try:
                            await ws.receive(timeout=0.5)
                        except TimeoutError:
                            pass
                for _ in range(100):
                    async with s.get(f"{server.url}/api/v1/status",
                                     headers={"Authorization": f"Bearer {token}"}) as r:
                        n = (await r.json())["gateway"]["slow_closed"]
                    if n:
                        return n
                    await asyncio.sleep(0.1)
                return 0
        finally:
            await stop_gateway(server)

    try:
        assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 1
    finally:
        store.close()

