"""Alert routes: list (read), acknowledge and silence (write), delegated to the alerting engine.

The gateway owns the role check, validation and audit; the engine plugs in through
`create_app(..., alert_actions=engine)`. Without one, the write routes answer 501 (after the
role check, so a viewer still gets 403). An engine that also offers `AlertQueries`
(`legion.aggregator.alerts.AlertEngine` does) adds `GET /api/v1/rules`, `GET /api/v1/silences`,
`DELETE /api/v1/silences/{id}`, `GET /api/v1/alerts/history`, `GET /api/v1/incidents`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web

from legion.aggregator.gateway.auth import AUDIT_DETAILS_KEY, json_error, principal_of, requires
from legion.aggregator.gateway.keys import ALERT_ACTIONS_KEY, HUB_KEY
from legion.proto.limits import MAX_LABEL_KEY_LEN
from legion.proto.names import LABEL_KEY_RE, within

MAX_SILENCE_S = 30 * 86400
_MATCHER_KEY = within(LABEL_KEY_RE, MAX_LABEL_KEY_LEN)


class AlertActions(Protocol):
    """What the alerting engine offers the gateway (called in a worker thread)."""

    def ack(self, alert_id: str, user: str) -> dict[str, Any]:
        """Acknowledge one alert; KeyError when unknown."""
        ...

    def silence(self, matchers: dict[str, str], duration_s: float, comment: str,
                user: str) -> dict[str, Any]:
        """Create a silence; returns it (with its `id`)."""
        ...


class AlertQueries(Protocol):
    """The engine's read side and silence expiry (called in a worker thread)."""

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]: ...

    def rules_list(self) -> list[dict[str, Any]]: ...

    def silences(self) -> list[dict[str, Any]]: ...

    def add_silence(self, matchers: list[str], duration_s: float, comment: str,
                    user: str) -> dict[str, Any]: ...

    def expire_silence(self, silence_id: str) -> bool: ...

    def history(self, since_ms: int | None = None,
                alert_id: str | None = None) -> list[dict[str, Any]]: ...

    def incidents(self) -> list[dict[str, Any]]: ...


ALERT_STATES = ("pending", "firing", "resolved")


def _engine(request: web.Request) -> Any:
    """The alerting engine when it also offers `AlertQueries`, else None."""
    actions = request.app[ALERT_ACTIONS_KEY]
    return actions if hasattr(actions, "rules_list") else None


def offers_queries(actions: AlertActions | None) -> bool:
    """Whether an engine offers `AlertQueries` too (then routes.ALERT_QUERY_ROUTES are served)."""
    return hasattr(actions, "rules_list")


@requires("read")
async def alerts_list(request: web.Request) -> web.Response:
    """GET /api/v1/alerts?state=: the engine's alerts, else the hub's `alerts` topic."""
    state = request.query.get("state")
    if state is not None and state not in ALERT_STATES:
        return json_error(400, f"'state' must be one of {', '.join(ALERT_STATES)}")
    engine = _engine(request)
    if engine is not None:
        return web.json_response(await asyncio.to_thread(engine.alerts, state))
    items = request.app[HUB_KEY].state["alerts"].get("alerts", [])
    return web.json_response([a for a in items if state is None or a.get("state") == state])


@requires("write")
async def alert_ack(request: web.Request) -> web.Response:
    """POST /api/v1/alerts/{alert_id}/ack."""
    alert_id = request.match_info["alert_id"]
    request[AUDIT_DETAILS_KEY] = {"alert_id": alert_id}
    actions = request.app[ALERT_ACTIONS_KEY]
    if actions is None:
        return json_error(501, "the alerting engine is not running")
    p = principal_of(request)
    assert p is not None
    try:
        out = await asyncio.to_thread(actions.ack, alert_id, p.name)
    except KeyError:
        return json_error(404, f"no alert {alert_id!r}")
    return web.json_response(out)


@requires("write")
async def silence_add(request: web.Request) -> web.Response:
    """POST /api/v1/silences {"matchers", "duration_s", "comment"}."""
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "body must be JSON")
    problem = _check_silence(body)
    if problem:
        return json_error(400, problem)
    request[AUDIT_DETAILS_KEY] = {"matchers": body["matchers"],
                                  "duration_s": body["duration_s"]}
    actions = request.app[ALERT_ACTIONS_KEY]
    if actions is None:
        return json_error(501, "the alerting engine is not running")
    p = principal_of(request)
    assert p is not None
    if isinstance(body["matchers"], list):  # matcher strings: k=v, k!=v, k=~re, k!~re
        engine = _engine(request)
        if engine is None:
            return json_error(501, "the alerting engine is not running")
        try:
            out = await asyncio.to_thread(engine.add_silence, list(body["matchers"]),
                                          float(body["duration_s"]),
                                          str(body.get("comment", "")), p.name)
        except ValueError as exc:
            return json_error(400, f"matchers: {exc}")
        return web.json_response(out, status=201)
    out = await asyncio.to_thread(actions.silence, dict(body["matchers"]),
                                  float(body["duration_s"]), str(body.get("comment", "")),
                                  p.name)
    return web.json_response(out, status=201)


@requires("read")
async def rules(request: web.Request) -> web.Response:
    """GET /api/v1/rules."""
    return web.json_response(await asyncio.to_thread(_engine(request).rules_list))


@requires("read")
async def silences(request: web.Request) -> web.Response:
    """GET /api/v1/silences."""
    return web.json_response(await asyncio.to_thread(_engine(request).silences))


@requires("write")
async def silence_expire(request: web.Request) -> web.Response:
    """DELETE /api/v1/silences/{silence_id}."""
    sid = request.match_info["silence_id"]
    request[AUDIT_DETAILS_KEY] = {"silence_id": sid}
    if not await asyncio.to_thread(_engine(request).expire_silence, sid):
        return json_error(404, f"no active silence {sid!r}")
    return web.json_response({"id": sid, "status": "expired"})


@requires("read")
async def history(request: web.Request) -> web.Response:
    """GET /api/v1/alerts/history?since_ms=&alert_id=."""
    since = request.query.get("since_ms")
    if since is not None and not since.isdigit():
        return json_error(400, "'since_ms' must be ms since the epoch")
    return web.json_response(await asyncio.to_thread(
        _engine(request).history, int(since) if since else None,
        request.query.get("alert_id")))


@requires("read")
async def incidents(request: web.Request) -> web.Response:
    """GET /api/v1/incidents."""
    return web.json_response(await asyncio.to_thread(_engine(request).incidents))


def _check_silence(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) - {"matchers", "duration_s", "comment"}:
        return "body must be {\"matchers\": {...}, \"duration_s\": N, \"comment\": \"...\"}"
    m = body.get("matchers")
    if isinstance(m, list):
        if not m or len(m) > 16 or not all(isinstance(x, str) and len(x) <= 300 for x in m):
            return "'matchers' must be a non-empty list of matcher strings (k=v, k=~re, ...)"
    elif not isinstance(m, dict) or not m or len(m) > 16 or not all(
            isinstance(k, str) and _MATCHER_KEY.match(k) and isinstance(v, str) and len(v) <= 256
            for k, v in m.items()):
        return "'matchers' must be a non-empty object of label -> string"
    d = body.get("duration_s")
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 60 <= d <= MAX_SILENCE_S:
        return f"'duration_s' must be a number of seconds in [60, {MAX_SILENCE_S}]"
    c = body.get("comment", "")
    if not isinstance(c, str) or len(c) > 500:
        return "'comment' must be a string of at most 500 characters"
    return None
