"""The `alerting` section of monitoring_config.json: frozen dataclasses and their validation.

    "alerting": {
      "rules": [{"rule_id": "...", "metric_pattern": "...", "threshold_type": "static", ...}],
      "rules_files": ["rules/extra.json"],
      "receivers": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9000/hook"}],
      "route": {"receiver": "ops", "group_by": ["node", "agent_id"], "group_wait_secs": 30,
                "group_interval_secs": 300, "repeat_interval_secs": 14400,
                "routes": [{"matchers": ["severity=critical"], "receiver": "pager"}]},
      "inhibit_rules": [{"source_matchers": [...], "target_matchers": [...], "equal": [...]}],
      "escalation": {"severities": ["critical"], "levels": [{"after_secs": 900,
                                                             "receiver": "pager"}]}
    }

Every problem is reported with its key path (`alerting.route.routes[0].receiver: ...`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion.aggregator.alerts.matchers import parse_matcher
from legion.aggregator.alerts.rules import SEVERITIES, AlertRule, rule_from_dict
from legion.kernel.errors import ConfigError

RECEIVER_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # type -> (required keys, optional keys) besides name/type and the common ones
    "webhook": (frozenset({"url"}), frozenset({"headers"})),
    "slack": (frozenset({"url"}), frozenset({"channel", "username"})),
    "email": (frozenset({"smarthost", "to", "from"}),
              frozenset({"username", "password", "require_tls", "hello", "ca_file"})),
    "alertmanager": (frozenset({"url"}), frozenset()),
    "log": (frozenset(), frozenset({"path"})),
}
"""The keys of each receiver type (the NOTIFIERS table has one notifier per type)."""
COMMON_RECEIVER_KEYS = frozenset({"name", "type", "timeout_secs", "max_attempts",
                                  "backoff_secs", "breaker_failures", "breaker_reset_secs"})


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """One receiver: `name`, `type` (a NOTIFIERS key), its own keys in `options`."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout_secs: float = 5.0
    max_attempts: int = 3
    backoff_secs: float = 0.5
    breaker_failures: int = 3
    breaker_reset_secs: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (options inline, as written in the config)."""
        return {"name": self.name, "type": self.type, **dict(self.options),
                "timeout_secs": self.timeout_secs, "max_attempts": self.max_attempts,
                "backoff_secs": self.backoff_secs, "breaker_failures": self.breaker_failures,
                "breaker_reset_secs": self.breaker_reset_secs}


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """A routing node: matchers choose it, it names a receiver and grouping timings."""

    receiver: str = "log"
    group_by: tuple[str, ...] = ("node", "agent_id")
    group_wait_secs: float = 30.0
    group_interval_secs: float = 300.0
    repeat_interval_secs: float = 14400.0
    matchers: tuple[str, ...] = ()
    routes: tuple[RouteConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """Alerts matching `target_matchers` are muted while one matching `source_matchers` fires
    with the same values of the `equal` labels."""

    source_matchers: tuple[str, ...]
    target_matchers: tuple[str, ...]
    equal: tuple[str, ...] = ()


def _default_inhibits() -> tuple[InhibitRule, ...]:
    return (
        # a node that is down mutes that node's other alerts
        InhibitRule(("alertname=node_down",), ("alertname!=node_down",), ("node",)),
        # a critical mutes the lesser alerts of the same series
        InhibitRule(("severity=critical",), ("severity=~info|low|medium|warning|high",),
                    ("node", "agent_id", "metric")),
    )


@dataclass(frozen=True, slots=True)
class EscalationLevel:
    """After `after_secs` firing without acknowledgement, notify `receiver`."""

    after_secs: float
    receiver: str


@dataclass(frozen=True, slots=True)
class EscalationConfig:
    """Which severities escalate, and the levels in order."""

    severities: tuple[str, ...] = ("critical",)
    levels: tuple[EscalationLevel, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """The whole `alerting` section."""

    enabled: bool = True
    default_rules: bool = True
    ai_severity: bool = True
    evaluation_interval_secs: float | None = None  # None: the top-level analysis_interval
    flap_window_secs: float = 600.0
    flap_threshold: int = 4
    rules: tuple[AlertRule, ...] = ()
    rules_files: tuple[str, ...] = ()
    receivers: tuple[ReceiverConfig, ...] = (ReceiverConfig("log", "log"),)
    route: RouteConfig = field(default_factory=RouteConfig)
    inhibit_rules: tuple[InhibitRule, ...] = field(default_factory=_default_inhibits)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)


_TOP_KEYS = {"enabled", "default_rules", "ai_severity", "evaluation_interval_secs",
             "flap_window_secs", "flap_threshold", "rules", "rules_files", "receivers", "route",
             "inhibit_rules", "escalation"}


def parse_alerting(raw: Any, problems: list[str], path: str = "alerting") -> AlertingConfig:
    """Validate and freeze the section; every problem (with its key path) goes to `problems`."""
    if raw is None:
        return AlertingConfig()
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return AlertingConfig()
    problems.extend(f"{path}.{k}: unknown key" for k in raw if k not in _TOP_KEYS)
    kw: dict[str, Any] = {}
    for k in ("enabled", "default_rules", "ai_severity"):
        if k in raw:
            kw[k] = _bool(raw[k], f"{path}.{k}", problems)
    if raw.get("evaluation_interval_secs") is not None:
        kw["evaluation_interval_secs"] = _num(raw["evaluation_interval_secs"],
                                              f"{path}.evaluation_interval_secs", problems, 0.05)
    if "flap_window_secs" in raw:
        kw["flap_window_secs"] = _num(raw["flap_window_secs"], f"{path}.flap_window_secs",
                                      problems, 1)
    if "flap_threshold" in raw:
        kw["flap_threshold"] = int(_num(raw["flap_threshold"], f"{path}.flap_threshold",
                                        problems, 2))
    kw["rules"] = parse_rules(raw.get("rules", []), f"{path}.rules", problems)
    kw["rules_files"] = _strs(raw.get("rules_files", []), f"{path}.rules_files", problems)
    if "receivers" in raw:
        kw["receivers"] = _receivers(raw["receivers"], f"{path}.receivers", problems)
    names = {r.name for r in kw.get("receivers", AlertingConfig().receivers)}
    if "route" in raw:
        kw["route"] = _route(raw["route"], f"{path}.route", problems, names, root=True)
    else:
        r = RouteConfig(receiver=sorted(names)[0]) if names and "log" not in names \
            else RouteConfig()
        kw["route"] = r
    if "inhibit_rules" in raw:
        kw["inhibit_rules"] = _inhibits(raw["inhibit_rules"], f"{path}.inhibit_rules", problems)
    if "escalation" in raw:
        kw["escalation"] = _escalation(raw["escalation"], f"{path}.escalation", problems, names)
    try:
        return AlertingConfig(**kw)
    except TypeError:  # a value was already reported as a problem
        return AlertingConfig()


def parse_rules(raw: Any, path: str, problems: list[str]) -> tuple[AlertRule, ...]:
    """A list of rule objects; duplicate `rule_id`s are an error."""
    if not isinstance(raw, list):
        problems.append(f"{path}: must be a list of rule objects")
        return ()
    out = [r for i, item in enumerate(raw)
           if (r := rule_from_dict(item, f"{path}[{i}]", problems)) is not None]
    seen: set[str] = set()
    for i, r in enumerate(out):
        if r.rule_id in seen:
            problems.append(f"{path}[{i}].rule_id: duplicate rule_id {r.rule_id!r}")
        seen.add(r.rule_id)
    return tuple(out)


def load_rules_file(path: Path) -> tuple[AlertRule, ...]:
    """Rules from a JSON file (a list, or `{"rules": [...]}`); ConfigError with every problem."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    if isinstance(raw, dict) and set(raw) <= {"rules"}:
        raw = raw.get("rules", [])
    problems: list[str] = []
    rules = parse_rules(raw, f"{path}:rules", problems)
    if problems:
        raise ConfigError(problems)
    return rules


