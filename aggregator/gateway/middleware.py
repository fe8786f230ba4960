"""The gateway's one middleware: JSON errors, response headers, authentication, in one layer.

What it does, outermost first: errors a handler raises become JSON answers (`api.error_response`);
CORS preflights are answered and the CORS and security headers added (headers.py); every route
is authenticated, authorized and audited (`auth.make_guard`). One layer costs less per request
than the three stacked middlewares it replaced, with the same answers (docs/peers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from legion.aggregator.gateway.api import error_response, json_answer
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.auth import Handler, make_guard
from legion.aggregator.gateway.headers import api_path, cors_origin, preflight, secure
from legion.aggregator.gateway.tokens import TokenStore


def make_middleware(tokens: TokenStore, audit: AuditLog,
                    on_auth_failure: Callable[[str], None] | None = None) -> Any:
    """Build the aiohttp middleware of the gateway app."""
    guard = make_guard(tokens, audit, on_auth_failure)

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler
                                 ) -> web.StreamResponse:
        cors = cors_origin(request)
        response: web.StreamResponse
        try:
            answer = preflight(request, cors)
            if answer is not None:
                response = answer
            elif _static_api(request):  # the dashboard's files never answer an API path
                raise web.HTTPNotFound()
            else:
                response = json_answer(await guard(request, handler))
        except Exception as exc:  # noqa: BLE001 - error_response answers or raises it again
            response = error_response(request, exc)
        secure(request, response, cors)  # every answer, errors too
        return response

    return gateway_middleware


def _static_api(request: web.Request) -> bool:
    """An API path (headers.py `api_path`) that only the static route matched."""
    return api_path(request.path) and isinstance(request.match_info.route.resource,
                                                 web.StaticResource)
