"""The seed's socket.io subscribers: `/socket.io/` on the gateway, fed by the same hub as `/ws`.

    const socket = io('wss://HOST:8765', {auth: {token: 'lgn_…'}});
    socket.on('agent_metrics', (msg) => ...);      // {"topic", "type", "ts", "ts_ms", "data"}
    socket.on('system_health', (msg) => ...);

Same rules as the plain WebSocket (docs/ws-protocol.md): the token is checked by the same
`TokenStore` (from `auth.token`, `Authorization: Bearer`, or `?token=`), the role needs `read`
(`auth.authorize`), the `Origin` passes `ws.origin_allowed`, the connection counts against
`max_ws_clients`, and messages are the plain WebSocket's frames, emitted as events named after
their topic. On connect a client gets a snapshot of each topic in `auth.topics` (default: all
five; `auth.history` asks for chart history, default false) and then updates; the events
`subscribe` / `unsubscribe` (`{"topics": [...]}`) change that later. A revoked token is
disconnected at the next message. Per client and topic at most one message is pending (updates
merge into it), as for `/ws`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from legion.aggregator.gateway.auth import WS_OPS, Forbidden, authorize, public
from legion.aggregator.gateway.hub import TOPICS, Hub, merge_update
from legion.aggregator.gateway.timefmt import iso_ms, now_ms
from legion.aggregator.gateway.tokens import Principal, TokenStore
from legion.aggregator.gateway.ws import origin_allowed

log = logging.getLogger("legion.aggregator.gateway.socketio")

SOCKETIO_PATH = "/socket.io/"


class SioClient:
    """One socket.io connection as a hub subscriber: pending messages and a sender task."""

    def __init__(self, sio: socketio.AsyncServer, sid: str, principal: Principal, token: str,
                 hub: Hub, tokens: TokenStore, stats: dict[str, int]) -> None:
        self.sio, self.sid, self.principal, self.token = sio, sid, principal, token
        self.hub, self.tokens, self.stats = hub, tokens, stats
        self.topics: set[str] = set()
        self.pending: dict[str, list[Any]] = {}  # topic -> [kind, data, coalesced]
        self.wake = asyncio.Event()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        """Queue a snapshot or update, merging into a pending update (never blocks)."""
        p = self.pending.get(topic)
        if kind == "snapshot" or p is None:
            self.pending[topic] = [kind, data, 0]
        else:
            p[1] = merge_update(p[1], data, self.hub.max_history)
            p[2] += 1
            self.stats["coalesced"] += 1
        self.wake.set()

    async def run(self) -> None:
        """Emit pending messages until closed; disconnect when the token stops verifying."""
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            while self.pending and not self.closed:
                principal = self.tokens.verify(self.token)
                if principal is None:
                    self.closed = True
                    await self.sio.disconnect(self.sid)
                    return
                self.principal = principal
                topic = next(iter(self.pending))
                kind, data, coalesced = self.pending.pop(topic)
                ts = now_ms()
                msg = {"topic": topic, "type": kind, "ts": iso_ms(ts), "ts_ms": ts, "data": data}
                if kind == "update":
                    msg["coalesced"] = coalesced
                try:
                    await self.sio.emit(topic, msg, to=self.sid)
                except Exception as exc:  # the connection went away mid-send: stop quietly
                    self.stats["send_errors"] += 1
                    log.debug("event=socketio_emit_failed sid=%s error=%r", self.sid, exc)
                    self.closed = True
                    return
                self.stats["messages_sent"] += 1


def _token(environ: dict[str, Any], auth: Any) -> str | None:
    token = auth.get("token") if isinstance(auth, dict) else None
    if isinstance(token, str):
        return token
    request: web.Request = environ["aiohttp.request"]
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token")


def _topics(value: Any, default: tuple[str, ...]) -> list[str]:
    if value is None:
        return list(default)
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ValueError("'topics' must be a non-empty list of strings")
    bad = [t for t in value if t not in TOPICS]
    if bad:
        raise ValueError(f"unknown topic {bad[0]!r} (one of {', '.join(TOPICS)})")
    return value


def attach_socketio(app: web.Application, hub: Hub, tokens: TokenStore, *,
                    allowed_origins: tuple[str, ...], api_host: str, stats: dict[str, int],
                    reserve: Callable[[], bool], release: Callable[[], None]) -> None:
    """Serve socket.io at `/socket.io/` on `app` with the `/ws` token, role and origin rules."""

    def origin_ok(origin: str | None, environ: dict[str, Any]) -> bool:
        ok = origin_allowed(environ["aiohttp.request"], allowed_origins, api_host)
        if not ok:
            stats["refused_origin"] += 1
        return ok

    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=origin_ok,
                               cors_credentials=False, logger=False, engineio_logger=False)
    clients: dict[str, SioClient] = {}

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = _token(environ, auth)
        principal = tokens.verify(token) if token else None
        if principal is None:
            stats["auth_failed" if token is None else "bad_token"] += 1
            raise socketio.exceptions.ConnectionRefusedError(
                "missing token" if token is None else "invalid token")
        try:
            authorize(principal, WS_OPS["subscribe"])
            topics = _topics(auth.get("topics") if isinstance(auth, dict) else None, TOPICS)
        except (Forbidden, ValueError) as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from exc
        if not reserve():
            stats["refused_cap"] += 1
            raise socketio.exceptions.ConnectionRefusedError("too many connections")
        history = bool(auth.get("history", False)) if isinstance(auth, dict) else False
        client = SioClient(sio, sid, principal, token or "", hub, tokens, stats)
        clients[sid] = client
        hub.clients.add(client)
        client.task = asyncio.create_task(client.run(), name=f"legion-socketio-{sid}")
        if hub.fleet is None:
            try:  # first subscriber before the first tick: real data, not empty lists
                await hub.refresh()
            except Exception as exc:  # the hub's tick loop counts and logs store problems
                log.debug("event=refresh_on_connect_failed error=%r", exc)
        _subscribe(client, topics, history)

    async def disconnect(sid: str, *_: Any) -> None:
        client = clients.pop(sid, None)
        if client is None:
            return
        hub.clients.discard(client)
        client.closed = True
        client.wake.set()
        release()

    def client_and_topics(sid: str, body: Any) -> tuple[Any, Any, dict[str, Any] | None]:
        """The connected client and the topics a (un)subscribe names, or the error to answer."""
        client = clients.get(sid)
        if client is None:
            return None, None, {"error": "not connected"}
        try:
            return client, _topics(body.get("topics") if isinstance(body, dict) else None,
                                   ()), None
        except ValueError as exc:
            return None, None, {"error": str(exc)}

    async def subscribe(sid: str, body: Any) -> dict[str, Any]:
        client, topics, error = client_and_topics(sid, body)
        if error is not None:
            return error
        _subscribe(client, topics, bool(body.get("history", False)))
        return {"ok": True, "topics": sorted(client.topics)}

    async def unsubscribe(sid: str, body: Any) -> dict[str, Any]:
        client, topics, error = client_and_topics(sid, body)
        if error is not None:
            return error
        for t in topics:
            client.topics.discard(t)
            client.pending.pop(t, None)
        return {"ok": True, "topics": sorted(client.topics)}

    for name, fn in (("connect", connect), ("disconnect", disconnect),
                     ("subscribe", subscribe), ("unsubscribe", unsubscribe)):
        sio.on(name, fn)

    @public  # socket.io authenticates in its `connect` handler (tokens checked there)
    async def handle(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await sio.handle_request(request)
        return response

    for method in ("GET", "POST", "OPTIONS"):
        app.router.add_route(method, SOCKETIO_PATH, handle)

    async def close_all(_: web.Application) -> None:
        for sid in list(clients):
            await sio.disconnect(sid)

    app.on_shutdown.append(close_all)


def _subscribe(client: SioClient, topics: list[str], history: bool) -> None:
    for t in topics:
        client.topics.add(t)
        client.offer(t, "snapshot", client.hub.snapshot(t, history=history))
