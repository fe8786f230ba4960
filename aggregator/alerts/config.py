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

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion.aggregator.alerts.route_config import (
    COMMON_RECEIVER_KEYS,
    RECEIVER_KEYS,
    EscalationConfig,
    EscalationLevel,
    InhibitRule,
    ReceiverConfig,
    RouteConfig,
    default_inhibits,
    parse_escalation,
    parse_inhibits,
    parse_receivers,
    parse_route,
)
from legion.aggregator.alerts.rules import AlertRule, rule_from_dict
from legion.aggregator.alerts.values import check_bool, check_num, check_strs
from legion.kernel.config import resolve_path
from legion.kernel.errors import ConfigError

__all__ = ["COMMON_RECEIVER_KEYS", "RECEIVER_KEYS", "AlertingConfig", "EscalationConfig",
           "EscalationLevel", "InhibitRule", "ReceiverConfig", "RouteConfig", "alerting_to_dict",
           "load_rules_file", "parse_alerting", "parse_rules"]


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """The whole `alerting` section."""

    enabled: bool = True
    default_rules: bool = True
    ai_severity: bool = True
    evaluation_interval_secs: float | None = None  # None: the top-level analysis_interval
    flap_window_secs: float = 600.0
    flap_threshold: int = 4
    min_band_history_secs: float = 3600.0  # ml_based: a younger learnt band is not used
    severity_history_secs: float = 604800.0  # AI severity: how far back an alert's firings count
    rules: tuple[AlertRule, ...] = ()
    rules_files: tuple[str, ...] = ()
    receivers: tuple[ReceiverConfig, ...] = (ReceiverConfig("log", "log"),)
    route: RouteConfig = field(default_factory=RouteConfig)
    inhibit_rules: tuple[InhibitRule, ...] = field(default_factory=default_inhibits)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)

    def resolved(self, base_dir: str | Path) -> AlertingConfig:
        """This section with its rules files resolved against `base_dir`."""
        return dataclasses.replace(self, rules_files=tuple(
            str(resolve_path(base_dir, f)) for f in self.rules_files))


_TOP_KEYS = {"enabled", "default_rules", "ai_severity", "evaluation_interval_secs",
             "flap_window_secs", "flap_threshold", "min_band_history_secs",
             "severity_history_secs", "rules", "rules_files", "receivers", "route",
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
            kw[k] = check_bool(raw[k], f"{path}.{k}", problems)
    if raw.get("evaluation_interval_secs") is not None:
        kw["evaluation_interval_secs"] = check_num(raw["evaluation_interval_secs"],
                                              f"{path}.evaluation_interval_secs", problems, 0.05)
    if "flap_window_secs" in raw:
        kw["flap_window_secs"] = check_num(raw["flap_window_secs"], f"{path}.flap_window_secs",
                                      problems, 1)
    for k in ("min_band_history_secs", "severity_history_secs"):
        if k in raw:
            kw[k] = check_num(raw[k], f"{path}.{k}", problems, 0)
    if "flap_threshold" in raw:
        kw["flap_threshold"] = int(check_num(raw["flap_threshold"], f"{path}.flap_threshold",
                                        problems, 2))
    kw["rules"] = parse_rules(raw.get("rules", []), f"{path}.rules", problems)
    kw["rules_files"] = check_strs(raw.get("rules_files", []), f"{path}.rules_files", problems)
    if "receivers" in raw:
        kw["receivers"] = parse_receivers(raw["receivers"], f"{path}.receivers", problems)
    names = {r.name for r in kw.get("receivers", AlertingConfig().receivers)}
    if "route" in raw:
        kw["route"] = parse_route(raw["route"], f"{path}.route", problems, names, root=True)
    else:
        r = RouteConfig(receiver=sorted(names)[0]) if names and "log" not in names \
            else RouteConfig()
        kw["route"] = r
    if "inhibit_rules" in raw:
        kw["inhibit_rules"] = parse_inhibits(raw["inhibit_rules"], f"{path}.inhibit_rules",
                                             problems)
    if "escalation" in raw:
        kw["escalation"] = parse_escalation(raw["escalation"], f"{path}.escalation", problems,
                                            names)
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
        "min_band_history_secs": cfg.min_band_history_secs,
        "severity_history_secs": cfg.severity_history_secs,
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
