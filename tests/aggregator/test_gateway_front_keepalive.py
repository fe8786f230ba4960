"""The fast query front (gateway/front.py) on keep-alive connections: a poller's requests stay in
the front while they are fast-path ones and are answered as aiohttp answers them (byte for byte
but the Date, over TLS too); the first that is not goes to aiohttp with the connection; requests
answer in order (pipelined, sent while the store is busy); a client that reads no answers is
read no more; an idle connection is closed from its last answer, and on stop."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from legion.aggregator.gateway.certs import generate_self_signed
from legion.aggregator.gateway.front import FrontSite
from legion.aggregator.gateway.timefmt import now_ms
from legion.aggregator.gateway.tls import client_ssl_context
from tests.aggregator.test_gateway_api import Env, run
from tests.aggregator.test_gateway_front import Q, _front, _masked, _req, _serve


async def _answer(r: asyncio.StreamReader) -> bytes:
    """One whole answer (head and Content-Length body) read off a keep-alive connection."""
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    assert length is not None, head
    return head + await asyncio.wait_for(r.readexactly(int(length.group(1))), 20)


async def _session(port: int, steps: list[bytes], tls: ssl.SSLContext | None) -> list[bytes]:
    """Each step's bytes sent on one connection, each after the answers to the one before."""
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    got = []
    try:
        for step in steps:
            w.write(step)
            await w.drain()
            for _ in range(step.count(b" HTTP/1.1\r\n")):
                got.append(await _answer(r))
        assert await asyncio.wait_for(r.read(), 20) == b""  # the last step said close
    finally:
        w.close()
    return got


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_a_keepalive_connection_stays_fast_until_a_request_is_not(tmp_path: Path,
                                                                  tls: bool) -> None:
    """A poller's connection: its fast requests are answered by the front, one after another,
    as aiohttp answers them; the first one that is not fast (a 401, then /whoami) is aiohttp's,
    answered on the same connection, and so is every later one, fast or not."""
    security: dict[str, Any] = {}
    trust = None
    if tls:
        cert, _ = generate_self_signed(tmp_path / "certs" / "server.crt",
                                       tmp_path / "certs" / "server.key")
        trust = client_ssl_context(cert)
        security.update(enable_tls=True, certificate_path="certs/server.crt",
                        private_key_path="certs/server.key")
    env = Env(tmp_path, security=security)
    bearer = f"Authorization: Bearer {env.token['viewer']}"
    fast_steps = [_req(Q, bearer), _req(Q + "&agg=max&group_by=node", bearer),
                  _req(Q + "&node=web-1", bearer, "Connection: keep-alive"), _req(Q, bearer)]
    then = [_req(Q), _req("/api/v1/whoami", bearer), _req(Q, bearer),
            _req(Q, bearer, "Connection: close")]
    pipelined = [_req(Q, bearer), _req(Q, bearer) + _req(Q, bearer, "Connection: close")]

    async def scenario() -> dict[str, tuple[list[bytes], list[bytes], int]]:
        out = {}
        async with _serve(env, tmp_path / "plain.log", False) as plain, \
                _serve(env, tmp_path / "fast.log", True) as fast:
            for name, steps in (("poller", fast_steps + then), ("pipelined", pipelined)):
                before = _front(fast).answers.answered
                a = await _session(plain.port, steps, trust)
                b = await _session(fast.port, steps, trust)
                out[name] = (a, b, _front(fast).answers.answered - before)
            assert not _front(fast).waiting  # every connection was closed or handed over
        return out

    try:
        out = run(scenario())
    finally:
        env.store.close()
    for name, (a, b, _) in out.items():
        assert [_masked(x) for x in a] == [_masked(x) for x in b], name
    a, _, answered = out["poller"]
    assert answered == len(fast_steps)  # the front's; the fast ones after the 401 are aiohttp's
    assert all(x.startswith(b"HTTP/1.1 200 OK\r\n") for x in a[:4] + a[5:])
    assert a[4].startswith(b"HTTP/1.1 401 ")
    assert json.loads(a[5].split(b"\r\n\r\n", 1)[1])["user"] == "viewer"  # /whoami
    assert len(a) == 8 and b"\r\nConnection: close\r\n" in a[7]
    assert out["pipelined"][2] == 1  # the first; the pipelined pair went to aiohttp, in order
    assert len(out["pipelined"][0]) == 3


