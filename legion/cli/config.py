"""The whole config file (`monitoring_config.json`): the components' sections composed.

The seed's keys (`collection_interval`, `analysis_interval`, `alert_thresholds`, `ai_settings`,
`dashboard_config`, `security`) keep their meaning and defaults; new settings live in new sections
(`agent`, `aggregator`, `storage`, `analytics`, `sinks`, `alerting`). Each section is a frozen
dataclass owned by its component (see `SECTIONS`); the kernel's machinery builds and checks them
(legion/kernel/config.py). Unknown keys and bad values are errors; every problem is reported with
its key path, all at once. Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion.aggregator.alerts.config import AlertingConfig, alerting_to_dict, parse_alerting
from legion.aggregator.config import (
    AggregatorConfig,
    AggregatorSettings,
    AlertThresholds,
    DashboardConfig,
    SecurityConfig,
    StorageConfig,
)
from legion.aggregator.sinks.config import SinksConfig
from legion.analytics.config import (
    ANALYSIS_INTERVAL_RULE,
    AISettings,
    AnalyticsConfig,
    WorkerSettings,
)
from legion.kernel.config import (
    Section,
    build,
    check_rules,
    dataclass_section,
    freeze,
    read_document,
    resolve_endpoint,
    resolve_path,
)
from legion.kernel.errors import ConfigError
from legion.node_agent.config import (
    COLLECTION_INTERVAL_RULE,
    RESEND_JITTER,
    AgentConfig,
    AgentSettings,
)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration tree. `base_dir` is where relative paths were resolved."""

    collection_interval: float = 1.0
    analysis_interval: float = 5.0
    alert_thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    ai_settings: AISettings = field(default_factory=AISettings)
    dashboard_config: DashboardConfig = field(default_factory=DashboardConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    base_dir: str = "."

    def path(self, p: str) -> Path:
        """Resolve a configured path against the config file's directory."""
        return resolve_path(self.base_dir, p)

    def endpoint(self, ep: str) -> str:
        """Resolve a ZeroMQ endpoint; relative ipc:// paths are taken from `base_dir`."""
        return resolve_endpoint(self.base_dir, ep)

    def agent_settings(self) -> AgentSettings:
        """What a node agent is handed: its section with paths resolved, and its two values."""
        return AgentSettings(self.agent.resolved(self.base_dir), self.collection_interval,
                             self.aggregator.max_message_bytes)

    def aggregator_settings(self) -> AggregatorSettings:
        """What the aggregator service is handed: its sections, every path resolved, once."""
        b = self.base_dir
        return AggregatorSettings(
            collection_interval=self.collection_interval, analysis_interval=self.analysis_interval,
            agent_heartbeat_secs=self.agent.heartbeat_interval_secs,
            alert_thresholds=self.alert_thresholds, ai_settings=self.ai_settings,
            dashboard_config=self.dashboard_config, security=self.security.resolved(b),
            aggregator=self.aggregator.resolved(b), storage=self.storage.resolved(b),
            analytics=self.analytics.resolved(b), sinks=self.sinks.resolved(b),
            alerting=self.alerting.resolved(b))

    def worker_settings(self) -> WorkerSettings:
        """What an analytics worker process is handed."""
        a = self.analytics.resolved(self.base_dir)
        return WorkerSettings(a.jobs_bind, a.results_bind, a.keys_dir,
                              str(self.path(self.agent.server_public_key_path)))


# The table of sections: each component owns its dataclass (and `validate()`) or parser.
SECTIONS: dict[str, Section] = {
    "alert_thresholds": dataclass_section(AlertThresholds),
    "ai_settings": dataclass_section(AISettings),
    "dashboard_config": dataclass_section(DashboardConfig),
    "security": dataclass_section(SecurityConfig),
    "agent": dataclass_section(AgentConfig),
    "aggregator": dataclass_section(AggregatorConfig),
    "storage": dataclass_section(StorageConfig),
    "analytics": dataclass_section(AnalyticsConfig),
    "sinks": dataclass_section(SinksConfig),
    "alerting": Section(lambda raw, path, problems: parse_alerting(raw, problems, path),
                        alerting_to_dict),
}
# The seed's top-level values, each checked by the component that reads it.
_TOP_RULES = [COLLECTION_INTERVAL_RULE, ANALYSIS_INTERVAL_RULE]
_NOT_TOP = frozenset({*SECTIONS, "base_dir"})


def load_config(path: str | Path) -> Config:
    """Read, validate and freeze a config file; raise `ConfigError` listing every problem."""
    raw, base_dir = read_document(path)
    return config_from_dict(raw, base_dir=base_dir)


def config_from_dict(raw: Any, base_dir: str | Path = ".") -> Config:
    """Build a `Config` from parsed JSON; raise `ConfigError` listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a JSON object"])
    problems: list[str] = []
    top = {k: v for k, v in raw.items() if k not in _NOT_TOP}
    values = build(Config, top, "", problems, skip=_NOT_TOP)
    problems += check_rules(freeze(Config, values), "", _TOP_RULES)
    for name, section in SECTIONS.items():
        values[name] = section.parse(raw.get(name), name, problems)
    if not problems:
        values["aggregator"] = _gather_within_resend(values["aggregator"], values["agent"],
                                                     raw.get("aggregator"), problems)
    if problems:
        raise ConfigError(problems)
    return Config(**values, base_dir=str(Path(base_dir).resolve()))


GATHER_SHARE_OF_RESEND = 0.75
"""Commits may gather for at most this share of the agents' earliest resend."""


def _gather_within_resend(agg: AggregatorConfig, agent: AgentConfig, raw_agg: Any,
                          problems: list[str]) -> AggregatorConfig:
    """Keep commit gathering clear of the agents' resends (a batch resent while it still gathers
    is stored twice across aggregators when the agent switches between them). The default
    shrinks to the limit; a value the file sets above it is an error."""
    limit = int(agent.earliest_resend_ms() * GATHER_SHARE_OF_RESEND)
    if agg.commit_max_delay_ms <= limit:
        return agg
    if isinstance(raw_agg, dict) and "commit_max_delay_ms" in raw_agg:
        problems.append(
            f"aggregator.commit_max_delay_ms: {agg.commit_max_delay_ms} must be <= {limit} "
            f"(3/4 of the agents' earliest resend, {agent.earliest_resend_ms()} ms: "
            f"agent.resend_timeout_secs {agent.resend_timeout_secs} less its "
            f"{RESEND_JITTER:.0%} jitter), or 0 to commit each batch at once")
        return agg
    return dataclasses.replace(agg, commit_max_delay_ms=limit)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The JSON form of a config (what `init` writes), without `base_dir`."""
    out: dict[str, Any] = {"collection_interval": cfg.collection_interval,
                           "analysis_interval": cfg.analysis_interval}
    for name, section in SECTIONS.items():
        out[name] = section.dump(getattr(cfg, name))
    return out
