"""Field-level deltas of hosts and agents, for `/ws` subscriptions with `"delta": true`.

A plain update carries every changed host/agent as a full object. A delta update carries, per
changed entity, its key, the top-level fields that changed, only the `metrics` keys whose value
changed (and `metrics_removed` for keys that disappeared); a new entity is sent whole. The update's
data says `"delta": true`. A client keeps the full objects and merges (`merge_entity`); the bytes
per update then follow what changed, not how many entities changed. See docs/ws-protocol.md.

Numbers are compared and sent at display precision (`DISPLAY_DIGITS` significant digits, more
than the dashboard shows), so values that only jitter below it are not resent and every value
sent is short; an entity with no change at that precision is left out. `last_seen` and
`last_seen_ms` are left out when they follow from `ts_ms` (the merge restores them). Links
(`links`, keyed by source and target) are sent when their rounded values changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legion.aggregator.gateway.timefmt import iso_ms

DELTA_FIELDS = {"agents": "agent_id", "hosts": "node"}
"""Topic data fields sent as deltas, and the key of their items."""
DISPLAY_DIGITS = 4
"""Significant digits of the numbers in a delta (the dashboard shows at most 4)."""
_MISSING = object()


def display_value(value: Any) -> Any:
    """A float at `DISPLAY_DIGITS` (4) significant digits; anything else as it is."""
    return float(f"{value:.4g}") if type(value) is float else value  # literal: the fast path


def changed_values(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `after` that differ from `before` at display precision, at that precision
    (a value whose reading did not change is not rounded at all: the common case is cheap)."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        b = before.get(k, _MISSING)
        if b is v or b == v:
            continue
        q = display_value(v)
        if b is _MISSING or display_value(b) != q:
            out[k] = q
    return out


def display_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of `metrics` at display precision."""
    return {k: display_value(v) for k, v in metrics.items()}


def entity_delta(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                 key: str) -> dict[str, Any]:
    """What changed from `old` to `new` (the whole of `new` when there is no `old`)."""
    if old is None:
        return dict(new)
    out: dict[str, Any] = {key: new[key]}
    for field, value in new.items():
        if field == "metrics":
            before = old.get("metrics") or {}
            changed = changed_values(before, value)
            if changed:
                out["metrics"] = changed
            gone = [k for k in before if k not in value]
            if gone:
                out["metrics_removed"] = gone
        elif field != key and old.get(field) != value:
            out[field] = value
    ts = out.get("ts_ms")
    if ts is not None and new.get("last_seen_ms") == ts and new.get("last_seen") == iso_ms(ts):
        out.pop("last_seen", None)
        out.pop("last_seen_ms", None)
    return out


def _link_key(link: Mapping[str, Any]) -> tuple[Any, Any]:
    return link.get("source"), link.get("target")


def link_delta(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """`new` at display precision, or None when it equals `old` at that precision."""
    if old is None:
        return display_metrics(new)
    return display_metrics(new) if changed_values(old, new) else None


def delta_update(old_state: Mapping[str, Any], diff: Mapping[str, Any]) -> dict[str, Any]:
    """The delta form of a hub update `diff` against the topic state it was computed from."""
    out = dict(diff)
    for field, key in DELTA_FIELDS.items():
        if field in diff:
            before = {e[key]: e for e in old_state.get(field, ())}
            items = (entity_delta(before.get(e[key]), e, key) for e in diff[field])
            out[field] = [d for d in items if len(d) > 1]  # not when only below display precision
    if "links" in diff:
        old_links = {_link_key(e): e for e in old_state.get("links", ())}
        links = (link_delta(old_links.get(_link_key(e)), e) for e in diff["links"])
        out["links"] = [q for q in links if q is not None]
    out["delta"] = True
    return out


def merge_entity(base: Mapping[str, Any], delta: Mapping[str, Any], *,
                 keep_removed: bool = False) -> dict[str, Any]:
    """`base` with `delta` applied; `keep_removed` when `base` is itself a delta (coalescing)."""
    out = dict(base)
    out.update({k: v for k, v in delta.items() if k not in ("metrics", "metrics_removed")})
    if "ts_ms" in delta and "last_seen_ms" not in delta and "last_seen_ms" in base:
        out["last_seen_ms"] = delta["ts_ms"]  # left out of the delta: it follows ts_ms
        out["last_seen"] = iso_ms(delta["ts_ms"])
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
