"""Configuration: the seed's `monitoring_config.json`, loaded once into frozen dataclasses.

The seed's keys (`collection_interval`, `analysis_interval`, `alert_thresholds`, `ai_settings`,
`dashboard_config`, `security`) keep their meaning and defaults; new settings live in new sections
(`agent`, `aggregator`, `storage`, `analytics`, `alerting`: owned by aggregator/alerts/config.py). Unknown keys and bad values are errors; every
problem is reported with its key path, all at once. Relative paths are resolved against the
directory of the config file.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion.aggregator.sinks.config import SinksConfig, sinks_problems
from legion.errors import ConfigError

CONFIG_FILENAME = "monitoring_config.json"


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    cpu_usage: float = 80.0
    memory_usage: float = 85.0
    disk_usage: float = 90.0
    agent_response_time: float = 5000.0
    agent_success_rate: float = 85.0


@dataclass(frozen=True, slots=True)
class AISettings:
    anomaly_detection_enabled: bool = True
    predictive_analytics_enabled: bool = True
    ml_threshold_adjustment: bool = True
    model_retrain_interval: float = 86400.0


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    websocket_port: int = 8765
    update_interval_ms: int = 1000
    max_history_points: int = 1000
    max_ws_clients: int = 64


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    enable_tls: bool = True
    certificate_path: str = "./certs/server.crt"
    private_key_path: str = "./certs/server.key"
    allowed_origins: tuple[str, ...] = ("tauri://localhost",)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Node agent: where to send, which keys, where to keep state and the spool."""

    aggregator_endpoint: str = "tcp://127.0.0.1:5555"
    ack_endpoint: str = "tcp://127.0.0.1:5556"
    server_public_key_path: str = "keys/aggregator.key"
    keys_dir: str = "keys/agents"
    state_dir: str = "state"
    monitor_endpoint: str = "ipc://run/agent-monitor.sock"
    collectors: tuple[str, ...] = ()
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_sync_interval_ms: int = 500
    resend_timeout_secs: float = 5.0
    heartbeat_interval_secs: float = 2.0
    aggregator_endpoints: tuple[str, ...] = ()  # ordered failover list (overrides the above)
    ack_endpoints: tuple[str, ...] = ()  # the ack endpoint of each, at the same positions
    failover_after_secs: float = 10.0
    failback_probe_secs: float = 15.0


@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    """Aggregator: Curve server sockets, allowlist, ingest queue and commit policy, API."""

    ingest_bind: str = "tcp://127.0.0.1:5555"
    ack_bind: str = "tcp://127.0.0.1:5556"
    secret_key_path: str = "keys/aggregator.key_secret"
    authorized_keys_dir: str = "keys/authorized"
    max_message_bytes: int = 8 * 1024 * 1024
    queue_max_batches: int = 10_000
    commit_interval_ms: int = 100
    commit_max_points: int = 200_000
    api_host: str = "127.0.0.1"
    tokens_path: str = "tokens.json"
    audit_log_path: str = "audit.log"
    heartbeat_interval_secs: float = 2.0
    # Cardinality limits: a batch that would create series beyond them is rejected whole
    # (reason `series_limit`, acked `rejected`); 0 = no limit.
    max_series_per_node: int = 10_000
    max_series_per_metric: int = 50_000


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Aggregator storage: DuckDB file, rollups, retention per tier, disk cap, archive, key."""

    db_path: str = "legion.duckdb"
    rollups_enabled: bool = True
    compress_raw: bool = True  # pack settled hours of raw points into per-series chunks (~1 B/pt)
    rollup_interval_ms: int = 5_000
    maintenance_interval_secs: float = 60.0
    maintenance_budget_ms: int = 100
    raw_retention_hours: float = 48.0
    rollup_1m_retention_days: float = 30.0
    rollup_1h_retention_days: float = 400.0
    rollup_1d_retention_days: float = 0.0  # 0 = keep forever
    max_disk_bytes: int = 0  # 0 = no cap; else oldest raw (then 1m, 1h) deleted to stay under
    archive_enabled: bool = False  # export raw to Parquet before retention deletes it
    archive_dir: str = "archive"
    encryption_enabled: bool = False
    encryption_key_path: str = "keys/storage.key"
    encryption_key_env: str = "LEGION_STORAGE_KEY"  # read first; the file is the fallback
    remote_read_url: str | None = None  # Prometheus HTTP API base URL: queries read there when set
    remote_read_headers: dict[str, str] = field(default_factory=dict)  # e.g. X-Scope-OrgID
    remote_read_bearer_token_file: str | None = None
    remote_read_tls_ca_path: str | None = None


@dataclass(frozen=True, slots=True)
class PredictionTarget:
    horizon_hours: float
    alert_threshold: float


def _default_predictions() -> dict[str, PredictionTarget]:
    return {
        "cpu_usage": PredictionTarget(6, 80),
        "memory_usage": PredictionTarget(12, 85),
        "response_time": PredictionTarget(3, 5000),
    }


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    jobs_bind: str = "tcp://127.0.0.1:5558"
    results_bind: str = "tcp://127.0.0.1:5559"
    keys_dir: str = "keys/workers"
    workers: int = 2
    window_size: int = 200
    contamination: float = 0.05
    models_dir: str = "models"
    detector: str = "ensemble"
    node_detector: str = "off"  # or "multivar": one model over each node's host metrics
    anomaly_threshold: float = 0.8
    forecast_interval_secs: float = 60.0
    job_timeout_secs: float = 30.0
    band_days: float = 7.0          # learned normal bands: history per (re)computation
    band_step_secs: float = 60.0    # values are averaged per step before the band is learnt
    prediction_config: dict[str, PredictionTarget] = field(default_factory=_default_predictions)


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
    alerting: Any = field(default_factory=lambda: _alerting({}, []))  # alerts.config.AlertingConfig
    base_dir: str = "."

    def path(self, p: str) -> Path:
        """Resolve a configured path against the config file's directory."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (Path(self.base_dir) / q).resolve()

    def endpoint(self, ep: str) -> str:
        """Resolve a ZeroMQ endpoint; relative ipc:// paths are taken from `base_dir`."""
        if ep.startswith("ipc://") and not ep.startswith("ipc:///"):
            return "ipc://" + str(self.path(ep[len("ipc://"):]))
        return ep


