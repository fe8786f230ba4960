"""Field-level deltas of hosts and agents, for `/ws` subscriptions with `"delta": true`.

A plain update carries every changed host/agent as a full object. A delta update carries, per
changed entity, its key, the top-level fields that changed, only the `metrics` keys whose value
changed (and `metrics_removed` for keys that disappeared); a new entity is sent whole. The update's
data says `"delta": true`. A client keeps the full objects and merges (`merge_entity`); the bytes
per update then follow what changed, not how many entities changed. See docs/ws-protocol.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DELTA_FIELDS = {"agents": "agent_id", "hosts": "node"}
"""Topic data fields sent as deltas, and the key of their items."""


def entity_delta(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                 key: str) -> dict[str, Any]:
    """What changed from `old` to `new` (the whole of `new` when there is no `old`)."""
    if old is None:
        return dict(new)
    out: dict[str, Any] = {key: new[key]}
    for field, value in new.items():
        if field == "metrics":
            before = old.get("metrics") or {}
            changed = {k: v for k, v in value.items() if before.get(k) != v or k not in before}
            if changed:
                out["metrics"] = changed
            gone = [k for k in before if k not in value]
            if gone:
                out["metrics_removed"] = gone
        elif field != key and old.get(field) != value:
            out[field] = value
    return out


def delta_update(old_state: Mapping[str, Any], diff: Mapping[str, Any]) -> dict[str, Any]:
    """The delta form of a hub update `diff` against the topic state it was computed from."""
    out = dict(diff)
    for field, key in DELTA_FIELDS.items():
        if field in diff:
            before = {e[key]: e for e in old_state.get(field, ())}
            out[field] = [entity_delta(before.get(e[key]), e, key) for e in diff[field]]
    out["delta"] = True
    return out


def merge_entity(base: Mapping[str, Any], delta: Mapping[str, Any], *,
                 keep_removed: bool = False) -> dict[str, Any]:
    """`base` with `delta` applied; `keep_removed` when `base` is itself a delta (coalescing)."""
    out = dict(base)
    out.update({k: v for k, v in delta.items() if k not in ("metrics", "metrics_removed")})
    if "metrics" in delta or "metrics_removed" in delta:
        metrics = dict(base.get("metrics") or {})
        removed = set(base.get("metrics_removed", ()))
        for k in delta.get("metrics_removed", ()):
            metrics.pop(k, None)
            removed.add(k)
        metrics.update(delta.get("metrics") or {})
        removed -= set(delta.get("metrics") or {})
        out["metrics"] = metrics
        out.pop("metrics_removed", None)
        if keep_removed and removed:
            out["metrics_removed"] = sorted(removed)
    return out
