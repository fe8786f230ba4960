"""Where alerts go: receivers, the route tree, inhibit rules and escalation levels of the
`alerting` section, as frozen dataclasses, and their validation (every problem with its key path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from legion.aggregator.alerts.rules import SEVERITIES
from legion.aggregator.alerts.values import check_matchers, check_num, check_strs

RECEIVER_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # type -> (required keys, optional keys) besides name/type and the common ones
    "webhook": (frozenset({"url"}), frozenset({"headers"})),
    "slack": (frozenset({"url"}), frozenset({"channel", "username"})),
    "email": (frozenset({"smarthost", "to", "from"}),
              frozenset({"username", "password", "require_tls", "hello", "ca_file"})),
    "alertmanager": (frozenset({"url"}), frozenset({"resend_secs"})),
    "log": (frozenset(), frozenset({"path"})),
}
"""The keys of each receiver type (the NOTIFIERS table has one notifier per type)."""
AM_RESEND_SECS = 60.0
"""How often firing alerts are re-pushed to an `alertmanager` receiver (`resend_secs`), as
Prometheus's `resend_delay`: Alertmanager resolves an alert nobody re-sends before its endsAt."""
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


def resend_secs(receiver: ReceiverConfig) -> float | None:
    """How often a receiver must be re-sent its firing alerts (None: only when they change)."""
    if receiver.type != "alertmanager":
        return None
    return float(receiver.options.get("resend_secs", AM_RESEND_SECS))


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


def default_inhibits() -> tuple[InhibitRule, ...]:
    """Node down mutes that node's other alerts; a critical mutes lesser alerts of its series."""
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


def parse_receivers(raw: Any, path: str, problems: list[str]) -> tuple[ReceiverConfig, ...]:
    """`alerting.receivers`: a list of `{name, type, ...}` with the type's own keys."""
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
        if "resend_secs" in r:
            check_num(r["resend_secs"], f"{p}.resend_secs", problems, 0.5)
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
                common[k] = check_num(r[k], f"{p}.{k}", problems, lo)
        for k in ("max_attempts", "breaker_failures"):
            if k in r:
                common[k] = int(check_num(r[k], f"{p}.{k}", problems, 1))
        opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items()
                if k not in COMMON_RECEIVER_KEYS}
        out.append(ReceiverConfig(name, typ, opts, **common))
    return tuple(out)


def parse_route(raw: Any, path: str, problems: list[str], receivers: set[str],
           root: bool = False, parent: RouteConfig | None = None) -> RouteConfig:
    """`alerting.route` (or a child route, inheriting its parent's values)."""
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
            problems.append(f"{path}.receiver: must name a receiver "
                            f"({', '.join(sorted(receivers))}) (got {rec!r})")
        kw["receiver"] = rec if isinstance(rec, str) else "log"
    if "group_by" in raw:
        kw["group_by"] = check_strs(raw["group_by"], f"{path}.group_by", problems)
    for k in ("group_wait_secs", "group_interval_secs", "repeat_interval_secs"):
        if k in raw:
            kw[k] = check_num(raw[k], f"{path}.{k}", problems, 0.0)
    kw["matchers"] = check_matchers(raw.get("matchers", []), f"{path}.matchers", problems)
    node = RouteConfig(**{**_fields(base), **kw, "routes": ()})
    children = raw.get("routes", [])
    if not isinstance(children, list):
        problems.append(f"{path}.routes: must be a list of route objects")
        children = []
    kids = tuple(parse_route(c, f"{path}.routes[{i}]", problems, receivers, parent=node)
                 for i, c in enumerate(children))
    return RouteConfig(**{**_fields(node), "routes": kids})


def _fields(r: RouteConfig) -> dict[str, Any]:
    return {k: getattr(r, k) for k in ("receiver", "group_by", "group_wait_secs",
                                       "group_interval_secs", "repeat_interval_secs",
                                       "matchers", "routes")}


def parse_inhibits(raw: Any, path: str, problems: list[str]) -> tuple[InhibitRule, ...]:
    """`alerting.inhibit_rules`."""
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
        out.append(InhibitRule(check_matchers(r.get("source_matchers", []), f"{p}.source_matchers",
                                         problems),
                               check_matchers(r.get("target_matchers", []), f"{p}.target_matchers",
                                         problems),
                               check_strs(r.get("equal", []), f"{p}.equal", problems)))
    return tuple(out)


def parse_escalation(raw: Any, path: str, problems: list[str],
                receivers: set[str]) -> EscalationConfig:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return EscalationConfig()
    problems.extend(f"{path}.{k}: unknown key" for k in raw if k not in ("severities", "levels"))
    sev = check_strs(raw.get("severities", ["critical"]), f"{path}.severities", problems)
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
        after = check_num(lv.get("after_secs"), f"{p}.after_secs", problems, 0)
        levels.append(EscalationLevel(after, str(rec)))
    return EscalationConfig(sev, tuple(levels))
