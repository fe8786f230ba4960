"""The aggregator process: one code path wiring store, allowlist, ingest and gateway.

`legionctl aggregator run` and `legionctl demo` both call `run_aggregator`, so the demo runs
exactly what production runs.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import queue
import signal
import time
from pathlib import Path
from typing import Any

import zmq

from legion.aggregator.allowlist import KeyRegistry, start_authenticator
from legion.aggregator.analytics_bridge import WORKER_DOMAIN, AnalyticsBridge, worker_registry
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.event_loop import run as run_loop
from legion.aggregator.ingest import IngestWriter
from legion.aggregator.lean_imports import CLIENT_ONLY, NEVER_USED, keep_out, keep_out_for_good
from legion.aggregator.live_feed import LiveFeed
from legion.aggregator.receiver import Inbound, Receiver
from legion.aggregator.remote_query import query_store
from legion.aggregator.sinks.table import SinkSet, build_sinks
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.telemetry import IngestTelemetry
from legion.kernel.curve import load_secret, require_curve
from legion.kernel.errors import AddressInUse, StoreError, TransportError

log = logging.getLogger("legion.aggregator")

AGENT_HEALTH_KEYS = frozenset({
    "spool_bytes", "spool_records", "unacked_batches", "uncheckpointed_batches",
    "oldest_unacked_age_seconds", "resends_total", "batches_dropped_total",
    "spool_quarantine_events_total"})


def bind_error(key: str, address: str, exc: Exception) -> Exception:
    """The error for a socket that could not bind `address` (config key `key`)."""
    if getattr(exc, "errno", None) == errno.EADDRINUSE:
        return AddressInUse(key, address)
    return TransportError(f"{key}: cannot bind {address}: {exc}")


class Aggregator:
    """Ingest threads plus the store; `start()`/`stop()` are idempotent, stop is safe first."""

    def __init__(self, config: AggregatorSettings) -> None:
        self.config = config
        self.telemetry = IngestTelemetry()
        self.store: Any = None
        self._ctx: zmq.Context[zmq.Socket[Any]] | None = None
        self._auth: Any = None
        self._receiver: Receiver | None = None
        self._writer: IngestWriter | None = None
        self.analytics: AnalyticsBridge | None = None
        self.sinks: SinkSet | None = None
        self.alerts: Any = None  # legion.aggregator.alerts.AlertEngine when alerting.enabled
        self.started_at = time.time()

    def start(self) -> None:
        """Open the store, load the allowlist, bind the sockets and start ingest."""
        if self._ctx is not None:
            return
        require_curve()
        cfg = self.config
        keypair = load_secret(Path(cfg.aggregator.secret_key_path))
        registry = KeyRegistry(Path(cfg.aggregator.authorized_keys_dir),
                               on_denied=self.telemetry.handshake_failed)
        self.store = Store(cfg.storage.db_path, cfg.storage)
        self.store.checkpoint()  # whatever the WAL replayed is now in the main file
        self._ctx = zmq.Context()
        self._auth = start_authenticator(self._ctx, registry)
        inbox: queue.Queue[Inbound] = queue.Queue(maxsize=cfg.aggregator.queue_max_batches)
        # The writer writes through the Sink seam: the store first, then every configured sink.
        self.sinks = build_sinks(cfg, self.store)
        self.sinks.start()
        self.telemetry.extra_samples.append(self.sinks.samples)
        self._writer = IngestWriter(self._ctx, cfg, keypair, registry, inbox,
                              self.sinks,  # type: ignore[arg-type]
                              self.telemetry)
        self._receiver = Receiver(self._ctx, cfg, keypair, registry, inbox, self.telemetry,
                                  accept=self._writer.acceptor.accept)
        for t, key in ((self._writer, "aggregator.ack_bind"),
                       (self._receiver, "aggregator.ingest_bind")):
            t.start()
            t.ready.wait(10)
            if t.bind_error is not None:
                self.stop()
                raise bind_error(key, getattr(cfg.aggregator, key.split(".")[1]), t.bind_error)
        self.registry = registry
        self._inbox = inbox
        self.analytics = self._start_analytics(keypair)
        self.alerts = self._start_alerts()

    def _start_alerts(self) -> Any:
        if not self.config.alerting.enabled:
            log.info("event=alerting_off reason=disabled_in_config")
            return None
        from legion.aggregator.alerts.engine import AlertEngine

        a = self.analytics
        engine = AlertEngine(self.config, self.store, bands=a.bands if a else None,
                             forecasts=a.forecasts if a else None)
        engine.start()
        return engine

    def _start_analytics(self, keypair: tuple[bytes, bytes]) -> AnalyticsBridge | None:
        ai = self.config.ai_settings
        if not (ai.anomaly_detection_enabled or ai.predictive_analytics_enabled
                or ai.ml_threshold_adjustment):
            log.info("event=analytics_off reason=disabled_in_ai_settings")
            return None
        workers = worker_registry(self.config)
        if workers is None:
            return None
        assert self._auth is not None and self._ctx is not None
        self._auth.configure_curve_callback(domain=WORKER_DOMAIN.decode(),
                                            credentials_provider=workers)
        d = AnalyticsBridge(self._ctx, self.config, keypair, self.store, self._submit_internal)
        d.start()
        d.ready.wait(10)
        if d.bind_error is not None:
            log.warning("event=analytics_bind_failed keys=analytics.jobs_bind,"
                        "analytics.results_bind error=%s", d.bind_error)
            return None
        return d

    def _submit_internal(self, batch: IncomingBatch) -> None:
        try:
            self._inbox.put(batch, timeout=5)
        except queue.Full:
            log.warning("event=analytics_result_dropped reason=ingest_queue_full")

    def sources(self) -> dict[str, Any]:
        """Live analytics lists for the gateway (anomalies, forecasts)."""
        d = self.analytics
        out: dict[str, Any] = {} if d is None else {"anomalies": d.recent_anomalies,
                                                     "forecasts": d.forecasts}
        if self.alerts is not None:
            out["alerts"] = self.alerts.dashboard_alerts
        return out

    def status(self) -> dict[str, Any]:
        """Ingest counters and uptime, for the API's status route and `legionctl status`."""
        out: dict[str, Any] = {"uptime_seconds": round(time.time() - self.started_at, 1)}
        out["ingest"] = self.telemetry.snapshot()
        if self.store is not None:
            out["store"] = self.store.health.report(self.store.path)
        if self._writer is not None:
            out["limits"] = {**self._writer.limits.report(), **self._writer.budget.report()}
        try:
            out["agents"] = self._agent_health()
        except StoreError as exc:  # an invalidated store: say so rather than answer 500
            out["agents"] = {}
            out["agents_error"] = str(exc).splitlines()[0]
        if self.analytics is not None:
            out["analytics"] = self.analytics.stats()
        if self.sinks is not None and self.sinks.sinks:
            out["sinks"] = self.sinks.status()
        if self.alerts is not None:
            out["alerting"] = self.alerts.status()
        return out

    @property
    def live_feed(self) -> LiveFeed | None:
        """Agents' batches as ingest accepts them (the gateway's live stream), once started."""
        return None if self._writer is None else self._writer.live

    def samples(self, ts_ms: int) -> list[Any]:
        """Ingest and alerting self-metrics for /metrics."""
        out = list(self.telemetry.samples(ts_ms))
        if self.alerts is not None:
            out += self.alerts.samples(ts_ms)
        return out

    def _agent_health(self) -> dict[str, dict[str, float]]:
        """Each node agent's latest delivery self-metrics (spool, unacked, resends, dropped)."""
        if self.store is None:
            return {}
        agents: dict[str, dict[str, float]] = {}
        for row in self.store.latest("legion_agent_*"):
            key = row["metric"].removeprefix("legion_agent_")
            if key in AGENT_HEALTH_KEYS and not row["labels"]:
                agents.setdefault(row["node"], {})[key] = row["value"]
        return agents

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, let the writer commit and checkpoint, close everything."""
        if self.alerts is not None:
            self.alerts.stop(timeout)
            self.alerts = None
        if self.analytics is not None:
            self.analytics.stop()
            self.analytics.join(timeout)
        for t in (self._receiver, self._writer):
            if t is not None:
                t.stop()
                if t.ident is not None:  # a thread never started (a bind failed first)
                    t.join(timeout)
        if self.sinks is not None:
            self.sinks.stop(timeout)
            self.sinks = None
        if self._auth is not None:
            self._auth.stop()
        if self.store is not None:
            self.store.close()
        if self._ctx is not None:
            self._ctx.term()
        self._receiver = self._writer = self._auth = self.store = self._ctx = None
        self.analytics = None


async def _serve(agg: Aggregator, stop: asyncio.Event) -> None:
    with keep_out(CLIENT_ONLY):  # Socket.IO's client side is never used here: lean_imports.py
        from legion.aggregator.gateway.app import create_app, start_gateway, stop_gateway
    from legion.aggregator.gateway.tokens import TokenStore

    cfg = agg.config
    tokens = TokenStore(Path(cfg.aggregator.tokens_path))
    store = query_store(cfg, agg.store)  # remote reads when storage.remote_read_url is set
    app = create_app(cfg, store, agg.status, tokens, telemetry=agg,
                     sources=agg.sources(), alert_actions=agg.alerts,
                     analytics_retrain=agg.analytics.request_retrain if agg.analytics else None,
                     bands=agg.analytics.bands if agg.analytics else None,
                     live_feed=agg.live_feed)
    runner = await start_gateway(app, cfg)
    # Everything made so far lives as long as the process: full GC passes skip it from now
    # on (a pass over the start-up heap took 70-80 ms, the live stream's p99; docs/peers.md).
    gc.freeze()
    # Then fewer, not longer, passes: a young pass per 5,000 new objects (not 700: ~6 a second
    # at 200 hosts), a full pass per 50 middle ones (not 10: one every ~20 s, 4-30 ms each,
    # landed in the live stream's bursts). docs/peers.md, "End to end, CPU on the path".
    gc.set_threshold(5_000, 10, 50)
    scheme = "https" if cfg.security.enable_tls else "http"
    log.info("event=started ingest=%s acks=%s api=%s://%s:%d db=%s",
             cfg.aggregator.ingest_bind, cfg.aggregator.ack_bind, scheme,
             cfg.aggregator.api_host, cfg.dashboard_config.websocket_port, cfg.storage.db_path)
    try:
        await stop.wait()
    finally:
        await stop_gateway(runner)


def run_aggregator(config: AggregatorSettings) -> None:
    """Run the aggregator in the foreground until SIGINT/SIGTERM."""
    # No MALLOC_ARENA_MAX and no DuckDB memory/thread settings: measured at one agent, neither
    # moved RSS or CPU (docs/peers.md, bench/results/idle_cost.txt), so none is imposed.
    keep_out_for_good(NEVER_USED)  # DuckDB 1.5 would load pandas + pyarrow: lean_imports.py
    agg = Aggregator(config)
    agg.start()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _serve(agg, stop)

    try:
        run_loop(main(), config.aggregator.event_loop)  # uvloop by default: event_loop.py
    finally:
        agg.stop()
        log.info("event=stopped")
