"""The one place where tokens are checked and roles enforced, for HTTP routes and WS ops.

Every route handler declares the action it needs with `@requires("read" | "write" |
"configure" | "delete")`; the middleware refuses (fail closed) any route that declares nothing,
except static dashboard files. WebSocket ops are mapped to actions in `WS_OPS` and checked with
`authorize`, the same function the middleware's guard (`make_guard`) uses. Every non-read
request (allowed or refused) is written to the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.tokens import PERMISSIONS, Principal, TokenStore

log = logging.getLogger("legion.aggregator.gateway.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ACTIONS = ("read", "write", "configure", "delete")
WS_OPS: dict[str, str | None] = {
    "auth": None, "ping": None,
    "subscribe": "read", "unsubscribe": "read",
}
"""WebSocket op -> required action (None: any authenticated client). Write ops go here."""

PRINCIPAL_KEY = web.RequestKey("legion_principal", object)
AUDIT_DETAILS_KEY = web.RequestKey("legion_audit_details", dict)
"""Handlers put `{"user": "bob", "role": "viewer"}`-style details here for the audit record."""
_ATTR = "__legion_action__"
_DEFERRED_ATTR = "__legion_deferred_auth__"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Forbidden(Exception):
    """A principal lacks the action it asked for."""


def requires(action: str, *, deferred_auth: bool = False) -> Callable[[Handler], Handler]:
    """Declare the action a handler needs; `deferred_auth` lets a WS upgrade authenticate later."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")

    def mark(handler: Handler) -> Handler:
        setattr(handler, _ATTR, action)
        setattr(handler, _DEFERRED_ATTR, deferred_auth)
        return handler
    return mark


def action_of(handler: Handler) -> str | None:
    """The action a handler declared with `requires` (None: none)."""
    action = getattr(handler, _ATTR, None)
    return action if isinstance(action, str) else None


def authorize(principal: Principal | None, action: str | None) -> None:
    """Raise `Forbidden` unless `principal` may perform `action` (None: just authenticated)."""
    if principal is None:
        raise Forbidden("not authenticated")
    if action is not None and action not in PERMISSIONS.get(principal.role, ()):
        raise Forbidden(f"role {principal.role!r} may not {action}")


def bearer_token(request: web.Request, *, allow_query: bool) -> str | None:
    """The token from `Authorization: Bearer ...`, or (WS only) from `?token=`."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""  # present but malformed: treated as a bad token
    if allow_query:
        return request.query.get("token")
    return None


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """The gateway's error body: `{"error": message}`."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


def principal_of(request: web.Request) -> Principal | None:
    """The authenticated principal of a request (None for deferred WS auth)."""
    p = request.get(PRINCIPAL_KEY)
    return p if isinstance(p, Principal) else None


Guard = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
"""Calls the handler for a request it lets through; answers 401/403/500 itself."""


def make_guard(tokens: TokenStore, audit: AuditLog,
               on_auth_failure: Callable[[str], None] | None = None) -> Guard:
    """Build the step of the gateway's middleware (middleware.py) that authenticates,
    authorizes and audits every route."""

    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_handler = request.match_info.handler
        action = getattr(route_handler, _ATTR, None)
        if action is None:
            resource = request.match_info.route.resource
            if isinstance(resource, web.StaticResource) or getattr(route_handler,
                                                                   "__legion_public__", False):
                return await handler(request)
            if request.match_info.http_exception is not None:
                return await handler(request)  # 404/405: nothing to protect
            log.error("event=route_without_action path=%s", request.path)
            return json_error(500, "route has no declared permission")

        deferred = getattr(route_handler, _DEFERRED_ATTR, False)
        token = bearer_token(request, allow_query=deferred)
        principal: Principal | None = None
        if token is not None:
            principal = tokens.verify(token)
            if principal is None:
                _audit(audit, request, None, action, "unauthenticated", 401)
                if on_auth_failure:
                    on_auth_failure("bad_token")
                return json_error(401, "invalid token", **{"WWW-Authenticate": "Bearer"})
        elif not deferred:
            _audit(audit, request, None, action, "unauthenticated", 401)
            if on_auth_failure:
                on_auth_failure("missing_token")
            return json_error(401, "missing bearer token (Authorization: Bearer <token>)",
                              **{"WWW-Authenticate": "Bearer"})
        if principal is not None:
            try:
                authorize(principal, action)
            except Forbidden as exc:
                _audit(audit, request, principal, action, "denied", 403)
                if on_auth_failure:
                    on_auth_failure("forbidden")
                return json_error(403, str(exc))
        request[PRINCIPAL_KEY] = principal
        try:
            response = await handler(request)
        except Exception as exc:  # audit refused/failed writes too, then let it propagate
            _audit(audit, request, principal, action, "failed", getattr(exc, "status", 500))
            raise
        outcome = "ok" if response.status < 400 else "failed"
        _audit(audit, request, principal, action, outcome, response.status)
        return response

    return guard


def public(handler: Handler) -> Handler:
    """Mark a handler as needing no token (the dashboard's index page)."""
    setattr(handler, "__legion_public__", True)  # noqa: B010 (function attribute)
    return handler


def _audit(audit: AuditLog, request: web.Request, principal: Principal | None, action: str,
           outcome: str, status: int) -> None:
    if request.method in _SAFE_METHODS and action == "read":
        return  # reads are not audited; refused writes and every write are
    if request.method in _SAFE_METHODS and outcome == "ok":
        return
    audit.record(user=principal.name if principal else None,
                 role=principal.role if principal else None,
                 action=f"{request.method} {request.path}", target=request.path,
                 outcome=outcome, status=status, remote=request.remote,
                 details=request.get(AUDIT_DETAILS_KEY))
