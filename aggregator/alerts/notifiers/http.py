"""One blocking JSON POST with a timeout; HTTP and socket errors become NotifyError."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


def post_json(url: str, body: Any, timeout: float,
              headers: Mapping[str, str] | None = None) -> int:
    """POST `body` as JSON; return the status (2xx) or raise NotifyError."""
    from legion.aggregator.alerts.notifiers import NotifyError

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "legion-monitor-alerts",
                                          **dict(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (configured URL)
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise NotifyError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
