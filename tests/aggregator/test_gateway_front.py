"""The fast query front (gateway/front.py) against aiohttp alone, byte for byte: the same app over
the same real Store is served twice on 127.0.0.1, once with the front and once without, and a
matrix of raw HTTP requests (good, bad, unauthenticated, revoked, forbidden, CORS, HEAD, odd
framing, pipelined, split, oversized) gets the same bytes back from both (the Date header
aside), the same audit records and the same access lines; the front answered the good ones
itself."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from legion.aggregator.gateway.app import GatewayServer, create_app, start_gateway, stop_gateway
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.certs import generate_self_signed
from legion.aggregator.gateway.front import FrontSite
from legion.aggregator.gateway.timefmt import now_ms
from legion.aggregator.gateway.tls import client_ssl_context
from tests.aggregator.test_gateway_api import STATUS, Env, run

Q = "/api/v1/query?metric=system_cpu_usage_percent&step=1m&since=15m"
ORIGIN = "tauri://localhost"
BROWSER = ('sec-ch-ua-platform: "Linux"',
           'sec-ch-ua: "Chromium";v="130", "Not?A_Brand";v="99"', "sec-ch-ua-mobile: ?0",
           "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
           "Accept: application/json", "Sec-Fetch-Site: same-origin", "Sec-Fetch-Mode: cors",
           "Sec-Fetch-Dest: empty", "Referer: http://127.0.0.1/",
           "Accept-Encoding: gzip, deflate, br, zstd", "Accept-Language: en-US,en;q=0.9",
           "Priority: u=1, i")
"""What Chromium's same-origin `fetch` of the dashboard sends beside Host, Authorization and
Connection (no Origin on a same-origin GET; seen from Debian's chromium 156, headless, with
Priority as newer ones add)."""


def _req(target: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    return "\r\n".join([f"{method} {target} {version}", "Host: 127.0.0.1", *headers, "", ""]
                       ).encode()


def _matrix(env: Env) -> list[tuple[str, list[bytes], bool]]:
    """(name, the chunks sent, whether the front answers it itself)."""
    tok = env.token
    bearer = f"Authorization: Bearer {tok['viewer']}"
    close = "Connection: close"
    good = _req(Q, bearer, close)
    return [
        ("one series", [good], True),
        ("group_by and agg", [_req(Q + "&agg=max&group_by=node", bearer, close)], True),
        ("label, encoded, no match", [_req(Q + "&label=cpu%3D0&node=web-1", bearer, close)], True),
        ("legionctl's headers", [_req(Q, bearer, close, "Content-Type: application/json",
                                      "Accept-Encoding: identity",
                                      "User-Agent: Python-urllib/3.11")], True),
        ("the dashboard's fetch", [_req(Q, *BROWSER[:1], bearer, *BROWSER[1:], close)], True),
        ("encoded name, plus", [_req(Q.replace("metric=system", "metric=%73ystem")
                                     + "&node=web%2D1&label=cpu=a+b", bearer, close)], True),
        ("encoded NUL", [_req(Q + "&node=web%00", bearer, close)], False),
        ("lower-case method", [_req(Q, bearer, close, method="get")], False),
        ("absolute form", [_req("http://127.0.0.1" + Q, bearer, close)], False),
        ("tab in a value", [_req(Q, bearer, close, "Accept:\t*/*")], False),
        ("space before colon", [_req(Q, "Authorization : Bearer x", close)], False),
        ("admin", [_req(Q, f"Authorization: Bearer {tok['admin']}", close)], True),
        ("bearer in lower case", [_req(Q, f"authorization: bearer {tok['viewer']}", close)], True),
        ("keep-alive then whoami", [_req(Q, bearer),
                                    _req("/api/v1/whoami", bearer, close)], True),
        ("no token", [_req(Q, close)], False),
        ("bad token", [_req(Q, "Authorization: Bearer lgn_nope", close)], False),
        ("basic auth", [_req(Q, "Authorization: Basic YTpi", close)], False),
        ("bearer, no token", [_req(Q, "Authorization: Bearer ", close)], False),
        ("revoked", [_req(Q, f"Authorization: Bearer {tok['gone']}", close)], False),
        ("unknown parameter", [_req(Q + "&bogus=1", bearer, close)], False),
        ("token in the query", [_req(Q + f"&token={tok['viewer']}", close)], False),
        ("repeated step", [_req(Q + "&step=2m", bearer, close)], False),
        ("bad agg", [_req(Q + "&agg=nope", bearer, close)], False),
        ("missing metric", [_req("/api/v1/query?step=1m", bearer, close)], False),
        ("no step (raw)", [_req("/api/v1/query?metric=system_cpu_usage_percent", bearer,
                                close)], False),
        ("HEAD", [_req(Q, bearer, close, method="HEAD")], False),
        ("POST", [_req(Q, bearer, close, "Content-Length: 0", method="POST")], False),
        ("CORS allowed", [_req(Q, bearer, close, f"Origin: {ORIGIN}")], False),
        ("CORS refused", [_req(Q, bearer, close, "Origin: http://elsewhere")], False),
        ("preflight", [_req(Q, close, f"Origin: {ORIGIN}", "Access-Control-Request-Method: GET",
                            method="OPTIONS")], False),
        ("HTTP/1.0", [_req(Q, bearer, version="HTTP/1.0")], False),
        ("no Host", [good.replace(b"Host: 127.0.0.1\r\n", b"")], False),
        ("other header", [_req(Q, bearer, close, "X-Forwarded-For: 10.0.0.1")], False),
        ("duplicate header", [_req(Q, bearer, bearer, close)], False),
        ("header folding", [good.replace(b"\r\nConnection", b"\r\n continued\r\nConnection")],
         False),
        ("odd connection", [_req(Q, bearer, "Connection: upgrade, close")], False),
        ("body", [_req(Q, bearer, close, "Content-Length: 2") + b"{}"], False),
        ("pipelined", [good.replace(b"Connection: close\r\n", b"") + good], False),
        ("split", [good[:30], good[30:]], False),
        ("oversized header", [_req(Q, bearer, close, "Accept: " + "a" * 9000)], False),
        ("bad bytes in target", [_req(Q + "&node=\x7f", bearer, close)], False),
        ("path prefix", [_req("/api/v1/queryx?metric=m&step=1m", bearer, close)], False),
        ("dashboard page", [_req("/", close)], False),
        ("refused write", [_req("/api/v1/users", bearer, close, "Content-Length: 0",
                                method="POST")], False),
    ]


async def _exchange(port: int, chunks: list[bytes], tls: ssl.SSLContext | None = None) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        for c in chunks:
            w.write(c)
            await w.drain()
            await asyncio.sleep(0.05)  # each chunk its own read on the server
        return await asyncio.wait_for(r.read(), 20)  # to the close: every request says so
    finally:
        w.close()


def _masked(raw: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)


@asynccontextmanager
async def _serve(env: Env, audit: Path, fast: bool) -> AsyncIterator[GatewayServer]:
    app = create_app(env.config, env.store, lambda: STATUS, env.tokens, audit=AuditLog(audit))
    server = await start_gateway(app, env.config, port=0, fast_query=fast)
    try:
        yield server
    finally:
        await stop_gateway(server)


def _front(server: GatewayServer) -> FrontSite:
    return next(s for s in server.runner.sites if isinstance(s, FrontSite))


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_front_answers_byte_for_byte_as_aiohttp(tmp_path: Path, tls: bool,
                                                caplog: pytest.LogCaptureFixture) -> None:
    security: dict[str, Any] = {"allowed_origins": [ORIGIN]}
    trust = None
    if tls:  # a real TLS listener: the front is handed decrypted bytes, HSTS is added
        cert, _ = generate_self_signed(tmp_path / "certs" / "server.crt",
                                       tmp_path / "certs" / "server.key")
        trust = client_ssl_context(cert)
        security.update(enable_tls=True, certificate_path="certs/server.crt",
                        private_key_path="certs/server.key")
    env = Env(tmp_path, security=security)
    env.token["gone"] = env.tokens.add("gone", "viewer")
    env.tokens.revoke("gone")
    caplog.set_level(logging.INFO, logger="legion.aggregator.gateway.access")
    matrix = _matrix(env)

    async def scenario() -> dict[str, Any]:
        got: dict[str, Any] = {}
        async with _serve(env, tmp_path / "plain.log", False) as plain, \
                _serve(env, tmp_path / "fast.log", True) as fast:
            for name, chunks, answered_here in matrix:
                before = _front(fast).answers.answered
                caplog.clear()
                a = await _exchange(plain.port, chunks, trust)
                plain_lines = _access_lines(caplog)
                caplog.clear()
                b = await _exchange(fast.port, chunks, trust)
                assert _masked(a) == _masked(b), name
                assert plain_lines == _access_lines(caplog), name
                assert _front(fast).answers.answered - before == answered_here, name
                got[name] = a
            assert _front(plain).answers.answered == 0
        return got

    try:
        got = run(scenario())
    finally:
        env.store.close()
    # the matrix means what it says: 200s with rows, and aiohttp's refusals
    assert got["one series"].startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(got["one series"].split(b"\r\n\r\n", 1)[1])
    assert got["revoked"].startswith(b"HTTP/1.1 401 ")
    assert got["CORS allowed"].count(b"Access-Control-Allow-Origin: tauri://localhost") == 1
    assert got["oversized header"].startswith(b"HTTP/1.0 400 ")  # aiohttp's parser
    assert (b"Strict-Transport-Security" in got["one series"]) == tls
    assert _records(tmp_path / "plain.log") == _records(tmp_path / "fast.log")
    assert _records(tmp_path / "plain.log")  # the refused write was audited


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(" secs=")[0] + " remote=" + r.getMessage().split(" remote=")[1]
            for r in caplog.records if r.name == "legion.aggregator.gateway.access"]


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("ts", None)
        rec.pop("ts_ms", None)
        out.append(rec)
    return out


def test_a_connection_that_sends_nothing_is_closed_on_stop(tmp_path: Path) -> None:
    env = Env(tmp_path)

    async def scenario() -> None:
        async with _serve(env, tmp_path / "audit.log", True) as fast:
            r, w = await asyncio.open_connection("127.0.0.1", fast.port)
            for _ in range(200):  # the front holds it until its first bytes
                if _front(fast).waiting:
                    break
                await asyncio.sleep(0.02)
            assert len(_front(fast).waiting) == 1
        assert await asyncio.wait_for(r.read(), 20) == b""
        w.close()

    try:
        run(scenario())
    finally:
        env.store.close()


def test_a_silent_connection_is_closed_after_the_keepalive_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never sends is closed, as aiohttp closes its own (slowloris)."""
    from legion.aggregator.gateway import front

    monkeypatch.setattr(front, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(front, "SWEEP_S", 0.05)
    env = Env(tmp_path)

    async def scenario() -> None:
        async with _serve(env, tmp_path / "audit.log", True) as fast:
            r, w = await asyncio.open_connection("127.0.0.1", fast.port)
            assert await asyncio.wait_for(r.read(), 20) == b""  # closed by the server
            assert not _front(fast).waiting
            w.close()

    try:
        run(scenario())
    finally:
        env.store.close()


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
