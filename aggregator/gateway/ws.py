"""The `/ws` endpoint: origin check, connection cap, auth, ops, and per-client coalescing.

Each client has one sender task and, per topic, at most one pending message: updates that arrive
while the previous frame is still being written are merged into it (newest wins per key), so a
slow client costs bounded memory and simply sees fewer, fuller updates. Protocol:
docs/ws-protocol.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from legion.aggregator.gateway.auth import (
    WS_OPS,
    Forbidden,
    authorize,
    json_error,
    principal_of,
    requires,
)
from legion.aggregator.gateway.hub import TOPICS, Hub, merge_update
from legion.aggregator.gateway.keys import CONFIG_KEY, HUB_KEY, TELEMETRY_KEY, TOKENS_KEY
from legion.aggregator.gateway.timefmt import iso_ms, now_ms
from legion.aggregator.gateway.tokens import Principal, TokenStore

log = logging.getLogger("legion.aggregator.gateway.ws")

AUTH_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 30.0
WS_HEARTBEAT_SECS = 30.0
"""Ping interval; a client that does not answer within half of it is closed (counted slow)."""
MAX_CLIENT_MSG_BYTES = 64 * 1024
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4408
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class WsClient:
    """One connected client: its principal, topics, pending messages and sender task."""

    def __init__(self, ws: web.WebSocketResponse, principal: Principal, token: str, hub: Hub,
                 stats: dict[str, int], send_timeout_s: float | None = None,
                 transport: asyncio.Transport | None = None) -> None:
        self.ws = ws
        self.transport = transport
        self.principal = principal
        self.token = token
        self.hub = hub
        self.stats = stats
        self.send_timeout_s = SEND_TIMEOUT_S if send_timeout_s is None else send_timeout_s
        self.topics: set[str] = set()
        self.delta_topics: set[str] = set()  # subscribed with "delta": true (see delta.py)
        self.pending: dict[str, list[Any]] = {}  # topic -> [kind, data, coalesced]
        self.control: deque[dict[str, Any]] = deque(maxlen=64)
        self.wake = asyncio.Event()
        self.closed = False

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        """Queue a snapshot or update for `topic`, merging into a pending one (never blocks)."""
        p = self.pending.get(topic)
        if kind == "snapshot" or p is None:
            self.pending[topic] = [kind, data, 0]
        else:
            p[1] = merge_update(p[1], data, self.hub.max_history)
            if p[0] == "snapshot":
                p[1].pop("resolved", None)
                p[1].pop("delta", None)  # a delta merged into a snapshot leaves a full snapshot
            p[2] += 1
            self.stats["coalesced"] += 1
        self.wake.set()

    def say(self, msg: dict[str, Any]) -> None:
        """Queue a control message (hello, pong, error)."""
        self.control.append(msg)
        self.wake.set()

    async def run_sender(self) -> None:
        """Write queued messages until closed; close slow clients with 4408."""
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            while (self.control or self.pending) and not self.closed:
                if self.control:
                    text = json.dumps(self.control.popleft())
                else:
                    topic = next(iter(self.pending))
                    text = self._topic_message(topic, *self.pending.pop(topic))
                try:
                    await asyncio.wait_for(self.ws.send_str(text), self.send_timeout_s)
                except (TimeoutError, ConnectionError, RuntimeError) as exc:
                    self.stats["slow_closed" if isinstance(exc, asyncio.TimeoutError)
                               else "send_errors"] += 1
                    await self.abort(CLOSE_TOO_SLOW, "client too slow")
                    return
                self.stats["messages_sent"] += 1

    def _topic_message(self, topic: str, kind: str, data: dict[str, Any], coalesced: int) -> str:
        """The JSON text of a snapshot or update; an update as published (not merged with
        another here) reuses the text the hub encoded once for every client."""
        ts = now_ms()
        head: dict[str, Any] = {"topic": topic, "type": kind, "ts": iso_ms(ts), "ts_ms": ts}
        if kind == "update":
            head["coalesced"] = coalesced
        body = self.hub.encoded(data) if kind == "update" and not coalesced \
            else json.dumps(data)
        return json.dumps(head)[:-1] + ', "data": ' + body + "}"

    async def abort(self, code: int, reason: str) -> None:
        """Close the connection, forcibly if the close frame cannot be written."""
        self.closed = True
        self.wake.set()
        self.hub.clients.discard(self)
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.transport is not None:  # the close frame could not even be written
                self.transport.abort()


def origin_allowed(request: web.Request, allowed: tuple[str, ...], api_host: str) -> bool:
    """Absent (non-browser), listed, or the gateway's own origin on a non-rebindable host."""
    origin = request.headers.get("Origin")
    if origin is None or origin in allowed:
        return True
    own = f"{'https' if request.secure else 'http'}://{request.host}"
    if origin != own:
        return False
    hostname = request.url.host or ""
    if hostname in _LOOPBACK_NAMES or hostname == api_host:
        return True
    try:  # an IP literal cannot be re-pointed by DNS rebinding
        ipaddress.ip_address(hostname.strip("[]"))
        return True
    except ValueError:
        return False


