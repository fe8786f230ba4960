"""Alert rules: the seed's `AlertRule(...)`, its additions, and the default rule set.

    AlertRule(rule_id='high_cpu_warning', metric_pattern='*_cpu_usage_percent',
              threshold_type='ml_based', ai_confidence_threshold=0.8, severity='medium')
    AlertRule(rule_id='agent_failure_critical', metric_pattern='*_success_rate_percent',
              threshold_type='static', threshold_value=80.0, severity='high')

Both work as written. `comparison` defaults from the metric: `below` for success/availability
rates (the seed's success-rate rule fires *below* 80), `above` otherwise.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from legion.aggregator.alerts.matchers import Matcher, parse_matchers

THRESHOLD_TYPES = ("static", "ml_based", "predictive", "node_down", "agent_silent")
SEVERITIES = ("info", "low", "medium", "warning", "high", "critical")
"""Ordered from least to most urgent (`warning` ranks with `medium`)."""
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "warning": 2, "high": 3, "critical": 4}
_BELOW_HINTS = ("success_rate", "availability", "uptime_ratio", "free_")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule: which series, what condition, how long, how loud, what to say."""

    rule_id: str
    metric_pattern: str = "*"
    threshold_type: str = "static"
    threshold_value: float | None = None
    ai_confidence_threshold: float = 0.8
    severity: str = "medium"
    comparison: str | None = None  # above | below; None: below for rates, else above
    for_secs: float = 0.0
    clear_value: float | None = None  # hysteresis: stays active until the value crosses this
    keep_firing_for_secs: float = 0.0
    matchers: tuple[str, ...] = ()  # label matchers on the series (k=v, k!=v, k=~re, k!~re)
    annotations: Mapping[str, str] = field(default_factory=dict)  # summary/description templates
    horizon_secs: float | None = None  # predictive: None = the prediction_config horizon
    missing_intervals: int = 5  # node_down / agent_silent: collection intervals without data

    def __post_init__(self) -> None:
        problems = rule_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def direction(self) -> str:
        """`above` or `below`, the default inferred from the metric pattern."""
        if self.comparison is not None:
            return self.comparison
        return _default_direction(self.metric_pattern)

    def selects(self, metric: str, labels: Mapping[str, str]) -> bool:
        """Does this rule watch the series (metric glob and label matchers)."""
        return fnmatch.fnmatchcase(metric, self.metric_pattern) and all(
            m.matches(labels) for m in self.label_matchers())

    def label_matchers(self) -> tuple[Matcher, ...]:
        """The parsed `matchers`."""
        return _parsed(self.matchers)

    def breached(self, value: float, active: bool) -> bool:
        """The condition for `value`; while `active`, the clear threshold applies (hysteresis)."""
        thr = self.threshold_value
        if thr is None:
            return False
        if active and self.clear_value is not None:
            thr = self.clear_value
            return value > thr if self.direction == "above" else value < thr
        return value >= thr if self.direction == "above" else value < thr

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (config and API)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["matchers"] = list(self.matchers)
        out["annotations"] = dict(self.annotations)
        out["comparison"] = self.direction
        return out


@functools.lru_cache(maxsize=4096)
def _parsed(matchers: tuple[str, ...]) -> tuple[Matcher, ...]:
    return parse_matchers(matchers)


@functools.lru_cache(maxsize=4096)
def _default_direction(pattern: str) -> str:
    return "below" if any(h in pattern for h in _BELOW_HINTS) else "above"


