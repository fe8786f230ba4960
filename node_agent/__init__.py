"""The node agent: collectors, scheduler, spool, transport, and the in-app `AgentMonitor`."""

from __future__ import annotations

from typing import Any

__all__ = ["AgentMonitor"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing the node agent (or one collector) does not pull in the monitor.
    if name == "AgentMonitor":
        from legion.node_agent.monitor import AgentMonitor
        return AgentMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
