"""HTTP gateway: JSON API, WebSocket stream, Prometheus `/metrics` and the dashboard's files.

Public surface (see docs/api.md and docs/ws-protocol.md)::

    from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
"""

from typing import Any

from legion.aggregator.gateway.app import GatewayServer, create_app, start_gateway, stop_gateway
from legion.aggregator.gateway.audit import AuditLog
from legion.aggregator.gateway.hub import TOPICS, Hub
from legion.aggregator.gateway.tokens import (
    PERMISSIONS,
    ROLES,
    Principal,
    TokenStore,
    check_permission,
)

__all__ = [
    "PERMISSIONS", "ROLES", "TOPICS", "AuditLog", "GatewayServer", "Hub", "Principal",
    "TokenStore", "check_permission", "create_app", "generate_self_signed", "start_gateway",
    "stop_gateway",
]


def __getattr__(name: str) -> Any:
    """`generate_self_signed` loads `cryptography` (~8 MiB of RSS): only when it is asked for."""
    if name == "generate_self_signed":
        from legion.aggregator.gateway.certs import generate_self_signed

        return generate_self_signed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
