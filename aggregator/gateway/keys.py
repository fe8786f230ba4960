"""The gateway app's typed keys: every dependency a module-level handler reads from `request.app`.

`create_app` sets each of them once; handlers read `request.app[STORE_KEY]` and so on, so a
handler's dependencies are named by its body and a test can build an app with other parts.
State private to one module's handlers has its key beside it (`export_api.EXPORTS_KEY`,
`headers.CSP_KEY`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from legion.aggregator.config import AggregatorSettings as Config
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.hub import Hub, Source
from legion.aggregator.gateway.store_reader import StoreReader
from legion.aggregator.gateway.telemetry import GatewayTelemetry
from legion.aggregator.gateway.tokens import TokenStore


class BandReader(Protocol):
    """The learned normal bands (`legion.aggregator.analytics_bridge.BandBook`)."""

    def entries(self, node: str | None = None, metric: str | None = None) -> list[Any]:
        """Every band entry (optionally of one node and/or metric)."""
        ...


CONFIG_KEY = web.AppKey("legion_config", Config)
STORE_KEY: web.AppKey[StoreReader] = web.AppKey("legion_store")
HUB_KEY = web.AppKey("legion_hub", Hub)
TOKENS_KEY = web.AppKey("legion_tokens", TokenStore)
AUDIT_KEY = web.AppKey("legion_audit", AuditLog)
TELEMETRY_KEY = web.AppKey("legion_gateway_telemetry", GatewayTelemetry)
DASHBOARD_KEY = web.AppKey("legion_dashboard_dir", Path)
STATUS_KEY: web.AppKey[Callable[[], Mapping[str, Any]]] = web.AppKey("legion_status")
"""The aggregator's status provider (`/api/v1/status` returns it as is, plus `gateway`)."""
GATEWAY_STATUS_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("legion_gateway_status")
COMPONENT_TELEMETRY_KEY: web.AppKey[Any] = web.AppKey("legion_component_telemetry")
"""`/metrics`' component samples: a callable returning `(name, labels, value)` triples or
`Sample`s, or an object with `samples(ts_ms)` (e.g. the aggregator); None: the flattened status."""
SOURCES_KEY: web.AppKey[Mapping[str, Source]] = web.AppKey("legion_sources")
RETRAIN_KEY: web.AppKey[Callable[[str | None], bool] | None] = web.AppKey("legion_retrain")
BANDS_KEY: web.AppKey[BandReader | None] = web.AppKey("legion_bands")
ALERT_ACTIONS_KEY: web.AppKey[Any] = web.AppKey("legion_alert_actions")
"""The alerting engine (`alerts_api.AlertActions`, often also `AlertQueries`) or None."""
