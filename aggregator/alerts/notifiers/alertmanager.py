"""`alertmanager`: push alerts to a real Alertmanager (`POST {url}/api/v2/alerts`), so teams
that run one keep their routing; Alertmanager groups and dedups on its side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legion.aggregator.alerts.notifiers.http import post_json
from legion.aggregator.alerts.notifiers.payload import am_alert


class AlertmanagerNotifier:
    """Postable alerts (labels, annotations, startsAt, endsAt, generatorURL)."""

    def send(self, n: Any, options: Mapping[str, Any], timeout: float) -> None:
        """Deliver one notification."""
        body = []
        for a in n.alerts:
            x = am_alert(a, n.external_url)
            item = {k: x[k] for k in ("labels", "annotations", "startsAt", "generatorURL")}
            if a.get("state") == "resolved":
                item["endsAt"] = x["endsAt"]
            body.append(item)
        post_json(options["url"].rstrip("/") + "/api/v2/alerts", body, timeout)
