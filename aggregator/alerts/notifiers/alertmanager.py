"""`alertmanager`: push alerts to a real Alertmanager (`POST {url}/api/v2/alerts`), so teams
that run one keep their routing; Alertmanager groups and dedups on its side.

As Prometheus does, firing alerts are re-pushed every `resend_secs` (the router's `refresh`
notifications) with `endsAt` four resends ahead: Alertmanager keeps an alert active while it is
re-sent, whatever its `resolve_timeout`, and resolves it by itself if this aggregator dies."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from legion.aggregator.alerts.notifiers.http import post_json
from legion.aggregator.alerts.notifiers.payload import am_alert, rfc3339
from legion.aggregator.alerts.route_config import AM_RESEND_SECS


class AlertmanagerNotifier:
    """Postable alerts (labels, annotations, startsAt, endsAt, generatorURL)."""

    def send(self, n: Any, options: Mapping[str, Any], timeout: float) -> None:
        """Deliver one notification."""
        valid_ms = int(4 * 1000 * float(options.get("resend_secs", AM_RESEND_SECS)))
        body = []
        for a in n.alerts:
            x = am_alert(a, n.external_url)
            item = {k: x[k] for k in ("labels", "annotations", "startsAt", "generatorURL")}
            item["endsAt"] = x["endsAt"] if a.get("state") == "resolved" else \
                rfc3339(int(time.time() * 1000) + valid_ms)
            body.append(item)
        post_json(options["url"].rstrip("/") + "/api/v2/alerts", body, timeout)
