"""Shared shapes: Alertmanager's webhook payload (version 4) and its alert objects."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ms: int | None) -> str:
    """Milliseconds since the epoch as RFC 3339 UTC (Alertmanager's zero time for None)."""
    if not ms:
        return ZERO_TIME
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def am_alert(a: Mapping[str, Any], external_url: str = "") -> dict[str, Any]:
    """One alert as Alertmanager writes it (webhook `alerts[]`, API v2 postable alert)."""
    return {"status": "resolved" if a.get("state") == "resolved" else "firing",
            "labels": dict(a["labels"]), "annotations": dict(a.get("annotations", {})),
            "startsAt": rfc3339(a.get("fired_ms") or a.get("active_since_ms")),
            "endsAt": rfc3339(a.get("resolved_ms")),
            "generatorURL": f"{external_url}/#alert={a['id']}",
            "fingerprint": a["fingerprint"]}


def common(items: list[Mapping[str, str]]) -> dict[str, str]:
    """Key/values shared by every mapping."""
    if not items:
        return {}
    out = dict(items[0])
    for m in items[1:]:
        out = {k: v for k, v in out.items() if m.get(k) == v}
    return out


def webhook_payload(n: Any) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, so existing receivers work unchanged."""
    alerts = [am_alert(a, n.external_url) for a in n.alerts]
    return {"version": "4", "groupKey": n.group_key, "truncatedAlerts": 0,
            "status": n.status, "receiver": n.receiver, "groupLabels": dict(n.group_labels),
            "commonLabels": common([a["labels"] for a in alerts]),
            "commonAnnotations": common([a["annotations"] for a in alerts]),
            "externalURL": n.external_url, "alerts": alerts}
