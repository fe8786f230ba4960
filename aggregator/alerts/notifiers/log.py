"""`log`: one key=value log line per notification (and a JSON line in `path` if given)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from legion.aggregator.alerts.notifiers.payload import webhook_payload

logger = logging.getLogger("legion.aggregator.alerts.notify")


class LogNotifier:
    """Logs; with `path`, appends the webhook payload as one JSON line."""

    def send(self, n: Any, options: Mapping[str, Any], timeout: float) -> None:
        """Deliver one notification."""
        logger.warning("event=alert_notification kind=%s status=%s group=%s alerts=%s",
                       n.kind, n.status, n.group_key, ",".join(n.alert_ids))
        if options.get("path"):
            with Path(options["path"]).open("a") as f:
                f.write(json.dumps(webhook_payload(n)) + "\n")
