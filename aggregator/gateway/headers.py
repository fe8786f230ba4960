"""Response headers of every gateway answer: CORS for configured origins and security headers.

`preflight` and `secure` (called by the gateway's middleware, middleware.py) read
`security.allowed_origins`/`enable_tls` from the app's config and the Content-Security-Policy
from `CSP_KEY` (a `Csp` over the dashboard's index.html).
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import time
from pathlib import Path

from aiohttp import web

from legion.aggregator.gateway.auth import json_error
from legion.aggregator.gateway.keys import CONFIG_KEY

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>",
                            re.DOTALL | re.IGNORECASE)


class Csp:
    """Content-Security-Policy with hashes of index.html's inline scripts (cached by mtime,
    which is looked at once per `RECHECK_S` at most: a stat per request cost more than the
    rest of the headers together)."""

    RECHECK_S = 1.0

    def __init__(self, index: Path) -> None:
        self.index = index
        self._file = os.fspath(index)
        self._mtime: int | None = None
        self._checked = -math.inf
        self._value = ""

    def value(self) -> str:
        """The policy for the current index.html (one edited within `RECHECK_S`: the last)."""
        now = time.monotonic()
        if now - self._checked < self.RECHECK_S:
            return self._value
        self._checked = now
        try:
            mtime = os.stat(self._file).st_mtime_ns
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


CSP_KEY = web.AppKey("legion_csp", Csp)


def cors_origin(request: web.Request) -> str | None:
    """The request's `Origin` when `security.allowed_origins` lists it, else None."""
    # CORS only for the configured origins (e.g. a Tauri shell at tauri://localhost);
    # the served dashboard is same-origin and needs none. No cookies: no credentials.
    origin = request.headers.get("Origin")
    return origin if origin in request.app[CONFIG_KEY].security.allowed_origins else None


def api_path(path: str) -> bool:
    """Whether a path is the API's (`/api/...`, `/metrics`): JSON answers, no caching."""
    return path.startswith("/api/") or path == "/metrics"


def preflight(request: web.Request, cors: str | None) -> web.Response | None:
    """The answer to a CORS preflight of an API path (204, or 403 for an origin not allowed);
    None for any other request."""
    if request.method == "OPTIONS" and api_path(request.path) \
            and "Access-Control-Request-Method" in request.headers:
        if cors is None:
            return json_error(403, f"origin {request.headers.get('Origin')!r} not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": cors, "Vary": "Origin",
            "Access-Control-Allow-Methods": "GET, POST, DELETE",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600"})
    return None


def secure(request: web.Request, response: web.StreamResponse, cors: str | None) -> None:
    """Add the CORS headers (API paths, allowed origins) and the security headers to a
    response not yet sent; a header the handler set stays as it is."""
    if response.prepared:
        return
    h = response.headers
    api = api_path(request.path)
    if cors is not None and api:
        h["Access-Control-Allow-Origin"] = cors
        h["Vary"] = "Origin"
    for k, v in security_headers(request.app, api):
        h.setdefault(k, v)


def security_headers(app: web.Application, api: bool) -> list[tuple[str, str]]:
    """The security headers of every answer, in order (`api`: of an API path)."""
    out = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
           ("X-Frame-Options", "DENY"), ("Content-Security-Policy", app[CSP_KEY].value())]
    if api:
        out.append(("Cache-Control", "no-store"))
    if app[CONFIG_KEY].security.enable_tls:
        out.append(("Strict-Transport-Security", "max-age=31536000"))
    return out
