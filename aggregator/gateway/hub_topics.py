"""The hub's topic data: what each topic holds (`topic_states`), how each list field is keyed,
how an update merges into what a client holds (`merge_update`), what changed between two
versions of a topic (`topic_diff`), and each update's JSON, encoded once (`EncodedUpdates`)."""

from __future__ import annotations

import json
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


def topic_states(fleet: Mapping[str, Any], alerts: list[dict[str, Any]],
                 anomalies: list[dict[str, Any]], forecasts: list[dict[str, Any]],
                 max_events: int) -> dict[str, dict[str, Any]]:
    """Each topic's data: the fleet's parts, the alerts, the newest `max_events` anomalies
    (oldest first) and the forecasts."""
    anomalies = sorted(anomalies, key=lambda e: e.get("ts_ms", 0))
    return {
        "system_health": {"hosts": fleet["hosts"], "departments": fleet["departments"],
                          "summary": fleet["summary"]},
        "agent_metrics": {"agents": fleet["agents"], "links": fleet["links"]},
        "alerts": {"alerts": alerts},
        "anomalies": {"anomalies": anomalies[-max_events:]},
        "forecasts": {"forecasts": forecasts},
    }


class EncodedUpdates:
    """The JSON of the `kept` most recent updates, each encoded once for every client (an
    update is never mutated after it is published)."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._texts: dict[int, tuple[dict[str, Any], str]] = {}  # id(update) -> its JSON

    def text(self, data: dict[str, Any]) -> tuple[str, bool]:
        """`data`'s JSON, and whether it was encoded just now."""
        hit = self._texts.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1], False
        text = json.dumps(data)
        self._texts[id(data)] = (data, text)
        while len(self._texts) > self.kept:
            del self._texts[next(iter(self._texts))]
        return text, True
