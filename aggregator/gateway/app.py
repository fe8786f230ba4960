"""The gateway's aiohttp application and its server lifecycle.

    app = create_app(config, store, status_provider,
                     TokenStore(Path(config.aggregator.tokens_path)))
    server = await start_gateway(app, config)     # TLS when security.enable_tls
    ...                                           # server.url, server.port
    await stop_gateway(server)                    # idempotent

One middleware (middleware.py): JSON errors, security headers (headers.py),
authentication/authorization/audit (auth.py). Routes: the table in routes.py, handlers at module
level reading their dependencies from the app's typed keys (keys.py); docs/api.md;
WebSocket: docs/ws-protocol.md.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from legion.aggregator.config import AggregatorSettings as Config
from legion.aggregator.event_loop import loop_name
from legion.aggregator.gateway.access_log import ACCESS_LOG, AccessLogger
from legion.aggregator.gateway.alerts_api import AlertActions, offers_queries
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.auth import json_error, public
from legion.aggregator.gateway.export_api import EXPORTS_KEY, ExportJobs
from legion.aggregator.gateway.front import KEEPALIVE_S, FrontSite
from legion.aggregator.gateway.headers import CSP_KEY, Csp
from legion.aggregator.gateway.hub import Hub, LiveSource, Source
from legion.aggregator.gateway.keys import (
    ALERT_ACTIONS_KEY,
    AUDIT_KEY,
    BANDS_KEY,
    COMPONENT_TELEMETRY_KEY,
    CONFIG_KEY,
    DASHBOARD_KEY,
    GATEWAY_STATUS_KEY,
    HUB_KEY,
    RETRAIN_KEY,
    SOURCES_KEY,
    STATUS_KEY,
    STORE_KEY,
    TELEMETRY_KEY,
    TOKENS_KEY,
    BandReader,
)
from legion.aggregator.gateway.middleware import make_middleware
from legion.aggregator.gateway.routes import ALERT_QUERY_ROUTES, ROUTES, route_defs
from legion.aggregator.gateway.socketio_api import attach_socketio
from legion.aggregator.gateway.store_reader import StoreReader
from legion.aggregator.gateway.telemetry import GatewayTelemetry
from legion.aggregator.gateway.tokens import TokenStore
from legion.aggregator.gateway.ws import revalidate_clients
from legion.kernel.errors import AddressInUse, ConfigError

log = logging.getLogger("legion.aggregator.gateway")

DEFAULT_DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
_REVALIDATE_EVERY_S = 5.0
Telemetry = Any
"""A callable returning `(name, labels, value)` triples or `Sample`s, or an object with
`samples(ts_ms) -> list[Sample]` (e.g. `IngestTelemetry`)."""


def create_app(config: Config, store: StoreReader,
               status_provider: Callable[[], Mapping[str, Any]],
               token_store: TokenStore, *, telemetry: Telemetry | None = None,
               sources: Mapping[str, Source] | None = None,
               dashboard_dir: str | Path | None = None,
               audit: AuditLog | None = None,
               alert_actions: AlertActions | None = None,
               analytics_retrain: Callable[[str | None], bool] | None = None,
               bands: BandReader | None = None,
               live_feed: LiveSource | None = None
               ) -> web.Application:
    """Build the gateway app (routes, middlewares, hub lifecycle); `start_gateway` serves it."""
    dc, sec = config.dashboard_config, config.security
    audit = audit or AuditLog(Path(config.aggregator.audit_log_path))
    counters = GatewayTelemetry(dc.max_ws_clients)
    app = web.Application(
        middlewares=[make_middleware(token_store, audit, counters.count_failure)],
        client_max_size=64 * 1024, logger=log)
    hub = Hub(config, store, sources=sources, on_tick=_revalidator(app), live_feed=live_feed)
    dash = Path(dashboard_dir) if dashboard_dir is not None else DEFAULT_DASHBOARD_DIR
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[HUB_KEY] = hub
    app[TOKENS_KEY] = token_store
    app[AUDIT_KEY] = audit
    app[TELEMETRY_KEY] = counters
    app[DASHBOARD_KEY] = dash
    app[CSP_KEY] = Csp(dash / "index.html")
    app[STATUS_KEY] = status_provider
    app[GATEWAY_STATUS_KEY] = lambda: counters.status(len(hub.clients), sec.enable_tls,
                                                      hub.status())
    app[COMPONENT_TELEMETRY_KEY] = telemetry
    app[SOURCES_KEY] = dict(sources or {})
    app[RETRAIN_KEY] = analytics_retrain
    app[BANDS_KEY] = bands
    app[ALERT_ACTIONS_KEY] = alert_actions
    app[EXPORTS_KEY] = ExportJobs(store)

    app.add_routes(route_defs(ROUTES))
    if offers_queries(alert_actions):
        app.add_routes(route_defs(ALERT_QUERY_ROUTES))
    attach_socketio(app, hub, token_store, allowed_origins=sec.allowed_origins,
                    api_host=config.aggregator.api_host, stats=counters.counters,
                    reserve=counters.reserve, release=counters.release)
    app.router.add_get("/", index)
    if dash.is_dir():
        app.router.add_static("/", dash, follow_symlinks=False)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


def _revalidator(app: web.Application) -> Callable[[], None]:
    """The hub's tick hook: every few seconds, close clients whose token was revoked."""
    last_check = {"t": 0.0}
    closing: set[asyncio.Task[None]] = set()

    def on_tick() -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - last_check["t"] < _REVALIDATE_EVERY_S:
            return
        last_check["t"] = loop.time()
        hub = app[HUB_KEY]
        for c in revalidate_clients(hub, app[TOKENS_KEY]):
            hub.clients.discard(c)
            t = asyncio.create_task(c.abort(4401, "token revoked"))
            closing.add(t)
            t.add_done_callback(closing.discard)
    return on_tick


@public
async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the dashboard's page (no token: it asks for one)."""
    page = request.app[DASHBOARD_KEY] / "index.html"
    if not page.is_file():
        return json_error(404, "dashboard not installed")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def _on_startup(app: web.Application) -> None:
    app[TELEMETRY_KEY].event_loop = loop_name(asyncio.get_running_loop())
    await app[HUB_KEY].start()


async def _on_shutdown(app: web.Application) -> None:
    clients = [c for c in list(app[HUB_KEY].clients) if hasattr(c, "abort")]
    await asyncio.gather(*(c.abort(1001, "server shutting down") for c in clients),
                         return_exceptions=True)


async def _on_cleanup(app: web.Application) -> None:
    await app[HUB_KEY].stop()


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
                        port: int | None = None, fast_query: bool = True) -> GatewayServer:
    """Listen on `aggregator.api_host`:`dashboard_config.websocket_port` (TLS if enabled);
    `fast_query` False: every request through aiohttp (front.py), for tests and benches."""
    sec = config.security
    ssl_ctx = None
    if sec.enable_tls:  # tls.py: the standard library's ssl, no `cryptography` (certs.py)
        from legion.aggregator.gateway.tls import server_ssl_context

        ssl_ctx = server_ssl_context(Path(sec.certificate_path), Path(sec.private_key_path))
    host = host or config.aggregator.api_host
    port = config.dashboard_config.websocket_port if port is None else port
    runner = web.AppRunner(app, handle_signals=False, access_log_class=AccessLogger,
                           access_log=ACCESS_LOG, keepalive_timeout=KEEPALIVE_S,
                           shutdown_timeout=3.0)
    await runner.setup()
    try:
        site = FrontSite(runner, host, port, ssl_context=ssl_ctx, fast=fast_query)  # front.py
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
