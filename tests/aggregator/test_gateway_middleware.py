"""The gateway's one middleware (middleware.py) and its access log, through a real aiohttp server
on 127.0.0.1 over a real DuckDB-backed Store: every answer of a route carries the same security
headers whatever step answered it, errors are JSON, and the access log has one line per request
without its query string."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.aggregator.test_gateway_api import Env, run

SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def test_headers_and_json_errors_from_every_step(env: Env) -> None:
    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            cases: list[tuple[str, dict[str, str], int]] = [
                ("/api/v1/whoami", env.auth("viewer"), 200),  # the handler's answer
                ("/api/v1/whoami", {}, 401),  # the guard's
                ("/api/v1/users", env.auth("viewer"), 403),  # the guard's
                ("/api/v1/query?metric=system_cpu_usage_percent&step=1m", env.auth("viewer"),
                 200)]
            for path, headers, status in cases:
                async with s.get(srv.url + path, headers=headers) as r:
                    assert r.status == status, (path, await r.text())
                    assert r.content_type == "application/json"
                    for k, v in SECURITY.items():
                        assert r.headers[k] == v, (path, k)
                    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            # a handler's BadRequest and aiohttp's 405 become {"error": ...}
            for path, method, status, says in (
                    ("/api/v1/query?metric=x&bogus=1", "GET", 400, "unknown parameter 'bogus'"),
                    ("/api/v1/query?metric=x&step=1m&step=2m", "GET", 400,
                     "parameter 'step' given more than once"),
                    ("/api/v1/query?metric=x&step=1m&label=a=b&label=a=c", "GET", 400,
                     "label 'a' given more than once"),
                    ("/api/v1/whoami", "DELETE", 405, "Method Not Allowed")):
                async with s.request(method, srv.url + path, headers=env.auth("admin")) as r:
                    assert r.status == status, path
                    assert says in (await r.json())["error"], path
    run(scenario())


def test_access_log_has_one_line_per_request_and_no_query_string(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="legion.aggregator.gateway.access")
    token = env.token["viewer"]

    async def scenario() -> Any:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            async with s.get(srv.url + f"/api/v1/nodes?token={token}") as r:
                assert r.status == 401
            async with s.get(srv.url + "/api/v1/query?metric=system_cpu_usage_percent&step=1m",
                             headers=env.auth("viewer")) as r:
                assert r.status == 200
    run(scenario())
    lines = [r for r in caplog.records if r.name == "legion.aggregator.gateway.access"]
    assert [(r.levelno, r.getMessage().split(" secs=")[0]) for r in lines] == [
        (logging.INFO, "event=http method=GET path=/api/v1/nodes status=401"),
        (logging.INFO, "event=http method=GET path=/api/v1/query status=200")]
    assert all(r.getMessage().endswith("remote=127.0.0.1") for r in lines)
    assert not any(token in r.getMessage() for r in caplog.records)


def test_error_answers_carry_the_security_headers_and_api_misses_are_json(
        tmp_path: Path) -> None:
    """400 (a handler's BadRequest), 404 and 405 (aiohttp's router), a 404 of the static
    route under /api/ and a CORS answer of an allowed origin: all JSON, all with the security
    headers every other answer has."""
    env = Env(tmp_path, security={"allowed_origins": ["tauri://localhost"]})

    async def scenario() -> None:
        async with env.serve() as srv, aiohttp.ClientSession() as s:
            for method, path, status in (
                    ("GET", "/api/v1/query?metric=x&bogus=1", 400),
                    ("GET", "/api/v1/query", 400),
                    ("DELETE", "/api/v1/whoami", 405),
                    ("GET", "/api/v1/no-such-route", 404),
                    ("GET", "/api/no-such-file.bin", 404),
                    ("GET", "/metrics/../api/x", 404),
                    ("HEAD", "/api/v1/no-such-route", 404)):
                headers = {**env.auth("admin"), "Origin": "tauri://localhost"}
                async with s.request(method, srv.url + path, headers=headers) as r:
                    assert r.status == status, (method, path)
                    assert r.content_type == "application/json", (method, path)
                    if method != "HEAD":
                        assert isinstance((await r.json())["error"], str), (method, path)
                    for k, v in SECURITY.items():
                        assert r.headers.get(k) == v, (method, path, k)
                    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
                    assert r.headers["Access-Control-Allow-Origin"] == "tauri://localhost"
            for origin, status in (("tauri://localhost", 204), ("http://elsewhere", 403)):
                async with s.options(srv.url + "/api/v1/query", headers={
                        "Origin": origin, "Access-Control-Request-Method": "GET"}) as r:
                    assert r.status == status, origin
                    for k, v in SECURITY.items():
                        assert r.headers.get(k) == v, (origin, k)
    try:
        run(scenario())
    finally:
        env.store.close()
