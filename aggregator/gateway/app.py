"""The gateway's aiohttp application and its server lifecycle.

    app = create_app(config, store, status_provider, TokenStore(config.path(
        config.aggregator.tokens_path)))
    server = await start_gateway(app, config)     # TLS when security.enable_tls
    ...                                           # server.url, server.port
    await stop_gateway(server)                    # idempotent

Middlewares (outermost first): JSON errors, security headers, authentication/authorization/audit
(auth.py). Routes: docs/api.md; WebSocket: docs/ws-protocol.md.
"""

from __future__ import annotations

import asyncio
import errno
import base64
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from legion.aggregator.gateway import prom
from legion.aggregator.gateway.alerts_api import AlertActions, make_alert_routes
from legion.aggregator.gateway.analytics_api import make_analytics_routes
from legion.aggregator.gateway.api import (
    GATEWAY_STATUS_KEY,
    BadRequest,
    error_middleware,
    make_routes,
)
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.auth import json_error, make_auth_middleware, public, requires
from legion.aggregator.gateway.certs import server_ssl_context
from legion.aggregator.gateway.export_api import make_export_routes
from legion.aggregator.gateway.hub import Hub, Source
from legion.aggregator.gateway.socketio_api import attach_socketio
from legion.aggregator.gateway.timefmt import now_ms
from legion.aggregator.gateway.tokens import TokenStore
from legion.aggregator.gateway.ws import make_ws_handler, revalidate_clients
from legion.config import Config
from legion.errors import AddressInUse, ConfigError

log = logging.getLogger("legion.aggregator.gateway")

DEFAULT_DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
HUB_KEY = web.AppKey("legion_hub", Hub)
TOKENS_KEY = web.AppKey("legion_tokens", TokenStore)
AUDIT_KEY = web.AppKey("legion_audit", AuditLog)
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>",
                            re.DOTALL | re.IGNORECASE)
_REVALIDATE_EVERY_S = 5.0
Telemetry = Any
"""A callable returning `(name, labels, value)` triples or `Sample`s, or an object with
`samples(ts_ms) -> list[Sample]` (e.g. `IngestTelemetry`)."""


class _AccessLogger(AbstractAccessLogger):
    """Access log without query strings (a `?token=` must never reach a log file)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("event=http method=%s path=%s status=%s secs=%.3f remote=%s",
                         request.method, request.path, response.status, time, request.remote)


class _Csp:
    """Content-Security-Policy with hashes of index.html's inline scripts (cached by mtime)."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self._mtime: int | None = None
        self._value = ""

    def value(self) -> str:
        try:
            mtime = self.index.stat().st_mtime_ns
        except OSError:
            mtime = -1
        if mtime != self._mtime:
            hashes = ""
            if mtime != -1:
                html = self.index.read_text(errors="replace")
                hashes = " ".join(
                    "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
                    + "'" for s in _INLINE_SCRIPT.findall(html))
            self._value = ("default-src 'self'; script-src 'self' " + hashes
                           + "; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                           "connect-src 'self' ws: wss:; worker-src 'self' blob:; "
                           "font-src 'self' data:; frame-ancestors 'none'; base-uri 'self'; "
                           "form-action 'self'")
            self._mtime = mtime
        return self._value