def test_a_keepalive_connection_idle_after_its_answer_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a fast answer the front holds the connection for the next request: silent for
    `KEEPALIVE_S` from that answer, it is closed; `stop()` closes one that is not yet."""
    from legion.aggregator.gateway import front

    env = Env(tmp_path)
    bearer = f"Authorization: Bearer {env.token['viewer']}"
    env.store.query("system_cpu_usage_percent", step_ms=60_000, since_ms=now_ms() - 900_000)
    assert env.store.head is not None and env.store.head.start is not None  # the front's

    async def answered_then_held(port: int, site: FrontSite) -> tuple[asyncio.StreamReader,
                                                                      asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        sent = time.monotonic()
        w.write(_req(Q, bearer))
        assert (await _answer(r)).startswith(b"HTTP/1.1 200 OK\r\n")
        assert site.answers.answered == 1
        held = list(site.waiting)
        assert len(held) == 1 and held[0].since >= sent  # measured from the answer
        return r, w

    async def scenario() -> None:
        async with _serve(env, tmp_path / "audit.log", True) as fast:
            r, w = await answered_then_held(fast.port, _front(fast))
        assert await asyncio.wait_for(r.read(), 20) == b""  # closed on stop
        w.close()
        monkeypatch.setattr(front, "KEEPALIVE_S", 0.3)
        monkeypatch.setattr(front, "SWEEP_S", 0.05)
        async with _serve(env, tmp_path / "audit.log", True) as fast:
            r, w = await answered_then_held(fast.port, _front(fast))
            assert await asyncio.wait_for(r.read(), 20) == b""  # closed by the sweep
            assert not _front(fast).waiting
            w.close()

    try:
        run(scenario())
    finally:
        env.store.close()


def test_a_client_that_reads_no_answers_is_not_read_either(tmp_path: Path) -> None:
    """Fast requests from a client that does not read its answers: once the answers it has not
    read fill the server's buffer the front stops reading requests (the buffer stays bounded),
    and when the client reads, every answer comes and the rest are answered."""
    env = Env(tmp_path)
    bearer = f"Authorization: Bearer {env.token['viewer']}"
    env.store.query("system_cpu_usage_percent", step_ms=60_000, since_ms=now_ms() - 900_000)

    async def scenario() -> None:
        async with _serve(env, tmp_path / "audit.log", True) as fast:
            site = _front(fast)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", fast.port))
            sock.setblocking(False)
            r, w = await asyncio.open_connection(sock=sock)
            sent = 0
            server = None
            for _ in range(5000):  # bounded: far more than the buffers hold
                w.write(_req(Q + f"&node=n{sent}", bearer))
                await w.drain()
                sent += 1
                for _ in range(2000):
                    if site.answers.answered == sent or (server and not server.is_reading()):
                        break
                    await asyncio.sleep(0.01)
                if server is None:  # the server's side of this connection, in the front
                    server = next(iter(site.waiting))._transport  # noqa: SLF001
                    assert server is not None
                    server.get_extra_info("socket").setsockopt(  # fills sooner
                        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                if site.answers.answered < sent:  # not read: the front paused reading
                    break
            assert site.answers.answered < sent, "the front read on, answers piling up"
            assert not server.is_reading() and server.get_write_buffer_size() < 2 ** 20
            w.write(_req(Q, bearer, "Connection: close"))
            got = []
            for _ in range(sent + 1):
                got.append(await _answer(r))
            assert await asyncio.wait_for(r.read(), 20) == b""
            w.close()
            assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in got)
            # those read at once on resuming went to aiohttp, in order, with the connection
            assert site.answers.answered >= sent - 1
            assert b"\r\nConnection: close\r\n" in got[-1]  # the last one sent, last
            bodies = [json.loads(a.split(b"\r\n\r\n", 1)[1]) for a in got[:-1]]
            assert bodies == [[]] * sent  # no node n<i> exists: each its own (empty) answer

    try:
        run(scenario())
    finally:
        env.store.close()


def test_a_head_miss_on_a_keepalive_connection_is_answered_from_the_store_in_order(
        tmp_path: Path) -> None:
    """While a write holds the store (a live aggregator's agents write all the time), the query
    head cannot answer: the front answers from the store on a thread, as `api.query` does,
    reading nothing meanwhile; a request sent during it is answered after it, and the
    connection stays the front's. The same bytes as aiohttp's."""
    env = Env(tmp_path)
    bearer = f"Authorization: Bearer {env.token['viewer']}"
    env.store.query("system_cpu_usage_percent", step_ms=60_000, since_ms=now_ms() - 900_000)
    first, held, during = (_req(Q, bearer), _req(Q + "&agg=max&group_by=node", bearer),
                           _req(Q + "&node=web-1", bearer))
    last = _req(Q, bearer, "Connection: close")

    async def session(port: int, site: FrontSite | None) -> list[bytes]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(first)
        got = [await _answer(r)]
        writing = threading.Event()
        done = threading.Event()

        def write_in_progress() -> None:  # a write holding the store's lock, in its thread
            with env.store._lock:  # noqa: SLF001
                writing.set()
                done.wait(20)

        holder = threading.Thread(target=write_in_progress)
        holder.start()
        try:
            assert writing.wait(20)
            w.write(held)
            await w.drain()
            for _ in range(2000):  # the front is answering it from a thread, reading nothing
                if site is None or site.tasks:
                    break
                await asyncio.sleep(0.01)
            assert site is None or site.tasks
            w.write(during)
            await w.drain()
            await asyncio.sleep(0.1)  # it reaches the server while the store is held
        finally:
            done.set()
            holder.join(20)
        got += [await _answer(r), await _answer(r)]
        w.write(last)
        got.append(await _answer(r))
        assert await asyncio.wait_for(r.read(), 20) == b""
        w.close()
        return got

    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        async with _serve(env, tmp_path / "plain.log", False) as plain, \
                _serve(env, tmp_path / "fast.log", True) as fast:
            a = await session(plain.port, None)
            b = await session(fast.port, _front(fast))
            return a, b, _front(fast).answers.answered

    try:
        a, b, answered = run(scenario())
    finally:
        env.store.close()
    assert [_masked(x) for x in a] == [_masked(x) for x in b]
    assert all(x.startswith(b"HTTP/1.1 200 OK\r\n") for x in a)
    assert json.loads(a[1].split(b"\r\n\r\n", 1)[1]) != json.loads(a[2].split(b"\r\n\r\n", 1)[1])
    assert answered == 4  # all by the front: the held one from the store, none handed over
