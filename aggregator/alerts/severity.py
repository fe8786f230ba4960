"""AI-assisted severity (the seed's "AI-based severity prediction"): adjust an alert's severity
from three signals and explain the adjustment in its annotations.

* anomaly confidence (ml_based rules): >= 0.95 raises one step;
* its own history: an alert that resolved by itself within 5 minutes in most of its recent
  firings (at least 3) is lowered one step (two when it always did);
* correlation: two or more other firing alerts on the same node or agent raise one step.

Alerts lowered to `low`/`info` are listed but not notified (the noise the seed asks to cut).
A node_down or agent_silent alert is never lowered: a silent box is never noise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from legion.aggregator.alerts.rules import SEVERITY_RANK

LEVELS = ("info", "low", "medium", "high", "critical")
QUIET = frozenset({"info", "low"})
"""Severities that are listed but not notified."""


def assess(alerts: Iterable[dict[str, Any]]) -> None:
    """Set `severity` and the `ai_severity`/`ai_explanation` annotations of firing alerts."""
    firing = [a for a in alerts if a["state"] in ("pending", "firing")]
    per_node = Counter(a["labels"].get("node") for a in firing)
    per_agent = Counter(a["labels"].get("agent_id") for a in firing if a["labels"].get("agent_id"))
    for a in firing:
        base = a["base_severity"]
        step, why = 0, []
        conf = (a.get("details") or {}).get("confidence")
        try:
            conf_f = float(conf) if conf is not None else None
        except (TypeError, ValueError):
            conf_f = None
        if conf_f is not None and conf_f >= 0.95:
            step += 1
            why.append(f"anomaly confidence {conf_f:.2f} >= 0.95")
        fired, selfres = a.get("fired_count", 0), a.get("self_resolved", 0)
        silent_kind = a.get("threshold_type") in ("node_down", "agent_silent")
        if fired >= 3 and selfres / fired >= 0.6 and not silent_kind:
            drop = 2 if selfres == fired else 1
            step -= drop
            why.append(f"resolved by itself within 5 min in {selfres} of {fired} firings")
        aid = a["labels"].get("agent_id")
        related = max(per_node[a["labels"].get("node")], per_agent[aid] if aid else 0) - 1
        if related >= 2:
            step += 1
            why.append(f"correlated with {related} other active alerts on the same "
                       f"{'agent' if aid and per_agent[aid] - 1 >= 2 else 'node'}")
        rank = {"warning": 2}.get(base, SEVERITY_RANK.get(base, 2))
        new = LEVELS[max(0, min(len(LEVELS) - 1, rank + step))]
        if silent_kind and SEVERITY_RANK[new] < SEVERITY_RANK.get(base, 2):
            new = base
        a["severity"] = new if step else base
        ann = a.setdefault("annotations", {})
        ann["ai_severity"] = a["severity"]
        ann["ai_explanation"] = (f"{base} -> {a['severity']}: " + "; ".join(why)) if why \
            else f"{base}: no adjustment"