# ---- validation rules beyond types: (key path, predicate, message) -------------------------
_POSITIVE = "must be > 0"
_RULES: list[tuple[str, Any, str]] = [
    ("collection_interval", lambda v: v > 0, _POSITIVE),
    *((f"alert_thresholds.{k}", lambda v: 0 <= v <= 100, "must be a percentage (0-100)")
      for k in ("cpu_usage", "memory_usage", "disk_usage", "agent_success_rate")),
    ("alert_thresholds.agent_response_time", lambda v: v > 0, _POSITIVE),
    ("analysis_interval", lambda v: v > 0, _POSITIVE),
    ("ai_settings.model_retrain_interval", lambda v: v > 0, _POSITIVE),
    ("dashboard_config.websocket_port", lambda v: 0 <= v <= 65535, "must be a port (0-65535)"),
    ("dashboard_config.update_interval_ms", lambda v: v >= 50, "must be >= 50"),
    ("dashboard_config.max_history_points", lambda v: v >= 1, _POSITIVE),
    ("dashboard_config.max_ws_clients", lambda v: v >= 1, _POSITIVE),
    ("agent.spool_max_bytes", lambda v: v >= 64 * 1024, "must be >= 64 KiB"),
    ("agent.spool_sync_interval_ms", lambda v: v >= 0, "must be >= 0"),
    ("agent.resend_timeout_secs", lambda v: v > 0, _POSITIVE),
    ("agent", lambda v: len(v.get("aggregator_endpoints") or ()) == len(
        v.get("ack_endpoints") or ()), "aggregator_endpoints and ack_endpoints need one entry "
     "each per aggregator"),
    ("agent.failover_after_secs", lambda v: v > 0, _POSITIVE),
    ("agent.failback_probe_secs", lambda v: v > 0, _POSITIVE),
    ("agent.heartbeat_interval_secs", lambda v: 0.1 <= v <= 600, "must be in [0.1, 600]"),
    ("aggregator.heartbeat_interval_secs", lambda v: 0.1 <= v <= 600, "must be in [0.1, 600]"),
    ("aggregator.max_message_bytes", lambda v: v >= 65536,  # the largest sample fits
     "must be >= 65536"),
    ("aggregator.queue_max_batches", lambda v: v >= 1, _POSITIVE),
    ("aggregator.commit_interval_ms", lambda v: v >= 1, _POSITIVE),
    ("aggregator.commit_max_points", lambda v: v >= 1, _POSITIVE),
    ("aggregator.max_series_per_node", lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
    ("aggregator.max_series_per_metric", lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
    ("analytics.workers", lambda v: v >= 0, "must be >= 0"),
    ("analytics.window_size", lambda v: v >= 10, "must be >= 10"),
    ("analytics.contamination", lambda v: 0 < v < 0.5, "must be in (0, 0.5)"),
    ("analytics.anomaly_threshold", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("analytics.forecast_interval_secs", lambda v: v > 0, _POSITIVE),
    ("analytics.job_timeout_secs", lambda v: v > 0, _POSITIVE),
    ("analytics.node_detector", lambda v: v in ("off", "multivar"),
     "must be 'off' or 'multivar'"),
    ("analytics.band_days", lambda v: v > 0, _POSITIVE),
    ("analytics.band_step_secs", lambda v: v >= 1, "must be >= 1"),
    ("storage.remote_read_url", lambda v: v.startswith(("http://", "https://")),
     "must be an http:// or https:// URL"),
]


def load_config(path: str | Path) -> Config:
    """Read, validate and freeze a config file; raise `ConfigError` listing every problem."""
    p = Path(path).expanduser().resolve()
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found (create one with `legionctl init --dir DIR`)"]
                          ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError([f"{p}: {exc}"]) from exc
    return config_from_dict(raw, base_dir=p.parent)


def config_from_dict(raw: Any, base_dir: str | Path = ".") -> Config:
    """Build a `Config` from parsed JSON; raise `ConfigError` listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a JSON object"])
    raw = dict(raw)
    raw.pop("base_dir", None)
    alerting_raw = raw.pop("alerting", None)
    values = _build(Config, raw, "", problems)
    values["alerting"] = _alerting(alerting_raw, problems)
    for key, ok, msg in _RULES:
        v: Any = values
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else getattr(v, part, None)
        if v is not None and not ok(v):
            problems.append(f"{key}: {msg} (got {v!r})")
    problems += sinks_problems(values.get("sinks"))
    if problems:
        raise ConfigError(problems)
    return _freeze(Config, values, str(Path(base_dir).resolve()))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The JSON form of a config (what `init` writes), without `base_dir`."""
    out = _plain(cfg)
    out.pop("base_dir", None)
    from legion.aggregator.alerts.config import alerting_to_dict

    out["alerting"] = alerting_to_dict(cfg.alerting)
    return out


def _alerting(raw: Any, problems: list[str]) -> Any:
    """The `alerting` section: the alerting component owns its dataclasses and validation."""
    from legion.aggregator.alerts.config import parse_alerting

    return parse_alerting(raw, problems)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type, raw: dict[str, Any], prefix: str, problems: list[str]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {"base_dir"}
    for key in raw:
        if key not in names:
            problems.append(f"{prefix}{key}: unknown key")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            out[f.name] = _coerce(hints[f.name], raw[f.name], f"{prefix}{f.name}", problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix}{f.name}: missing required key")
    return out


def _coerce(tp: Any, val: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):  # `X | None`: null means "not set"
        return None if val is None else _coerce(typing.get_args(tp)[0], val, path, problems)
    if dataclasses.is_dataclass(tp):
        if not isinstance(val, dict):
            problems.append(f"{path}: must be an object")
            return None
        return _build(tp, val, path + ".", problems)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        if not isinstance(val, list):
            problems.append(f"{path}: must be a list of objects")
            return None
        return [_coerce(typing.get_args(tp)[0], v, f"{path}[{i}]", problems)
                for i, v in enumerate(val)]
    if origin is tuple:
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            problems.append(f"{path}: must be a list of strings")
            return None
        return tuple(val)
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(val, dict):
            problems.append(f"{path}: must be an object")
            return None
        return {k: _coerce(vt, v, f"{path}.{k}", problems) for k, v in val.items()}
    if tp is bool:
        if not isinstance(val, bool):
            problems.append(f"{path}: must be true or false (got {val!r})")
        return val
    if tp is float:
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            problems.append(f"{path}: must be a number (got {val!r})")
            return None
        return float(val)
    if tp is int:
        if isinstance(val, bool) or not isinstance(val, int):
            problems.append(f"{path}: must be an integer (got {val!r})")
            return None
        return val
    if tp is str:
        if not isinstance(val, str) or not val:
            problems.append(f"{path}: must be a non-empty string (got {val!r})")
            return None
        return val
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # pragma: no cover


def _freeze(cls: type, values: dict[str, Any], base_dir: str | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, val in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            val = _freeze(tp, val)
        elif typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            val = tuple(_freeze(typing.get_args(tp)[0], v) for v in val)
        elif typing.get_origin(tp) is dict:
            _, vt = typing.get_args(tp)
            if dataclasses.is_dataclass(vt):
                val = {k: _freeze(vt, v) for k, v in val.items()}
            val = types.MappingProxyType(dict(val))
        kwargs[name] = val
    if base_dir is not None:
        kwargs["base_dir"] = base_dir
    return cls(**kwargs)
