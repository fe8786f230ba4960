"""The gateway's own counters: WebSocket/socket.io clients, refusals, auth failures, the hub.

One `GatewayTelemetry` per app (`keys.TELEMETRY_KEY`). The WebSocket and socket.io servers count
into `counters` and hold a client slot with `reserve`/`release`; the auth middleware reports
failures through `count_failure`. `status(...)` is the `gateway` part of `/api/v1/status`,
`samples(status)` the `legion_gateway_*` series of `/metrics`.
"""

from __future__ import annotations

from typing import Any

COUNTERS = ("messages_sent", "coalesced", "slow_closed", "send_errors", "refused_cap",
            "refused_origin", "auth_failed", "bad_token", "missing_token", "forbidden")
"""Every counter, reported even while zero."""

Triple = tuple[str, dict[str, str], float, int | None]
"""(name, labels, value, ts_ms or None) as `prom.render` takes it."""


class GatewayTelemetry:
    """Counters and the WebSocket client slots of one gateway app (event loop thread only)."""

    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.slots_used = 0
        self.event_loop = ""  # "uvloop" or "asyncio" once the app has started (event_loop.py)

    def reserve(self) -> bool:
        """Take a client slot; False when all `dashboard_config.max_ws_clients` are taken."""
        if self.slots_used >= self.max_clients:
            return False
        self.slots_used += 1
        return True

    def release(self) -> None:
        """Give a slot taken with `reserve` back."""
        self.slots_used -= 1

    def count_failure(self, reason: str) -> None:
        """Count an authentication/authorization failure (bad_token, missing_token, forbidden)."""
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def status(self, ws_clients: int, tls: bool, hub: dict[str, Any]) -> dict[str, Any]:
        """The gateway's status: clients, limits, TLS, its event loop, every counter, the hub."""
        return {"ws_clients": ws_clients, "ws_max_clients": self.max_clients, "tls": tls,
                "event_loop": self.event_loop, **self.counters, "hub": hub}


def samples(g: dict[str, Any]) -> list[Triple]:
    """The `legion_gateway_*` samples of a `GatewayTelemetry.status` dict."""
    out: list[Triple] = [("legion_gateway_ws_clients", {}, g["ws_clients"], None),
                         ("legion_gateway_ws_max_clients", {}, g["ws_max_clients"], None)]
    for k in ("messages_sent", "coalesced", "slow_closed", "send_errors"):
        out.append((f"legion_gateway_ws_{k}_total", {}, g[k], None))
    for k in ("refused_cap", "refused_origin", "auth_failed"):
        out.append(("legion_gateway_ws_refused_total", {"reason": k[8:] if k.startswith(
            "refused_") else "auth"}, g[k], None))
    for k in ("bad_token", "missing_token", "forbidden"):
        out.append(("legion_gateway_auth_failures_total", {"reason": k}, g[k], None))
    out.append(("legion_gateway_hub_ticks_total", {}, g["hub"]["ticks"], None))
    out.append(("legion_gateway_hub_tick_errors_total", {}, g["hub"]["tick_errors"], None))
    out.append(("legion_gateway_hub_pushes_total", {}, g["hub"]["pushes"], None))
    for k, result in (("published", "published"), ("duplicates", "duplicate")):
        if "live_feed" in g["hub"]:  # batches as accepted by ingest (live_feed.py)
            out.append(("legion_gateway_live_batches_total", {"result": result},
                        g["hub"]["live_feed"][k], None))
    return out
