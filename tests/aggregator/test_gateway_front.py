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
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from legion.aggregator.gateway.app import GatewayServer, create_app, start_gateway, stop_gateway
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.certs import generate_self_signed
from legion.aggregator.gateway.front import FrontSite
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