def create_app(config: Config, store: Any, status_provider: Callable[[], Mapping[str, Any]],
               token_store: TokenStore, *, telemetry: Telemetry | None = None,
               sources: Mapping[str, Source] | None = None,
               dashboard_dir: str | Path | None = None,
               audit: AuditLog | None = None,
               alert_actions: AlertActions | None = None,
               analytics_retrain: Callable[[str | None], bool] | None = None,
               bands: Any | None = None
               ) -> web.Application:
    """Build the gateway app (routes, middlewares, hub lifecycle); `start_gateway` serves it."""
    dc, sec = config.dashboard_config, config.security
    audit = audit or AuditLog(config.path(config.aggregator.audit_log_path))
    stats: dict[str, int] = {k: 0 for k in (
        "messages_sent", "coalesced", "slow_closed", "send_errors", "refused_cap",
        "refused_origin", "auth_failed", "bad_token", "missing_token", "forbidden")}
    slots = {"used": 0}
    closing: set[asyncio.Task[None]] = set()
    last_check = {"t": 0.0}

    def on_tick() -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - last_check["t"] < _REVALIDATE_EVERY_S:
            return
        last_check["t"] = loop.time()
        for c in revalidate_clients(hub, token_store):
            hub.clients.discard(c)
            t = asyncio.create_task(c.abort(4401, "token revoked"))
            closing.add(t)
            t.add_done_callback(closing.discard)

    hub = Hub(config, store, sources=sources, on_tick=on_tick)

    def reserve() -> bool:
        if slots["used"] >= dc.max_ws_clients:
            return False
        slots["used"] += 1
        return True

    def release() -> None:
        slots["used"] -= 1

    def count_failure(reason: str) -> None:
        stats[reason] = stats.get(reason, 0) + 1

    def gateway_status() -> dict[str, Any]:
        return {"ws_clients": len(hub.clients), "ws_max_clients": dc.max_ws_clients,
                "tls": sec.enable_tls, **stats, "hub": hub.status()}

    dash = Path(dashboard_dir) if dashboard_dir is not None else DEFAULT_DASHBOARD_DIR
    csp = _Csp(dash / "index.html")

    @web.middleware
    async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # CORS only for the configured origins (e.g. a Tauri shell at tauri://localhost);
        # the served dashboard is same-origin and needs none. No cookies: no credentials.
        origin = request.headers.get("Origin")
        cors = origin if origin in sec.allowed_origins else None
        api_path = request.path.startswith("/api/") or request.path == "/metrics"
        if request.method == "OPTIONS" and api_path \
                and "Access-Control-Request-Method" in request.headers:
            if cors is None:
                return json_error(403, f"origin {origin!r} not allowed")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": cors, "Vary": "Origin",
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600"})
        response = await handler(request)
        if not response.prepared:
            h = response.headers
            if cors is not None and api_path:
                h["Access-Control-Allow-Origin"] = cors
                h["Vary"] = "Origin"
            h.setdefault("X-Content-Type-Options", "nosniff")
            h.setdefault("Referrer-Policy", "no-referrer")
            h.setdefault("X-Frame-Options", "DENY")
            h.setdefault("Content-Security-Policy", csp.value())
            if request.path.startswith("/api/") or request.path == "/metrics":
                h.setdefault("Cache-Control", "no-store")
            if sec.enable_tls:
                h.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    app = web.Application(
        middlewares=[error_middleware, headers_middleware,
                     make_auth_middleware(token_store, audit, count_failure)],
        client_max_size=64 * 1024, logger=log)
    app[HUB_KEY] = hub
    app[TOKENS_KEY] = token_store
    app[AUDIT_KEY] = audit
    app[GATEWAY_STATUS_KEY] = gateway_status

    @requires("read")
    async def metrics(request: web.Request) -> web.Response:
        for k in request.query:
            if k not in ("latest", "node"):
                raise BadRequest(f"unknown parameter {k!r}; allowed: latest, node")
        samples: list[Any] = []
        g = gateway_status()
        samples.append(("legion_gateway_ws_clients", {}, g["ws_clients"], None))
        samples.append(("legion_gateway_ws_max_clients", {}, g["ws_max_clients"], None))
        for k in ("messages_sent", "coalesced", "slow_closed", "send_errors"):
            samples.append((f"legion_gateway_ws_{k}_total", {}, g[k], None))
        for k in ("refused_cap", "refused_origin", "auth_failed"):
            samples.append(("legion_gateway_ws_refused_total", {"reason": k[8:] if k.startswith(
                "refused_") else "auth"}, g[k], None))
        for k in ("bad_token", "missing_token", "forbidden"):
            samples.append(("legion_gateway_auth_failures_total", {"reason": k}, g[k], None))
        samples.append(("legion_gateway_hub_ticks_total", {}, g["hub"]["ticks"], None))
        samples.append(("legion_gateway_hub_tick_errors_total", {}, g["hub"]["tick_errors"],
                        None))
        if telemetry is not None:
            samples.extend(prom.telemetry_samples(await asyncio.to_thread(_telemetry_items,
                                                                           telemetry)))
        else:
            samples.extend(prom.flatten_status(await asyncio.to_thread(status_provider)))
        glob = request.query.get("latest")
        if glob:
            if not re.match(r"^[a-zA-Z_:*?][a-zA-Z0-9_:*?]{0,199}$", glob):
                raise BadRequest(f"invalid latest {glob!r}: a metric name glob")
            node = request.query.get("node") or None
            rows = await asyncio.to_thread(store.latest, glob, node)
            samples.extend(prom.latest_samples(rows))
        return web.Response(body=prom.render(samples).encode(),
                            headers={"Content-Type": prom.CONTENT_TYPE})

    @public
    async def index(request: web.Request) -> web.StreamResponse:
        page = dash / "index.html"
        if not page.is_file():
            return json_error(404, "dashboard not installed")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    ws_handler = make_ws_handler(hub, token_store, allowed_origins=sec.allowed_origins,
                                 api_host=config.aggregator.api_host,
                                 max_clients=dc.max_ws_clients, stats=stats,
                                 update_interval_ms=dc.update_interval_ms,
                                 reserve=reserve, release=release)
    app.add_routes(make_routes(store, hub, token_store,
                               lambda: dict(status_provider())))
    app.add_routes(make_alert_routes(hub, alert_actions))
    app.add_routes(make_analytics_routes(store, sources or {}, analytics_retrain, bands))
    app.add_routes(make_export_routes(store))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ws", ws_handler)
    attach_socketio(app, hub, token_store, allowed_origins=sec.allowed_origins,
                    api_host=config.aggregator.api_host, stats=stats,
                    reserve=reserve, release=release)
    app.router.add_get("/", index)
    if dash.is_dir():
        app.router.add_static("/", dash, follow_symlinks=False)

    async def on_startup(_: web.Application) -> None:
        await hub.start()

    async def on_shutdown(_: web.Application) -> None:
        clients = [c for c in list(hub.clients) if hasattr(c, "abort")]
        await asyncio.gather(*(c.abort(1001, "server shutting down") for c in clients),
                             return_exceptions=True)

    async def on_cleanup(_: web.Application) -> None:
        await hub.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _telemetry_items(telemetry: Telemetry) -> list[Any]:
    if hasattr(telemetry, "samples"):
        return list(telemetry.samples(now_ms()))
    return list(telemetry())


