"""`webhook`: Alertmanager's webhook payload (version 4) POSTed to `url`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legion.aggregator.alerts.notifiers.http import post_json
from legion.aggregator.alerts.notifiers.payload import webhook_payload


class WebhookNotifier:
    """POST the v4 payload; `headers` (optional) are added to the request."""

    def send(self, n: Any, options: Mapping[str, Any], timeout: float) -> None:
        """Deliver one notification."""
        post_json(options["url"], webhook_payload(n), timeout, options.get("headers"))
