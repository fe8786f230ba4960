"""`slack`: an incoming-webhook message (text plus one attachment per alert)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legion.aggregator.alerts.notifiers.http import post_json

COLORS = {"critical": "#d00000", "high": "#e85d04", "medium": "#ffba08", "warning": "#ffba08",
          "low": "#3a86ff", "info": "#8d99ae"}


def slack_payload(n: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body Slack's incoming webhooks accept."""
    firing = [a for a in n.alerts if a.get("state") != "resolved"]
    head = (f"[{n.status.upper()}:{len(firing) if n.status == 'firing' else len(n.alerts)}] "
            f"{n.kind} {', '.join(f'{k}={v}' for k, v in sorted(n.group_labels.items()))}")
    body: dict[str, Any] = {"text": head, "attachments": [{
        "color": "#2a9d8f" if a.get("state") == "resolved" else
        COLORS.get(a["labels"].get("severity", ""), "#8d99ae"),
        "title": f"{a['labels'].get('alertname', a['rule_id'])} ({a.get('state')})",
        "text": a.get("annotations", {}).get("summary", ""),
        "fields": [{"title": k, "value": str(v), "short": True}
                   for k, v in sorted(a["labels"].items())],
        "footer": f"alert {a['id']}"} for a in n.alerts]}
    for k in ("channel", "username"):
        if options.get(k):
            body[k] = options[k]
    return body


class SlackNotifier:
    """POST to the incoming-webhook `url`."""

    def send(self, n: Any, options: Mapping[str, Any], timeout: float) -> None:
        """Deliver one notification."""
        post_json(options["url"], slack_payload(n, options), timeout)