@requires("read", deferred_auth=True)
async def ws_handler(request: web.Request) -> web.StreamResponse:
    """GET /ws: the WebSocket stream (role checks via `auth.authorize`)."""
    hub, tokens, tm = request.app[HUB_KEY], request.app[TOKENS_KEY], request.app[TELEMETRY_KEY]
    config = request.app[CONFIG_KEY]
    stats = tm.counters
    if not origin_allowed(request, config.security.allowed_origins, config.aggregator.api_host):
        stats["refused_origin"] += 1
        return json_error(403, f"origin {request.headers.get('Origin')!r} not allowed")
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_SECS, max_msg_size=MAX_CLIENT_MSG_BYTES)
    if not ws.can_prepare(request).ok:
        return json_error(400, "expected a WebSocket upgrade")
    if not tm.reserve():
        stats["refused_cap"] += 1
        return json_error(503, f"too many WebSocket connections (max {tm.max_clients})")
    try:
        await ws.prepare(request)
        principal = principal_of(request)
        token = _request_token(request)
        if principal is None:
            principal, token = await _first_message_auth(ws, tokens)
            if principal is None:
                stats["auth_failed"] += 1
                await ws.close(code=CLOSE_UNAUTHENTICATED, message=b"not authenticated")
                return ws
        client = WsClient(ws, principal, token, hub, stats, transport=request.transport)
        hub.clients.add(client)
        sender = asyncio.create_task(client.run_sender())
        client.say({"type": "hello", "user": principal.name, "role": principal.role,
                    "permissions": list(principal.permissions), "topics": list(TOPICS),
                    "update_interval_ms": config.dashboard_config.update_interval_ms,
                    "max_history_points": hub.max_history, "ts": iso_ms(now_ms()),
                    "ts_ms": now_ms()})
        try:
            await _receive_loop(ws, client, hub, tokens)
            if isinstance(ws.exception(), asyncio.TimeoutError):  # no pong: the heartbeat
                stats["slow_closed"] += 1
        finally:
            hub.clients.discard(client)
            client.closed = True
            client.wake.set()
            sender.cancel()
            try:
                await sender
            except asyncio.CancelledError:
                pass
        return ws
    finally:
        tm.release()


def _request_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token", "")


async def _first_message_auth(ws: web.WebSocketResponse,
                              tokens: TokenStore) -> tuple[Principal | None, str]:
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_S)
    except TimeoutError:
        return None, ""
    if msg.type != WSMsgType.TEXT:
        return None, ""
    try:
        body = json.loads(msg.data)
    except ValueError:
        return None, ""
    if not isinstance(body, dict) or body.get("op") != "auth" or not isinstance(
            body.get("token"), str):
        return None, ""
    return tokens.verify(body["token"]), body["token"]


async def _receive_loop(ws: web.WebSocketResponse, client: WsClient, hub: Hub,
                        tokens: TokenStore) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            if msg.type == WSMsgType.BINARY:
                client.say({"type": "error", "error": "binary frames are not supported"})
            continue
        try:
            body = json.loads(msg.data)
        except ValueError:
            client.say({"type": "error", "error": "message is not JSON"})
            continue
        op = body.get("op") if isinstance(body, dict) else None
        if op not in WS_OPS:
            client.say({"type": "error", "error": f"unknown op {op!r}", "op": op})
            continue
        # Re-check the token on every op: a revoked user loses the connection at once.
        current = tokens.verify(client.token)
        if current is None:
            await client.abort(CLOSE_UNAUTHENTICATED, "token revoked")
            return
        client.principal = current
        try:
            authorize(current, WS_OPS[op])
        except Forbidden as exc:
            client.say({"type": "error", "error": str(exc), "op": op})
            continue
        if op == "subscribe" and hub.fleet is None:
            try:  # first client before the first tick: give it real data, not empty lists
                await hub.refresh()
            except Exception as exc:  # the tick loop counts and logs store problems
                log.debug("event=refresh_on_subscribe_failed error=%r", exc)
        _dispatch(str(op), body, client, hub)


def _dispatch(op: str, body: dict[str, Any], client: WsClient, hub: Hub) -> None:
    if op == "ping":
        ts = now_ms()
        client.say({"type": "pong", "ts": iso_ms(ts), "ts_ms": ts})
        return
    if op == "auth":
        client.say({"type": "error", "error": "already authenticated", "op": op})
        return
    topics = body.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
        client.say({"type": "error", "error": "'topics' must be a non-empty list of strings",
                    "op": op})
        return
    bad = [t for t in topics if t not in TOPICS]
    if bad:
        client.say({"type": "error", "op": op,
                    "error": f"unknown topic {bad[0]!r} (one of {', '.join(TOPICS)})"})
        return
    if op == "subscribe":
        history = body.get("history", True)
        delta = body.get("delta", False)
        if not isinstance(history, bool) or not isinstance(delta, bool):
            client.say({"type": "error", "op": op,
                        "error": "'history' and 'delta' must be true or false"})
            return
        for t in topics:
            client.topics.add(t)
            (client.delta_topics.add if delta else client.delta_topics.discard)(t)
            client.offer(t, "snapshot", hub.snapshot(t, history=history))
    else:
        for t in topics:
            client.topics.discard(t)
            client.delta_topics.discard(t)
            client.pending.pop(t, None)


def revalidate_clients(hub: Hub, tokens: TokenStore) -> list[WsClient]:
    """Clients whose token no longer verifies (to be closed); updates changed roles."""
    dead: list[WsClient] = []
    for c in list(hub.clients):
        if not isinstance(c, WsClient):
            continue
        p = tokens.verify(c.token)
        if p is None:
            dead.append(c)
        else:
            c.principal = p
    return dead
