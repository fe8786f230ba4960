"""Response headers of every gateway answer: CORS for configured origins and security headers.

`headers_middleware` reads `security.allowed_origins`/`enable_tls` from the app's config and the
Content-Security-Policy from `CSP_KEY` (a `Csp` over the dashboard's index.html).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aiohttp import web

from legion.aggregator.gateway.auth import Handler, json_error
from legion.aggregator.gateway.keys import CONFIG_KEY

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>",
                            re.DOTALL | re.IGNORECASE)


class Csp:
    """Content-Security-Policy with hashes of index.html's inline scripts (cached by mtime)."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self._mtime: int | None = None
        self._value = ""

    def value(self) -> str:
        """The policy for the current index.html."""
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


CSP_KEY = web.AppKey("legion_csp", Csp)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS preflight and headers for `security.allowed_origins`; security headers on all."""
    # CORS only for the configured origins (e.g. a Tauri shell at tauri://localhost);
    # the served dashboard is same-origin and needs none. No cookies: no credentials.
    sec = request.app[CONFIG_KEY].security
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
        h.setdefault("Content-Security-Policy", request.app[CSP_KEY].value())
        if request.path.startswith("/api/") or request.path == "/metrics":
            h.setdefault("Cache-Control", "no-store")
        if sec.enable_tls:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
