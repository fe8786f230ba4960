"""Alert lifecycle: inactive → pending → firing → resolved, with for, keep_firing_for and flap
detection. Pure: takes observations and the clock, returns transitions; no I/O."""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from legion.aggregator.alerts.evaluate import Observation, fingerprint

RESOLVED_KEEP_MS = 3_600_000
"""A resolved alert stays listed (and in the journal's state table) this long."""
Transition = tuple[int, str, str, str, str, float | None, Mapping[str, str]]


class _Blank(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{name}` fields of an annotation template; unknown names become empty."""
    try:
        return string.Formatter().vformat(template, (), _Blank(values))
    except (ValueError, IndexError, AttributeError):
        return template


def _fmt(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


class Lifecycle:
    """Alert documents by fingerprint, advanced once per evaluation round.

    `past_firings(alert_id, now_ms)` -> (firings, self-resolved firings) seeds the history of an
    alert that is no longer listed (resolved over `RESOLVED_KEEP_MS` ago, or never seen since a
    restart), so AI-assisted severity reads more than the last hour (the journal keeps it).
    """

    def __init__(self, flap_window_s: float = 600.0, flap_threshold: int = 4,
                 past_firings: Callable[[str, int], tuple[int, int]] | None = None) -> None:
        self.alerts: dict[str, dict[str, Any]] = {}
        self.flap_window_ms = int(flap_window_s * 1000)
        self.flap_threshold = flap_threshold
        self.past_firings = past_firings

    def load(self, docs: Iterable[dict[str, Any]]) -> None:
        """Restore documents saved by the journal (after a restart)."""
        for d in docs:
            self.alerts[d["fingerprint"]] = d

    def is_active(self, fp: str) -> bool:
        """Pending or firing."""
        d = self.alerts.get(fp)
        return d is not None and d["state"] in ("pending", "firing")

    def step(self, observations: Iterable[Observation], now_ms: int
             ) -> tuple[list[dict[str, Any]], list[Transition]]:
        """Advance every alert; returns (changed documents, transitions)."""
        seen: dict[str, Observation] = {}
        for o in observations:
            if o.breached or o.fingerprint not in seen:
                seen[o.fingerprint] = o
        changed: dict[str, dict[str, Any]] = {}
        events: list[Transition] = []

        def move(d: dict[str, Any], to: str, value: float | None) -> None:
            events.append((now_ms, d["id"], d["rule_id"], d["state"], to, value, d["labels"]))
            d["state"] = to
            changed[d["fingerprint"]] = d

        for fp, o in seen.items():
            d = self.alerts.get(fp)
            if o.breached:
                if d is None or d["state"] in ("inactive", "resolved"):
                    d = self._new(o, now_ms, d)
                    self.alerts[fp] = d
                    move(d, "pending", o.value)
                d["last_breach_ms"] = now_ms
            if d is None:
                continue
            d["value"] = o.value
            d["details"] = {k: _fmt(v) for k, v in o.details.items()}
            self._annotate(d, o)
        for fp, d in list(self.alerts.items()):
            breached = fp in seen and seen[fp].breached
            state = d["state"]
            if state == "pending":
                if breached and now_ms - d["active_since_ms"] >= d["for_ms"]:
                    d.pop("previous", None)
                    d["fired_ms"] = now_ms
                    self._flap_mark(d, now_ms)
                    move(d, "firing", d.get("value"))
                elif not breached:
                    move(d, "inactive", d.get("value"))
                    if d.get("previous"):  # a blip after a resolution: the resolved alert stays
                        self.alerts[fp] = changed[fp] = d = d["previous"]
                    else:
                        del self.alerts[fp]
            elif state == "firing" and not breached:
                if now_ms - d.get("last_breach_ms", 0) >= d["keep_firing_ms"]:
                    d["resolved_ms"] = now_ms
                    if not d.get("acked_by") and now_ms - (d["fired_ms"] or now_ms) <= 300_000:
                        d["self_resolved"] = d.get("self_resolved", 0) + 1
                    move(d, "resolved", d.get("value"))
            elif state == "resolved" and now_ms - d.get("resolved_ms", now_ms) > RESOLVED_KEEP_MS:
                del self.alerts[fp]
                d["state"] = "inactive"
                changed[fp] = d
            if fp in self.alerts:
                was = d.get("flapping", False)
                d["flapping"] = self._flapping(d, now_ms)
                if was != d["flapping"]:
                    changed[fp] = d
        return list(changed.values()), events

    def _new(self, o: Observation, now_ms: int, old: dict[str, Any] | None) -> dict[str, Any]:
        fp = fingerprint(o.labels)
        fired, selfres = (old or {}).get("fired_count", 0), (old or {}).get("self_resolved", 0)
        if self.past_firings is not None:  # windowed, and right after a restart too
            fired, selfres = self.past_firings(fp, now_ms)
        previous = {k: v for k, v in old.items() if k != "previous"} \
            if old is not None and old["state"] == "resolved" else None
        return {"id": fp, "fingerprint": fp, "rule_id": o.rule.rule_id,
                "labels": dict(o.labels), "annotations": {}, "severity": o.rule.severity,
                "base_severity": o.rule.severity, "threshold_type": o.rule.threshold_type,
                "state": "inactive", "active_since_ms": now_ms, "fired_ms": None,
                "resolved_ms": None, "last_breach_ms": now_ms, "value": o.value,
                "for_ms": int(o.rule.for_secs * 1000),
                "keep_firing_ms": int(o.rule.keep_firing_for_secs * 1000),
                "acked_by": None, "acked_ms": None, "escalated": 0,
                "fire_times": list((old or {}).get("fire_times", [])),
                "flapping": (old or {}).get("flapping", False),
                "flap_notified": (old or {}).get("flap_notified", False),
                "self_resolved": selfres, "fired_count": fired, "previous": previous}

    def _annotate(self, d: dict[str, Any], o: Observation) -> None:
        values = {**d["labels"], **d["details"], "value": _fmt(o.value), "rule_id": d["rule_id"]}
        if values.get("breach_at_ms"):
            from legion.aggregator.alerts.notifiers.payload import rfc3339

            values["breach_at"] = rfc3339(int(values["breach_at_ms"]))
        ann = {k: render(t, values) for k, t in o.rule.annotations.items()}
        if "summary" not in ann:
            ann["summary"] = self._default_summary(d, values)
        d["annotations"] = {**ann, **{k: v for k, v in d["annotations"].items()
                                      if k.startswith("ai_")}}

    @staticmethod
    def _default_summary(d: dict[str, Any], v: Mapping[str, Any]) -> str:
        who = v.get("agent_id") or v.get("node", "")
        kind = d["threshold_type"]
        if kind == "predictive":
            return f"{who} {v.get('metric')} forecast to cross {v.get('threshold')} at " \
                   f"{v.get('breach_at', '?')}"
        if kind == "ml_based":
            return f"{who} {v.get('metric')} = {v.get('value')} is anomalous " \
                   f"(confidence {v.get('confidence')}, outside band {v.get('outside_band')})"
        if kind in ("node_down", "agent_silent"):
            return f"{who} silent for {v.get('silent_secs')} s"
        op = ">=" if v.get("comparison") == "above" else "<"
        return f"{who} {v.get('metric')} = {v.get('value')} {op} {v.get('threshold')}"

    def _flap_mark(self, d: dict[str, Any], now_ms: int) -> None:
        d["fire_times"] = [t for t in d["fire_times"] if now_ms - t <= self.flap_window_ms]
        d["fire_times"].append(now_ms)
        d["fired_count"] = d.get("fired_count", 0) + 1

    def _flapping(self, d: dict[str, Any], now_ms: int) -> bool:
        recent = [t for t in d.get("fire_times", []) if now_ms - t <= self.flap_window_ms]
        if len(recent) >= self.flap_threshold:
            return True
        if d.get("flapping") and recent:
            return True  # stays flapping until a whole window passes without a new firing
        return False

    def by_state(self) -> dict[str, int]:
        """Count of alerts per state."""
        out: dict[str, int] = defaultdict(int)
        for d in self.alerts.values():
            out[d["state"]] += 1
        return dict(out)
