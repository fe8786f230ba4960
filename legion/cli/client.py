"""A small JSON client for the gateway API: the one way `legionctl` reaches the aggregator."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from legion.cli.config import Config
from legion.kernel.errors import ApiError, LegionError

TOKEN_ENV = "LEGION_TOKEN"
TOKEN_FILENAME = "admin.token"


def resolve_token(config: Config, token: str | None) -> str:
    """The bearer token: --token, else $LEGION_TOKEN, else `admin.token` beside the config."""
    if token:
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = Path(config.base_dir) / TOKEN_FILENAME
    try:
        return path.read_text().strip()
    except OSError:
        raise LegionError(
            f"no API token: pass --token, set ${TOKEN_ENV}, or keep one in {path}") from None


class ApiClient:
    """Calls the gateway with a bearer token; raises `ApiError` on HTTP errors."""

    def __init__(self, config: Config, token: str, timeout: float = 30.0) -> None:
        sec = config.security
        scheme = "https" if sec.enable_tls else "http"
        host = config.aggregator.api_host
        host = f"[{host}]" if ":" in host else host
        self.base = f"{scheme}://{host}:{config.dashboard_config.websocket_port}"
        self.token = token
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if sec.enable_tls:
            # Trust exactly the configured certificate (self-signed by `legionctl init`).
            self._ssl = ssl.create_default_context(cafile=str(config.path(sec.certificate_path)))

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                body: Any = None) -> Any:
        """Send one request and return the decoded JSON answer."""
        q = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(q, doseq=True) if q else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                msg = str(exc.reason)
            raise ApiError(exc.code, msg) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LegionError(f"cannot reach the aggregator at {self.base}: {reason} "
                              "(is `legionctl aggregator run` up?)") from None

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON resource."""
        return self.request("GET", path, params)
