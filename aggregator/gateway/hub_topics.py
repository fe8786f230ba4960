"""The hub's topic data: how each list field is keyed, how an update merges into what a client
holds (`merge_update`), and what changed between two versions of a topic (`topic_diff`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from legion.aggregator.gateway.delta import DELTA_FIELDS, merge_entity

TOPICS = ("agent_metrics", "system_health", "alerts", "anomalies", "forecasts")
LIST_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "agents": lambda e: e["agent_id"], "hosts": lambda e: e["node"],
    "departments": lambda e: e["name"], "alerts": lambda e: e["id"],
    "anomalies": lambda e: e["id"], "forecasts": lambda e: e["id"],
    "links": lambda e: (e["source"], e["target"]),
}
"""Each list field of topic data and how its items are keyed (updates replace by key)."""
EVENT_FIELDS = frozenset({"anomalies"})


def merge_update(base: dict[str, Any], update: Mapping[str, Any],
                 max_events: int) -> dict[str, Any]:
    """A new dict: `update`'s keyed items replace `base`'s, other fields overwrite; no mutation.

    A delta update (`"delta": true`, see delta.py) merges its hosts/agents into `base`'s field by
    field instead; the result stays a delta when `base` was one.
    """
    delta, base_delta = bool(update.get("delta")), bool(base.get("delta"))
    out = dict(base)
    out.pop("resolved", None)
    resolved = set(base.get("resolved", ())) | set(update.get("resolved", ()))
    for field, value in update.items():
        if field == "resolved":
            continue
        keyf = LIST_KEYS.get(field)
        if keyf is None or field not in base:
            out[field] = value
            continue
        items = {keyf(e): e for e in base[field]}
        for e in value:
            k = keyf(e)
            old = items.get(k)
            items[k] = merge_entity(old, e, keep_removed=base_delta) \
                if delta and field in DELTA_FIELDS and old is not None else e
            resolved.discard(k)
        merged = list(items.values())
        if field in EVENT_FIELDS and len(merged) > max_events:
            merged = merged[-max_events:]
        out[field] = merged
    if "alerts" in out and resolved:
        out["alerts"] = [a for a in out["alerts"] if a["id"] not in resolved]
    if resolved:
        out["resolved"] = sorted(resolved)
    return out


def topic_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from `old` to `new` (one topic's data): each list field's new or changed
    items, the ids of alerts gone (`resolved`), and the summary when anything changed."""
    out: dict[str, Any] = {}
    for field, value in new.items():
        keyf = LIST_KEYS.get(field)
        if keyf is None:
            continue
        before = {keyf(e): e for e in old.get(field, ())}
        changed = [e for e in value if (b := before.get(keyf(e))) is not e and b != e]
        if changed:
            out[field] = changed
        if field == "alerts":
            now_ids = {keyf(e) for e in value}
            resolved = sorted(k for k in before if k not in now_ids)
            if resolved:
                out["resolved"] = resolved
    if "summary" in new and (out or new["summary"] != old.get("summary")):
        out["summary"] = new["summary"]  # counts change without a host changing, too
    return out
