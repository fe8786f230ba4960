"""One evaluation round: every rule against the stored data, as observations.

An observation says, for one alert fingerprint (rule + labels), whether the rule's condition
holds now and with which value. The lifecycle (for, keep_firing_for, pending/firing/resolved)
is `lifecycle`'s business; hysteresis is decided here, because the condition itself depends on
whether the alert is already active.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from legion.aggregator.alerts.rules import AlertRule

INTERNAL_NODES = frozenset({"analytics", "aggregator"})
"""Nodes the aggregator itself writes; never "down"."""
ANOMALY_METRIC = "legion_anomaly_score"


@dataclass(frozen=True, slots=True)
class Observation:
    """The state of one rule's condition for one label set at one evaluation."""

    rule: AlertRule
    labels: Mapping[str, str]
    breached: bool
    value: float | None
    details: Mapping[str, Any] = field(default_factory=dict)
    fp: str = ""

    @property
    def fingerprint(self) -> str:
        """Stable identity: rule + labels."""
        return self.fp or fingerprint(self.labels)


def fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits of the sorted labels (alertname is the rule id, so rule + labels)."""
    raw = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=65536)
def glob_matches(name: str, pattern: str) -> bool:
    """`fnmatch.fnmatchcase(name, pattern)`, remembered (metric names and rule patterns are
    few and stable)."""
    return fnmatch.fnmatchcase(name, pattern)


def alert_labels(rule: AlertRule, node: str, metric: str | None,
                 labels: Mapping[str, str]) -> dict[str, str]:
    """The alert's labels: alertname, severity, node, metric (the stored name), series labels."""
    out = {k: str(v) for k, v in labels.items()}
    out.update({"alertname": rule.rule_id, "severity": rule.severity, "node": node})
    if metric:
        out["metric"] = metric
    return out


@dataclass(slots=True)
class Inputs:
    """What one round reads: the latest points, nodes, anomaly scores, bands, forecasts."""

    now_ms: int
    latest: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    forecasts: list[Mapping[str, Any]] = field(default_factory=list)
    band_for: Callable[[str, str, Mapping[str, str]], Any] | None = None
    min_band_ms: int = 0  # a band learnt from a shorter span of history is not used