@dataclass
class GatewayServer:
    """A running gateway: where it listens and how to stop it."""

    runner: web.AppRunner
    host: str
    port: int
    tls: bool
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """Base URL, e.g. `https://127.0.0.1:8765`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        """Close WebSockets, stop the hub and the listener (idempotent)."""
        if not self._stopped:
            self._stopped = True
            await self.runner.cleanup()


async def start_gateway(app: web.Application, config: Config, *, host: str | None = None,
                        port: int | None = None) -> GatewayServer:
    """Listen on `aggregator.api_host`:`dashboard_config.websocket_port` (TLS if enabled)."""
    sec = config.security
    ssl_ctx = None
    if sec.enable_tls:
        ssl_ctx = server_ssl_context(config.path(sec.certificate_path),
                                     config.path(sec.private_key_path))
    host = host or config.aggregator.api_host
    port = config.dashboard_config.websocket_port if port is None else port
    runner = web.AppRunner(app, handle_signals=False, access_log_class=_AccessLogger,
                           access_log=logging.getLogger("legion.aggregator.gateway.access"),
                           shutdown_timeout=3.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse("dashboard_config.websocket_port", f"{host}:{port}") from exc
        raise ConfigError([f"dashboard_config.websocket_port: cannot listen on {host}:{port}: "
                           f"{exc}"]) from exc
    bound = runner.addresses[0]
    log.info("event=gateway_started url=%s://%s:%s", "https" if ssl_ctx else "http", host,
             bound[1])
    return GatewayServer(runner, host, int(bound[1]), ssl_ctx is not None)


async def stop_gateway(server: GatewayServer | None) -> None:
    """Stop a gateway started with `start_gateway` (None and repeated calls are fine)."""
    if server is not None:
        await server.stop()