def _bool(v: Any, path: str, problems: list[str]) -> bool:
    if not isinstance(v, bool):
        problems.append(f"{path}: must be true or false (got {v!r})")
        return False
    return v


def _num(v: Any, path: str, problems: list[str], minimum: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        problems.append(f"{path}: must be a number >= {minimum:g} (got {v!r})")
        return minimum
    return float(v)


def _strs(v: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        problems.append(f"{path}: must be a list of non-empty strings")
        return ()
    return tuple(v)


def _matchers(v: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    items = _strs(v, path, problems)
    for i, m in enumerate(items):
        try:
            parse_matcher(m)
        except ValueError as exc:
            problems.append(f"{path}[{i}]: {exc}")
    return items


def _receivers(raw: Any, path: str, problems: list[str]) -> tuple[ReceiverConfig, ...]:
    if not isinstance(raw, list):
        problems.append(f"{path}: must be a list of {{name, type, ...}} objects")
        return ()
    out: list[ReceiverConfig] = []
    seen: set[str] = set()
    for i, r in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{p}: must be an object")
            continue
        name, typ = r.get("name"), r.get("type")
        if not isinstance(name, str) or not name:
            problems.append(f"{p}.name: must be a non-empty string")
            continue
        if name in seen:
            problems.append(f"{p}.name: duplicate receiver {name!r}")
        seen.add(name)
        if typ not in RECEIVER_KEYS:
            problems.append(f"{p}.type: must be one of {', '.join(RECEIVER_KEYS)} (got {typ!r})")
            continue
        required, optional = RECEIVER_KEYS[typ]
        for k in r:
            if k not in COMMON_RECEIVER_KEYS | required | optional:
                problems.append(f"{p}.{k}: unknown key for a {typ} receiver")
        for k in sorted(required - set(r)):
            problems.append(f"{p}.{k}: missing required key for a {typ} receiver")
        for k in ("url", "smarthost"):
            if k in r and not (isinstance(r[k], str) and r[k]):
                problems.append(f"{p}.{k}: must be a non-empty string")
        if "to" in r and not (isinstance(r["to"], list) and r["to"]
                              and all(isinstance(x, str) for x in r["to"])):
            problems.append(f"{p}.to: must be a non-empty list of addresses")
        common: dict[str, Any] = {}
        for k, lo in (("timeout_secs", 0.05), ("backoff_secs", 0.0),
                      ("breaker_reset_secs", 0.05)):
            if k in r:
                common[k] = _num(r[k], f"{p}.{k}", problems, lo)
        for k in ("max_attempts", "breaker_failures"):
            if k in r:
                common[k] = int(_num(r[k], f"{p}.{k}", problems, 1))
        opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items()
                if k not in COMMON_RECEIVER_KEYS}
        out.append(ReceiverConfig(name, typ, opts, **common))
    return tuple(out)


def _route(raw: Any, path: str, problems: list[str], receivers: set[str],
           root: bool = False, parent: RouteConfig | None = None) -> RouteConfig:
    keys = {"receiver", "group_by", "group_wait_secs", "group_interval_secs",
            "repeat_interval_secs", "routes", "matchers"}
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return RouteConfig()
    problems.extend(f"{path}.{k}: unknown key" for k in raw if k not in keys)
    if root and "matchers" in raw:
        problems.append(f"{path}.matchers: the root route matches everything")
    base = parent or RouteConfig(receiver=raw.get("receiver", ""))
    kw: dict[str, Any] = {}
    if "receiver" in raw or root:
        rec = raw.get("receiver")
        if not isinstance(rec, str) or rec not in receivers:
            problems.append(f"{path}.receiver: must name a receiver"
                            f" ({', '.join(sorted(receivers))}) (got {rec!r})")
        kw["receiver"] = rec if isinstance(rec, str) else "log"
    if "group_by" in raw:
        kw["group_by"] = _strs(raw["group_by"], f"{path}.group_by", problems)
    for k in ("group_wait_secs", "group_interval_secs", "repeat_interval_secs"):
        if k in raw:
            kw[k] = _num(raw[k], f"{path}.{k}", problems, 0.0)
    kw["matchers"] = _matchers(raw.get("matchers", []), f"{path}.matchers", problems)
    node = RouteConfig(**{**_fields(base), **kw, "routes": ()})
    children = raw.get("routes", [])
    if not isinstance(children, list):
        problems.append(f"{path}.routes: must be a list of route objects")
        children = []
    kids = tuple(_route(c, f"{path}.routes[{i}]", problems, receivers, parent=node)
                 for i, c in enumerate(children))
    return RouteConfig(**{**_fields(node), "routes": kids})


def _fields(r: RouteConfig) -> dict[str, Any]:
    return {k: getattr(r, k) for k in ("receiver", "group_by", "group_wait_secs",
                                       "group_interval_secs", "repeat_interval_secs",
                                       "matchers", "routes")}


def _inhibits(raw: Any, path: str, problems: list[str]) -> tuple[InhibitRule, ...]:
    if not isinstance(raw, list):
        problems.append(f"{path}: must be a list of objects")
        return ()
    out = []
    for i, r in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{p}: must be an object")
            continue
        problems.extend(f"{p}.{k}: unknown key" for k in r
                        if k not in ("source_matchers", "target_matchers", "equal"))
        for k in ("source_matchers", "target_matchers"):
            if k not in r:
                problems.append(f"{p}.{k}: missing required key")
        out.append(InhibitRule(_matchers(r.get("source_matchers", []), f"{p}.source_matchers",
                                         problems),
                               _matchers(r.get("target_matchers", []), f"{p}.target_matchers",
                                         problems),
                               _strs(r.get("equal", []), f"{p}.equal", problems)))
    return tuple(out)


def _escalation(raw: Any, path: str, problems: list[str],
                receivers: set[str]) -> EscalationConfig:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return EscalationConfig()
    problems.extend(f"{path}.{k}: unknown key" for k in raw if k not in ("severities", "levels"))
    sev = _strs(raw.get("severities", ["critical"]), f"{path}.severities", problems)
    for i, s in enumerate(sev):
        if s not in SEVERITIES:
            problems.append(f"{path}.severities[{i}]: must be one of {', '.join(SEVERITIES)}")
    levels = []
    raw_levels = raw.get("levels", [])
    if not isinstance(raw_levels, list):
        problems.append(f"{path}.levels: must be a list of {{after_secs, receiver}}")
        raw_levels = []
    for i, lv in enumerate(raw_levels):
        p = f"{path}.levels[{i}]"
        if not isinstance(lv, dict):
            problems.append(f"{p}: must be an object")
            continue
        problems.extend(f"{p}.{k}: unknown key" for k in lv if k not in ("after_secs", "receiver"))
        rec = lv.get("receiver")
        if rec not in receivers:
            problems.append(f"{p}.receiver: must name a receiver (got {rec!r})")
        levels.append(EscalationLevel(_num(lv.get("after_secs"), f"{p}.after_secs", problems, 0),
                                      str(rec)))
    return EscalationConfig(sev, tuple(levels))


def alerting_to_dict(cfg: AlertingConfig) -> dict[str, Any]:
    """The JSON form of the section (what `legionctl init` writes; `parse_alerting` reads it)."""

    def route(r: RouteConfig, root: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"receiver": r.receiver, "group_by": list(r.group_by),
                               "group_wait_secs": r.group_wait_secs,
                               "group_interval_secs": r.group_interval_secs,
                               "repeat_interval_secs": r.repeat_interval_secs}
        if not root:
            out["matchers"] = list(r.matchers)
        out["routes"] = [route(c, False) for c in r.routes]
        return out

    out: dict[str, Any] = {
        "enabled": cfg.enabled, "default_rules": cfg.default_rules,
        "ai_severity": cfg.ai_severity, "flap_window_secs": cfg.flap_window_secs,
        "flap_threshold": cfg.flap_threshold,
        "rules": [{k: v for k, v in r.to_dict().items() if v is not None} for r in cfg.rules],
        "rules_files": list(cfg.rules_files),
        "receivers": [r.to_dict() for r in cfg.receivers],
        "route": route(cfg.route, True),
        "inhibit_rules": [{"source_matchers": list(i.source_matchers),
                           "target_matchers": list(i.target_matchers), "equal": list(i.equal)}
                          for i in cfg.inhibit_rules],
        "escalation": {"severities": list(cfg.escalation.severities),
                       "levels": [{"after_secs": lv.after_secs, "receiver": lv.receiver}
                                  for lv in cfg.escalation.levels]}}
    if cfg.evaluation_interval_secs is not None:
        out["evaluation_interval_secs"] = cfg.evaluation_interval_secs
    return out