def rule_problems(rule: AlertRule, path: str = "") -> list[str]:
    """Every problem with a rule, each prefixed with its key path."""
    p: list[str] = []
    if not isinstance(rule.rule_id, str) or not rule.rule_id:
        p.append(f"{path}rule_id: must be a non-empty string")
    if not isinstance(rule.metric_pattern, str) or not rule.metric_pattern:
        p.append(f"{path}metric_pattern: must be a non-empty glob")
    if rule.threshold_type not in THRESHOLD_TYPES:
        p.append(f"{path}threshold_type: must be one of {', '.join(THRESHOLD_TYPES)} "
                 f"(got {rule.threshold_type!r})")
    if rule.severity not in SEVERITIES:
        p.append(f"{path}severity: must be one of {', '.join(SEVERITIES)} (got {rule.severity!r})")
    if rule.comparison not in (None, "above", "below"):
        p.append(f"{path}comparison: must be 'above' or 'below' (got {rule.comparison!r})")
    if rule.threshold_type == "static" and rule.threshold_value is None:
        p.append(f"{path}threshold_value: required for threshold_type 'static'")
    for name in ("threshold_value", "clear_value", "horizon_secs"):
        v = getattr(rule, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not math.isfinite(v)):
            p.append(f"{path}{name}: must be a finite number (got {v!r})")
    for name in ("for_secs", "keep_firing_for_secs"):
        v = getattr(rule, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 7 * 86400:
            p.append(f"{path}{name}: must be seconds in [0, 604800] (got {v!r})")
    c = rule.ai_confidence_threshold
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1:
        p.append(f"{path}ai_confidence_threshold: must be in (0, 1] (got {c!r})")
    if isinstance(rule.missing_intervals, bool) or not isinstance(rule.missing_intervals, int) \
            or rule.missing_intervals < 1:
        p.append(f"{path}missing_intervals: must be an integer >= 1")
    if (rule.clear_value is not None and rule.threshold_value is not None
            and isinstance(rule.clear_value, (int, float))
            and isinstance(rule.threshold_value, (int, float))):
        above = rule.direction == "above"
        if (rule.clear_value > rule.threshold_value) if above else \
                (rule.clear_value < rule.threshold_value):
            p.append(f"{path}clear_value: must be on the quiet side of threshold_value "
                     f"({'<=' if above else '>='} {rule.threshold_value})")
    if not isinstance(rule.matchers, tuple):
        p.append(f"{path}matchers: must be a list of strings")
    else:
        for i, m in enumerate(rule.matchers):
            try:
                parse_matchers([m])
            except ValueError as exc:
                p.append(f"{path}matchers[{i}]: {exc}")
    if not isinstance(rule.annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in rule.annotations.items()):
        p.append(f"{path}annotations: must be an object of name -> template string")
    return p


RULE_KEYS = frozenset(f.name for f in fields(AlertRule))


def rule_from_dict(raw: Any, path: str, problems: list[str]) -> AlertRule | None:
    """Build a rule from JSON, appending every problem (with `path`) to `problems`."""
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return None
    bad = [f"{path}.{k}: unknown key" for k in raw if k not in RULE_KEYS]
    if "rule_id" not in raw:
        bad.append(f"{path}.rule_id: missing required key")
    if bad:
        problems.extend(bad)
        return None
    kw = dict(raw)
    if isinstance(kw.get("matchers"), list):
        kw["matchers"] = tuple(kw["matchers"])
    if isinstance(kw.get("annotations"), dict):
        kw["annotations"] = dict(kw["annotations"])
    try:
        return AlertRule(**kw)
    except (ValueError, TypeError) as exc:
        problems.extend(f"{path}.{part.strip()}" for part in str(exc).split("; "))
        return None


def default_rules(thresholds: Any, collection_interval: float) -> tuple[AlertRule, ...]:
    """The seed's `alert_thresholds` as static rules, its two AlertRules (plus a memory twin of
    its ml_based cpu rule), node down, agent silent.

    Names are the STORED metric names, so a name copied from an alert works in `legionctl query`.
    """
    t = thresholds
    ann = {"summary": "{node} {agent_id} {metric} = {value} ({comparison} {threshold})"}
    return (
        AlertRule("cpu_usage_high", "system_cpu_usage_percent", "static", t.cpu_usage,
                  severity="high", for_secs=2 * collection_interval, matchers=("cpu=",),
                  annotations=ann),
        AlertRule("memory_usage_high", "system_memory_usage_percent", "static", t.memory_usage,
                  severity="high", for_secs=2 * collection_interval, annotations=ann),
        AlertRule("disk_usage_high", "system_disk_usage_percent", "static", t.disk_usage,
                  severity="high", annotations=ann),
        AlertRule("agent_response_time_high", "agent_response_time_ms", "static",
                  t.agent_response_time, severity="high", matchers=("quantile=p95",
                                                                    "task_type=~|__all__"),
                  for_secs=2 * collection_interval, annotations=ann),
        AlertRule("agent_success_rate_low", "agent_success_rate_percent", "static",
                  t.agent_success_rate, severity="high", comparison="below",
                  for_secs=2 * collection_interval, annotations=ann),
        # the seed's rule, held 3 intervals: one sample outside a learnt band is ordinary
        AlertRule(rule_id="high_cpu_warning", metric_pattern="*_cpu_usage_percent",
                  threshold_type="ml_based", ai_confidence_threshold=0.8, severity="medium",
                  for_secs=3 * collection_interval),
        # its twin for memory (not in the seed): without it a memory leak is never seen
        AlertRule(rule_id="high_memory_warning", metric_pattern="*_memory_usage_percent",
                  threshold_type="ml_based", ai_confidence_threshold=0.8, severity="medium",
                  for_secs=3 * collection_interval),
        AlertRule(rule_id="agent_failure_critical", metric_pattern="*_success_rate_percent",
                  threshold_type="static", threshold_value=80.0, severity="high"),
        AlertRule("node_down", "*", "node_down", severity="critical",
                  annotations={"summary": "node {node} not heard from for {silent_secs} s"}),
        AlertRule("agent_silent", "agent_*", "agent_silent", severity="high",
                  annotations={"summary": "agent {agent_id} on {node} stopped reporting "
                               "({silent_secs} s)"}),
    )
