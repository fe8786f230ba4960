"""The gateway's route table: every HTTP route, its method and its module-level handler.

Handlers declare their action (`auth.requires`) and read their dependencies from the app's typed
keys (keys.py). `ALERT_QUERY_ROUTES` are served only when the alerting engine offers
`AlertQueries`. socket.io (`socketio_api.attach_socketio`), the dashboard's index page and its
static files are added by `create_app`.
"""

from __future__ import annotations

from aiohttp import web

from legion.aggregator.gateway import alerts_api, analytics_api, api, export_api, metrics_api, ws
from legion.aggregator.gateway.auth import Handler

Route = tuple[str, str, Handler]
"""(method, path, handler)."""

ROUTES: tuple[Route, ...] = (
    ("GET", "/api/v1/whoami", api.whoami),
    ("GET", "/api/v1/nodes", api.nodes),
    ("GET", "/api/v1/series", api.series),
    ("GET", "/api/v1/query", api.query),
    ("GET", "/api/v1/status", api.status_route),
    ("GET", "/api/v1/fleet", api.fleet),
    ("GET", "/api/v1/users", api.users_list),
    ("POST", "/api/v1/users", api.users_add),
    ("DELETE", "/api/v1/users/{name}", api.users_revoke),
    ("GET", "/api/v1/alerts", alerts_api.alerts_list),
    ("POST", "/api/v1/alerts/{alert_id}/ack", alerts_api.alert_ack),
    ("POST", "/api/v1/silences", alerts_api.silence_add),
    ("GET", "/api/v1/anomalies", analytics_api.anomalies),
    ("GET", "/api/v1/forecasts", analytics_api.forecasts),
    ("GET", "/api/v1/bands", analytics_api.bands_route),
    ("POST", "/api/v1/analytics/retrain", analytics_api.retrain_route),
    ("POST", "/api/v1/exports", export_api.export_start),
    ("GET", "/api/v1/exports/{job_id}", export_api.export_get),
    ("GET", "/metrics", metrics_api.metrics),
    ("GET", "/ws", ws.ws_handler),
)

ALERT_QUERY_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/v1/rules", alerts_api.rules),
    ("GET", "/api/v1/silences", alerts_api.silences),
    ("DELETE", "/api/v1/silences/{silence_id}", alerts_api.silence_expire),
    ("GET", "/api/v1/alerts/history", alerts_api.history),
    ("GET", "/api/v1/incidents", alerts_api.incidents),
)


def route_defs(table: tuple[Route, ...]) -> list[web.RouteDef]:
    """aiohttp route definitions of a table (a GET route answers HEAD too)."""
    return [web.get(path, handler) if method == "GET" else web.route(method, path, handler)
            for method, path, handler in table]
