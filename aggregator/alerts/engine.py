"""`AlertEngine`: evaluates the rules every round, keeps the lifecycle, routes notifications,
answers the gateway (the `AlertActions` seam) and the CLI. One thread; `start()`/`stop()`
idempotent; `evaluate_once(now_ms)` is the whole round, callable with an injected clock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from legion.aggregator.alerts import severity
from legion.aggregator.alerts.config import load_rules_file
from legion.aggregator.alerts.dispatch import Dispatcher
from legion.aggregator.alerts.evaluate import Evaluator, Inputs
from legion.aggregator.alerts.journal import Journal
from legion.aggregator.alerts.lifecycle import Lifecycle
from legion.aggregator.alerts.matchers import parse_matcher, parse_matchers
from legion.aggregator.alerts.notifiers import Notification
from legion.aggregator.alerts.router import Router, digest
from legion.aggregator.alerts.rules import SEVERITY_RANK, AlertRule, default_rules
from legion.aggregator.analytics_bridge.bucketed import score_lag_ms
from legion.aggregator.config import AggregatorSettings
from legion.kernel.errors import ConfigError
from legion.proto import Sample, canonical_labels

log = logging.getLogger("legion.aggregator.alerts")
_SAVED_SKIP = ("value", "details", "annotations", "last_breach_ms", "silenced_by",
               "inhibited_by")


def wall_ms() -> int:
    """The real clock in ms."""
    return int(time.time() * 1000)


class AlertEngine(threading.Thread):
    """The alerting engine of one aggregator."""

    def __init__(self, config: AggregatorSettings, store: Any, *, bands: Any | None = None,
                 forecasts: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
                 clock_ms: Callable[[], int] = wall_ms, external_url: str = "") -> None:
        super().__init__(name="legion-alerts", daemon=True)
        self.config = config
        self.cfg = config.alerting
        self.store = store
        self.bands = bands
        self.forecasts = forecasts
        self.clock_ms = clock_ms
        self.interval_s = self.cfg.evaluation_interval_secs or config.analysis_interval
        self.journal = Journal(store)
        self.evaluator = Evaluator(config.collection_interval, config.agent_heartbeat_secs,
                                   score_lag_ms=score_lag_ms(config.analytics.detect_step_secs))
        self.lifecycle = Lifecycle(self.cfg.flap_window_secs, self.cfg.flap_threshold,
                                   self._past_firings)
        self.dispatcher = Dispatcher(self.cfg.receivers, self.journal.attempt,
                                     self._delivered, clock_ms)
        self.router = Router(self.cfg, self.dispatcher.send, self.journal, external_url)
        self._lock = threading.RLock()
        self._stop_evt = threading.Event()
        self._saved: dict[str, str] = {}
        self._files: dict[str, tuple[float, tuple[AlertRule, ...]]] = {}
        self.rule_errors: dict[str, list[str]] = {}
        self.stats: dict[str, float] = {"rounds": 0, "rules_evaluated": 0,
                                        "evaluation_seconds": 0.0, "round_errors": 0,
                                        "last_round_seconds": 0.0}
        self._loaded = False
        # Configured and default rules depend on the (frozen) config only: built once, not
        # every round (0.5 ms of a 2.8 ms round at one agent; issue 17).
        rules = list(self.cfg.rules)
        if self.cfg.default_rules:
            mine = {r.rule_id for r in rules}
            rules += [r for r in default_rules(self.config.alert_thresholds,
                                               self.config.collection_interval)
                      if r.rule_id not in mine]
        self._config_rules = tuple(rules)
        # The journal's silences, re-read only after this engine (their only writer) changed
        # them: a round reads no table when nothing changed (issue 17). (generation, rows)
        self._silence_gen = 0
        self._silence_rows: tuple[int, list[dict[str, Any]]] | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def load(self) -> None:
        """Restore alerts, notification log and open incidents from the journal (idempotent)."""
        if self._loaded:
            return
        docs = self.journal.load_alerts()
        self.lifecycle.load(docs)
        self._saved = {d["fingerprint"]: self._key(d) for d in docs}
        self.router.load(self.journal.nflog(), self.journal.incidents(open_only=True))
        self._loaded = True

    def start(self) -> None:
        """Load state, start the receivers and the evaluation thread (idempotent)."""
        if self.ident is not None:
            return
        self.load()
        self.dispatcher.start()
        super().start()

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval_s):
            try:
                self.evaluate_once()
            except Exception as exc:  # never crash after start-up; count, log rate-limited
                self.stats["round_errors"] += 1
                if self.stats["round_errors"] in (1, 10, 100) or \
                        self.stats["round_errors"] % 1000 == 0:
                    log.error("event=alert_round_failed errors=%d error=%r",
                              self.stats["round_errors"], exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop evaluating and delivering (safe before start, safe twice)."""
        self._stop_evt.set()
        if self.ident is not None and self is not threading.current_thread():
            self.join(timeout)
        self.dispatcher.stop(timeout)

    # ---- rules ------------------------------------------------------------------------------
    def rules(self) -> tuple[AlertRule, ...]:
        """Configured rules, the defaults, and the rules files (reloaded when they change)."""
        out = list(self._config_rules)
        for f in self.cfg.rules_files:
            out += self._file_rules(f)
        return tuple(out)

    def _file_rules(self, path: str) -> tuple[AlertRule, ...]:
        try:
            mtime = Path(path).stat().st_mtime
        except OSError as exc:
            self.rule_errors[path] = [f"{path}: {exc}"]
            return self._files.get(path, (0.0, ()))[1]
        cached = self._files.get(path)
        if cached is None or cached[0] != mtime:
            try:
                rules = load_rules_file(Path(path))
                self._files[path] = (mtime, rules)
                self.rule_errors.pop(path, None)
                log.info("event=rules_loaded path=%s rules=%d", path, len(rules))
            except ConfigError as exc:  # keep the last good rules; say why
                self.rule_errors[path] = list(exc.problems) if hasattr(exc, "problems") \
                    else [str(exc)]
                self._files[path] = (mtime, cached[1] if cached else ())
                log.error("event=rules_file_invalid path=%s error=%s", path, exc)
        return self._files[path][1]

    def _past_firings(self, alert_id: str, now_ms: int) -> tuple[int, int]:
        """(firings, self-resolved firings) of an alert in the last `severity_history_secs`."""
        return self.journal.firing_history(alert_id,
                                           now_ms - int(self.cfg.severity_history_secs * 1000))

    # ---- one round --------------------------------------------------------------------------
    def evaluate_once(self, now_ms: int | None = None) -> dict[str, Any]:
        """Evaluate every rule, advance the lifecycle, route and notify; returns counts."""
        t0 = time.perf_counter()
        now = self.clock_ms() if now_ms is None else now_ms
        self.load()
        rules = self.rules()
        inp = Inputs(now, self.store.latest("*"), self.store.nodes(),
                     list(self.forecasts()) if self.forecasts else [],
                     self.bands.band_for if self.bands is not None else None,
                     int(self.cfg.min_band_history_secs * 1000))
        with self._lock:
            obs = self.evaluator.evaluate(rules, inp, self.lifecycle.is_active)
            changed, events = self.lifecycle.step(obs, now)
            if self.cfg.ai_severity:
                severity.assess(self.lifecycle.alerts.values())
            self.router.route(self._notifiable(), self._active_silences(now), now)
            docs = list(changed) + [d for fp, d in self.lifecycle.alerts.items()
                                    if self._saved.get(fp) != self._key(d)]
            self.journal.save_alerts({d["fingerprint"]: d for d in docs}.values(), events, now)
            for d in docs:
                if d["state"] == "inactive":
                    self._saved.pop(d["fingerprint"], None)
                else:
                    self._saved[d["fingerprint"]] = self._key(d)
        took = time.perf_counter() - t0
        self.stats["rounds"] += 1
        self.stats["rules_evaluated"] += len(rules)
        self.stats["evaluation_seconds"] += took
        self.stats["last_round_seconds"] = took
        return {"observations": len(obs), "transitions": len(events), "seconds": took}

    def _notifiable(self) -> dict[str, dict[str, Any]]:
        """Alerts the router may notify: AI-lowered quiet ones are listed only."""
        out = {}
        for fp, a in self.lifecycle.alerts.items():
            if self.cfg.ai_severity and a["state"] == "firing" and a["severity"] in severity.QUIET \
                    and a["base_severity"] not in severity.QUIET:
                a["held_by_ai"] = True
                continue
            a.pop("held_by_ai", None)
            out[fp] = a
        return out

    @staticmethod
    def _key(d: Mapping[str, Any]) -> str:
        return json.dumps({k: v for k, v in d.items() if k not in _SAVED_SKIP},
                          sort_keys=True, default=str)

    def _delivered(self, n: Notification) -> None:
        if n.kind in ("flapping", "refresh"):
            return
        steady = [a["fingerprint"] for a in n.alerts if a.get("state") == "firing"
                  and not a.get("flapping")]
        self.journal.notified(n.group_key, n.receiver, digest(steady), self.clock_ms(),
                              n.status == "resolved")

    # ---- silences ---------------------------------------------------------------------------
    def _active_silences(self, now: int) -> list[tuple[str, list[Any]]]:
        return [(s["id"], list(parse_matchers(s["matchers"]))) for s in self._all_silences()
                if s["expired_ms"] is None and s["starts_ms"] <= now < s["ends_ms"]]

    def _silences_changed(self) -> None:
        with self._lock:  # gateway threads may add at once: no lost increment
            self._silence_gen += 1

    def _all_silences(self) -> list[dict[str, Any]]:
        """Every silence (the journal's rows, cached until add/expire bumps the generation)."""
        gen, cached = self._silence_gen, self._silence_rows
        if cached is None or cached[0] != gen:
            cached = self._silence_rows = (gen, self.journal.silences())
        return cached[1]

    def add_silence(self, matchers: list[str], duration_s: float, comment: str,
                    user: str) -> dict[str, Any]:
        """Create a silence from matcher strings (`k=v`, `k!=v`, `k=~re`, `k!~re`)."""
        parsed = parse_matchers(matchers)  # ValueError on a bad one
        if not parsed:
            raise ValueError("a silence needs at least one matcher")
        now = self.clock_ms()
        s = {"id": uuid.uuid4().hex[:12], "matchers": [str(m) for m in parsed],
             "starts_ms": now, "ends_ms": now + int(duration_s * 1000), "comment": comment,
             "created_by": user, "expired_ms": None}
        self.journal.add_silence(s)
        self._silences_changed()
        return s

    def silence(self, matchers: dict[str, str], duration_s: float, comment: str,
                user: str) -> dict[str, Any]:
        """AlertActions: a silence of equality matchers."""
        return self.add_silence([str(parse_matcher(f"{k}={v}")) for k, v in matchers.items()],
                                duration_s, comment, user)

    def expire_silence(self, silence_id: str) -> bool:
        """End a silence now; False when unknown or already over."""
        ended = self.journal.expire_silence(silence_id, self.clock_ms())
        self._silences_changed()
        return ended

    def silences(self) -> list[dict[str, Any]]:
        """Every silence with its status (active, expired, pending)."""
        now = self.clock_ms()
        out = []
        for s in self._all_silences():
            st = "expired" if s["expired_ms"] is not None or s["ends_ms"] <= now else \
                ("active" if s["starts_ms"] <= now else "pending")
            out.append({**s, "status": st})
        return out

    # ---- acknowledgement and listings -------------------------------------------------------
    def ack(self, alert_id: str, user: str) -> dict[str, Any]:
        """AlertActions: acknowledge a pending/firing alert (stops repeats and escalation)."""
        with self._lock:
            a = next((d for d in self.lifecycle.alerts.values() if d["id"] == alert_id
                      and d["state"] in ("pending", "firing")), None)
            if a is None:
                raise KeyError(alert_id)
            a["acked_by"], a["acked_ms"] = user, self.clock_ms()
            self.journal.save_alerts([a], [(a["acked_ms"], a["id"], a["rule_id"], a["state"],
                                            "acknowledged", a.get("value"), a["labels"])],
                                     a["acked_ms"])
            self._saved[a["fingerprint"]] = self._key(a)
            return self._view(a)

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Alerts (all, or of one state) as the API lists them, most urgent first."""
        with self._lock:
            items = [self._view(a) for a in self.lifecycle.alerts.values()
                     if state is None or a["state"] == state]
        return sorted(items, key=lambda a: (-SEVERITY_RANK.get(a["severity"], 0),
                                            a["since_ms"]))

    def dashboard_alerts(self) -> list[dict[str, Any]]:
        """The hub's `alerts` source: pending and firing alerts."""
        return [a for a in self.alerts() if a["state"] in ("pending", "firing")]

    @staticmethod
    def _view(a: Mapping[str, Any]) -> dict[str, Any]:
        lb = a["labels"]
        ann = a.get("annotations", {})
        det = a.get("details", {})
        entity = {"agent_id": lb["agent_id"]} if lb.get("agent_id") else {"node": lb.get("node")}
        return {"id": a["id"], "kind": a.get("threshold_type", "static"),
                "rule_id": a["rule_id"], "state": a["state"], "severity": a["severity"],
                "base_severity": a["base_severity"], "labels": dict(lb), "entity": entity,
                "node": lb.get("node"), "agent_id": lb.get("agent_id"),
                "metric": lb.get("metric"), "value": a.get("value"),
                "threshold": det.get("threshold"), "summary": ann.get("summary", ""),
                "annotations": dict(ann), "since_ms": a.get("fired_ms") or a["active_since_ms"],
                "active_since_ms": a["active_since_ms"], "fired_ms": a.get("fired_ms"),
                "resolved_ms": a.get("resolved_ms"), "acknowledged": bool(a.get("acked_by")),
                "acked_by": a.get("acked_by"), "silenced_by": a.get("silenced_by"),
                "inhibited_by": a.get("inhibited_by"), "flapping": a.get("flapping", False),
                "incident_id": a.get("incident_id"), "escalated": a.get("escalated", 0),
                "held_by_ai": a.get("held_by_ai", False)}

    def rules_list(self) -> list[dict[str, Any]]:
        """Every rule in effect with its source."""
        conf = {r.rule_id for r in self.cfg.rules}
        defaults = {r.rule_id for r in default_rules(self.config.alert_thresholds,
                                                      self.config.collection_interval)}
        out = []
        for r in self.rules():
            d = r.to_dict()
            d["source"] = "config" if r.rule_id in conf else \
                ("default" if self.cfg.default_rules and r.rule_id in defaults else "file")
            out.append(d)
        return out

    def history(self, since_ms: int | None = None, alert_id: str | None = None
                ) -> list[dict[str, Any]]:
        """Transitions, newest first."""
        return self.journal.events(since_ms, alert_id)

    def incidents(self) -> list[dict[str, Any]]:
        """Incidents, newest first."""
        return self.journal.incidents()

    # ---- self-metrics -----------------------------------------------------------------------
    def samples(self, ts_ms: int) -> list[Sample]:
        """`legion_alerts_*` self-metrics for /metrics."""
        out = [Sample("legion_alerts_rules_evaluated_total", (), float(
            self.stats["rules_evaluated"]), ts_ms),
            Sample("legion_alerts_evaluation_seconds_total", (), float(
                self.stats["evaluation_seconds"]), ts_ms),
            Sample("legion_alerts_last_evaluation_seconds", (), float(
                self.stats["last_round_seconds"]), ts_ms),
            Sample("legion_alerts_round_errors_total", (), float(self.stats["round_errors"]),
                   ts_ms)]
        with self._lock:
            states = self.lifecycle.by_state()
        for st in ("pending", "firing", "resolved"):
            out.append(Sample("legion_alerts_alerts", canonical_labels({"state": st}),
                              float(states.get(st, 0)), ts_ms))
        for name, s in self.dispatcher.stats().items():
            lb = {"receiver": name}
            out.append(Sample("legion_alerts_notifications_sent_total", canonical_labels(lb),
                              float(s["sent"]), ts_ms))
            out.append(Sample("legion_alerts_notifications_failed_total", canonical_labels(lb),
                              float(s["failed"] + s["dropped"]), ts_ms))
            out.append(Sample("legion_alerts_receiver_circuit_open", canonical_labels(lb),
                              float(s["breaker"] == "open"), ts_ms))
        return out

    def status(self) -> dict[str, Any]:
        """Counters for /api/v1/status."""
        with self._lock:
            states = self.lifecycle.by_state()
        return {**self.stats, "alerts": states, "receivers": self.dispatcher.stats(),
                "router": dict(self.router.counts), "rule_errors": dict(self.rule_errors)}

