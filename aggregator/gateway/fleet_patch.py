"""A push's fleet: the previous fleet with only the pushed hosts' entries swapped in.

`FleetBuilder.assemble` rebuilds the whole fleet (every host sorted, every agent folded, the
summary counted): O(fleet) per push, at 1,000 hosts ~0.3 ms of the event loop even when one host
sent a batch. A push whose rows are all hosts' system series, of hosts already in the fleet,
changes only those hosts' entries and the summary's health counts: `patch_hosts` swaps the
entries in and moves the counts, O(pushed hosts), and returns what `assemble` returns for the same
host entries and agent rows (tests/aggregator/test_fleet_patch.py holds it to that). Agents'
health follows the clock on the hub's polls, as hosts' staleness already does. Anything else (a
new host, any agent row) is a full assembly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from legion.aggregator.gateway.fleet import HEALTH_ORDER
from legion.aggregator.gateway.timefmt import iso_ms


@dataclass(frozen=True, slots=True)
class HostPatch:
    """A patched fleet, the host entries that changed in it and what they were before."""

    fleet: dict[str, Any]
    changed: list[dict[str, Any]]
    before: list[dict[str, Any]]


def host_index(fleet: Mapping[str, Any]) -> dict[str, int]:
    """Where each node's entry is in `fleet["hosts"]`."""
    return {h["node"]: i for i, h in enumerate(fleet["hosts"])}


def patch_hosts(prev: Mapping[str, Any], index: Mapping[str, int],
                entries: Mapping[str, dict[str, Any]], nodes: Iterable[str],
                now_ms: int) -> HostPatch | None:
    """`prev` (never mutated) with the entries of `nodes` from `entries` (each node's host
    entry, `agents` still empty, as `FleetBuilder.host_entries` makes them); None when a node
    is not in `prev` or has no entry: that needs a full assembly."""
    at: list[tuple[int, dict[str, Any]]] = []
    for node in nodes:
        i, entry = index.get(node), entries.get(node)
        if i is None or entry is None:
            return None
        at.append((i, entry))
    at.sort(key=lambda x: x[0])  # the changed hosts in the fleet's order, as a full diff lists them
    hosts = list(prev["hosts"])
    by_host = dict(prev["summary"]["host_health"])
    changed: list[dict[str, Any]] = []
    before: list[dict[str, Any]] = []
    for i, entry in at:
        old = hosts[i]
        if old["agents"]:  # its agents are as they were: no agent row came
            entry = {**entry, "agents": list(old["agents"])}
        hosts[i] = entry
        if entry != old:
            changed.append(entry)
            before.append(old)
            by_host[old["health"]] -= 1
            by_host[entry["health"]] += 1
    summary = dict(prev["summary"])
    if changed:
        by_agent = summary["agent_health"]
        summary["host_health"] = by_host
        for h in HEALTH_ORDER:
            summary[h] = by_host[h] + by_agent[h]
    fleet = {**prev, "ts": iso_ms(now_ms), "ts_ms": now_ms, "summary": summary, "hosts": hosts}
    return HostPatch(fleet, changed, before)
