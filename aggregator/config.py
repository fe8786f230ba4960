"""The aggregator's configuration: its sections and the view of the file the service is handed.

Sections owned here: `aggregator` (sockets, allowlist, ingest queue, API), `storage` (the DuckDB
store), and the seed's `dashboard_config`, `security` and `alert_thresholds`. The `alerting` and
`sinks` sections live with their packages (alerts/config.py, sinks/config.py); the analytics
bridge reads `analytics` and `ai_settings` (analytics/config.py). `AggregatorSettings` is what the
service is handed: the sections it reads, every path and endpoint already resolved by the kernel's
one rule (the glue builds it: legion/cli/config.py `Config.aggregator_settings()`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from legion.kernel.config import POSITIVE, Rule, check_rules, resolve_endpoint, resolve_path

if TYPE_CHECKING:
    from legion.aggregator.alerts.config import AlertingConfig
    from legion.aggregator.sinks.config import SinksConfig
    from legion.analytics.config import AISettings, AnalyticsConfig

_PERCENT = "must be a percentage (0-100)"


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """The seed's static thresholds (percentages, response time in ms)."""

    cpu_usage: float = 80.0
    memory_usage: float = 85.0
    disk_usage: float = 90.0
    agent_response_time: float = 5000.0
    agent_success_rate: float = 85.0

    def validate(self) -> list[str]:
        """Every problem of the section, with its key path."""
        return check_rules(self, "alert_thresholds", [
            *((k, lambda v: 0 <= v <= 100, _PERCENT)
              for k in ("cpu_usage", "memory_usage", "disk_usage", "agent_success_rate")),
            ("agent_response_time", lambda v: v > 0, POSITIVE)])


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The seed's dashboard settings: the gateway's port and live-update pacing."""

    websocket_port: int = 8765
    update_interval_ms: int = 1000
    max_history_points: int = 1000
    max_ws_clients: int = 64

    def validate(self) -> list[str]:
        """Every problem of the section, with its key path."""
        return check_rules(self, "dashboard_config", [
            ("websocket_port", lambda v: 0 <= v <= 65535, "must be a port (0-65535)"),
            ("update_interval_ms", lambda v: v >= 50, "must be >= 50"),
            ("max_history_points", lambda v: v >= 1, POSITIVE),
            ("max_ws_clients", lambda v: v >= 1, POSITIVE)])


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The seed's gateway TLS settings and allowed browser origins."""

    enable_tls: bool = True
    certificate_path: str = "./certs/server.crt"
    private_key_path: str = "./certs/server.key"
    allowed_origins: tuple[str, ...] = ("tauri://localhost",)

    def validate(self) -> list[str]:
        """No checks beyond the types."""
        return []

    def resolved(self, base_dir: str | Path) -> SecurityConfig:
        """This section with the TLS certificate and key paths resolved against `base_dir`."""
        return dataclasses.replace(
            self, certificate_path=str(resolve_path(base_dir, self.certificate_path)),
            private_key_path=str(resolve_path(base_dir, self.private_key_path)))


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
    # At low rates a group waits up to this long after its first batch so that several batches
    # (and the self-metrics) share one commit; 0 = commit each group at once (docs/internals.md).
    commit_max_delay_ms: int = 3_000
    api_host: str = "127.0.0.1"
    tokens_path: str = "tokens.json"
    audit_log_path: str = "audit.log"
    heartbeat_interval_secs: float = 2.0
    # Cardinality limits: a batch that would create series beyond them is rejected whole
    # (reason `series_limit`, acked `rejected`); 0 = no limit.
    max_series_per_node: int = 10_000
    max_series_per_metric: int = 50_000
    event_loop: str = "uvloop"  # or "asyncio"; uvloop falls back to asyncio if not importable

    def validate(self) -> list[str]:
        """Every problem of the section, with its key path."""
        return check_rules(self, "aggregator", [
            ("heartbeat_interval_secs", lambda v: 0.1 <= v <= 600, "must be in [0.1, 600]"),
            ("max_message_bytes", lambda v: v >= 65536,  # the largest sample fits
             "must be >= 65536"),
            ("queue_max_batches", lambda v: v >= 1, POSITIVE),
            ("commit_interval_ms", lambda v: v >= 1, POSITIVE),
            ("commit_max_points", lambda v: v >= 1, POSITIVE),
            ("commit_max_delay_ms", lambda v: 0 <= v <= 60_000, "must be in [0, 60000]"),
            ("max_series_per_node", lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
            ("max_series_per_metric", lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
            ("event_loop", lambda v: v in ("uvloop", "asyncio"),
             "must be 'uvloop' or 'asyncio'")])

    def resolved(self, base_dir: str | Path) -> AggregatorConfig:
        """This section with its endpoints (ipc://) and files resolved against `base_dir`."""
        def path(p: str) -> str:
            return str(resolve_path(base_dir, p))
        return dataclasses.replace(
            self, ingest_bind=resolve_endpoint(base_dir, self.ingest_bind),
            ack_bind=resolve_endpoint(base_dir, self.ack_bind),
            secret_key_path=path(self.secret_key_path),
            authorized_keys_dir=path(self.authorized_keys_dir),
            tokens_path=path(self.tokens_path), audit_log_path=path(self.audit_log_path))


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
    query_head_mib: int = 64  # recent rollup minutes kept in memory for queries; 0 = off
    query_head_hours: float = 24.0  # and at most this many hours of them; 0 = only the MiB bound

    def validate(self) -> list[str]:
        """Every problem of the section, with its key path (retention tiers checked together)."""
        problems = check_rules(self, "storage", _STORAGE_RULES)
        keep = [self.raw_retention_hours, self.rollup_1m_retention_days,
                self.rollup_1h_retention_days, self.rollup_1d_retention_days]
        if None in keep:  # a value that failed its type check, listed already
            return problems
        # A tier recomputes its buckets from the tier below, which must still hold them.
        days = [float("inf") if k == 0 else k for k in [keep[0] / 24, *keep[1:]]]
        if days != sorted(days):
            problems.append("storage: retention must not shrink from raw to 1m to 1h to 1d "
                            f"(got {days} days)")
        return problems

    def resolved(self, base_dir: str | Path) -> StorageConfig:
        """This section with its paths resolved against `base_dir` (the one rule)."""
        def path(p: str | None) -> str | None:
            return str(resolve_path(base_dir, p)) if p else p  # unset stays unset
        return dataclasses.replace(
            self, db_path=str(resolve_path(base_dir, self.db_path)),
            archive_dir=str(resolve_path(base_dir, self.archive_dir)),
            encryption_key_path=str(resolve_path(base_dir, self.encryption_key_path)),
            remote_read_bearer_token_file=path(self.remote_read_bearer_token_file),
            remote_read_tls_ca_path=path(self.remote_read_tls_ca_path))


_STORAGE_RULES: list[Rule] = [
    ("rollup_interval_ms", lambda v: v >= 100, "must be >= 100"),
    ("maintenance_interval_secs", lambda v: v > 0, "must be > 0"),
    ("maintenance_budget_ms", lambda v: v >= 10, "must be >= 10"),
    ("raw_retention_hours", lambda v: v >= 0, "must be >= 0 (0 = forever)"),
    ("rollup_1m_retention_days", lambda v: v >= 0, "must be >= 0"),
    ("rollup_1h_retention_days", lambda v: v >= 0, "must be >= 0"),
    ("rollup_1d_retention_days", lambda v: v >= 0, "must be >= 0"),
    ("max_disk_bytes", lambda v: v >= 0, "must be >= 0 (0 = no cap)"),
    ("query_head_mib", lambda v: v >= 0, "must be >= 0 (0 = off)"),
    ("query_head_hours", lambda v: v >= 0, "must be >= 0 (0 = no bound in time)"),
    ("remote_read_url", lambda v: v.startswith(("http://", "https://")),
     "must be an http:// or https:// URL"),
]


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    """What the aggregator service is handed: its sections, every path and endpoint resolved.

    Built once by the glue (`Config.aggregator_settings()`); nothing in the aggregator resolves a
    path again. `agent_heartbeat_secs` is the one `agent` value it reads (node_down's silence).
    """

    collection_interval: float
    analysis_interval: float
    agent_heartbeat_secs: float
    alert_thresholds: AlertThresholds
    ai_settings: AISettings
    dashboard_config: DashboardConfig
    security: SecurityConfig
    aggregator: AggregatorConfig
    storage: StorageConfig
    analytics: AnalyticsConfig
    sinks: SinksConfig
    alerting: AlertingConfig