class Evaluator:
    """Turns rules and inputs into observations."""

    def __init__(self, collection_interval: float, heartbeat_secs: float = 2.0,
                 stale_after_secs: float | None = None, score_lag_ms: int = 0) -> None:
        """`score_lag_ms`: how much older anomaly scores are than the points they score
        (bucketed detection stamps a score at its bucket's start: `bucketed.score_lag_ms`)."""
        self.interval_s = collection_interval
        self.heartbeat_s = max(collection_interval, heartbeat_secs)
        self.stale_ms = int(1000 * (stale_after_secs or max(30.0, 10 * collection_interval)))
        self.score_stale_ms = self.stale_ms + score_lag_ms

    def evaluate(self, rules: Iterable[AlertRule], inp: Inputs,
                 active: Callable[[str], bool]) -> list[Observation]:
        """Every observation of this round; `active(fingerprint)` says what is already active."""
        fresh = [r for r in inp.latest if inp.now_ms - r["ts_ms"] <= self.stale_ms
                 and r["node"] not in INTERNAL_NODES]
        scores = [r for r in inp.latest if r["metric"] == ANOMALY_METRIC
                  and inp.now_ms - r["ts_ms"] <= self.score_stale_ms]
        out: list[Observation] = []
        for rule in rules:
            kind = rule.threshold_type
            if kind == "static":
                out.extend(self._static(rule, fresh, active))
            elif kind == "ml_based":
                out.extend(self._ml(rule, fresh, scores, inp))
            elif kind == "predictive":
                out.extend(self._predictive(rule, inp))
            elif kind == "node_down":
                out.extend(self._node_down(rule, inp))
            elif kind == "agent_silent":
                out.extend(self._agent_silent(rule, inp))
        return out

    def _static(self, rule: AlertRule, rows: list[dict[str, Any]],
                active: Callable[[str], bool]) -> Iterable[Observation]:
        matchers = rule.label_matchers()
        for r in rows:
            # rule.selects, with the glob's answer per metric name remembered: a round asks
            # it for every rule and every series (9 x 116 at one agent, ~2 ms of 2.8; issue 17)
            if not glob_matches(r["metric"], rule.metric_pattern) or \
                    not all(m.matches(r["labels"]) for m in matchers):
                continue
            labels = alert_labels(rule, r["node"], r["metric"], r["labels"])
            fp = fingerprint(labels)
            hit = rule.breached(r["value"], active(fp))
            yield Observation(rule, labels, hit, r["value"],
                              {"threshold": rule.threshold_value, "comparison": rule.direction},
                              fp)

    def _ml(self, rule: AlertRule, rows: list[dict[str, Any]], scores: list[dict[str, Any]],
            inp: Inputs) -> Iterable[Observation]:
        by_series: dict[str, dict[str, Any]] = {}
        for s in scores:
            src = {k: v for k, v in s["labels"].items() if k not in ("node", "metric")}
            node, metric = s["labels"].get("node", ""), s["labels"].get("metric", "")
            if node in INTERNAL_NODES or not rule.selects(metric, src):
                continue
            labels = alert_labels(rule, node, metric, src)
            by_series[fingerprint(labels)] = {"labels": labels, "score": s["value"]}
        for r in rows:
            if inp.band_for is None or not rule.selects(r["metric"], r["labels"]):
                continue
            band = inp.band_for(r["node"], r["metric"], r["labels"])
            if band is None or band.trained_to_ms - band.trained_from_ms < inp.min_band_ms:
                continue
            labels = alert_labels(rule, r["node"], r["metric"], r["labels"])
            e = by_series.setdefault(fingerprint(labels), {"labels": labels})
            e["value"] = r["value"]
            e["outside_band"] = bool(band.outside(r["ts_ms"], r["value"]))
        for e in by_series.values():
            score = e.get("score")
            hit = (score is not None and score >= rule.ai_confidence_threshold) \
                or e.get("outside_band", False)
            yield Observation(rule, e["labels"], hit, e.get("value", score),
                              {"confidence": score, "outside_band": e.get("outside_band"),
                               "threshold": rule.ai_confidence_threshold,
                               "comparison": "confidence >="})

    def _predictive(self, rule: AlertRule, inp: Inputs) -> Iterable[Observation]:
        for f in inp.forecasts:
            metric, node = f.get("metric", ""), f.get("node", "")
            src = {"agent_id": f["agent_id"]} if f.get("agent_id") else {}
            if not fnmatch.fnmatchcase(metric, rule.metric_pattern) or node in INTERNAL_NODES:
                continue
            horizon_s = rule.horizon_secs if rule.horizon_secs is not None else \
                3600 * float(f.get("horizon_hours") or 0)
            eta = f.get("breach_at_ms")
            hit = eta is not None and eta - inp.now_ms <= horizon_s * 1000
            labels = alert_labels(rule, node, metric, src)
            yield Observation(rule, labels, hit, None,
                              {"breach_at_ms": eta, "threshold": f.get("threshold"),
                               "horizon_secs": horizon_s, "comparison": "forecast crosses"})

    def _node_down(self, rule: AlertRule, inp: Inputs) -> Iterable[Observation]:
        limit_ms = int(1000 * self.heartbeat_s * rule.missing_intervals)
        for n in inp.nodes:
            if n["node"] in INTERNAL_NODES:
                continue
            silent = inp.now_ms - n["last_seen_ms"]
            labels = alert_labels(rule, n["node"], None, {})
            yield Observation(rule, labels, silent > limit_ms, silent / 1000,
                              {"silent_secs": round(silent / 1000), "threshold": limit_ms / 1000})

    def _agent_silent(self, rule: AlertRule, inp: Inputs) -> Iterable[Observation]:
        limit_ms = int(1000 * max(self.interval_s, 1.0) * rule.missing_intervals)
        last: dict[tuple[str, str], int] = {}
        for r in inp.latest:
            aid = r["labels"].get("agent_id")
            if aid and fnmatch.fnmatchcase(r["metric"], rule.metric_pattern):
                key = (r["node"], aid)
                last[key] = max(last.get(key, 0), r["ts_ms"])
        # silent while its node still reports: measured up to the node's last batch, so a stall
        # of the whole node (or of the pipeline) is node_down's business, not 18 agent alerts
        heard = {n["node"]: n["last_seen_ms"] for n in inp.nodes}
        for (node, aid), ts in last.items():
            silent = min(inp.now_ms, heard.get(node, inp.now_ms)) - ts
            labels = alert_labels(rule, node, None, {"agent_id": aid})
            yield Observation(rule, labels, silent > limit_ms, silent / 1000,
                              {"silent_secs": round(silent / 1000), "threshold": limit_ms / 1000})
