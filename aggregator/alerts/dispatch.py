"""Delivery: one thread and one bounded queue per receiver, retries with backoff, and a circuit
breaker per receiver, so a receiver that hangs or fails never delays evaluation or the others.

Every attempt is recorded (`Journal.attempt`); a delivered notification is written to the
notification log by the `on_delivered` callback (the engine's).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from legion.aggregator.alerts.notifiers import NOTIFIERS, Notification, Notifier, NotifyError
from legion.aggregator.alerts.route_config import ReceiverConfig

log = logging.getLogger("legion.aggregator.alerts.dispatch")
QUEUE_MAX = 256


class Breaker:
    """Closed → open after `failures` failed notifications in a row; half-open after `reset_s`
    (one try); a success closes it."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float]) -> None:
        self.failures, self.reset_s, self.clock = failures, reset_s, clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.opened_total = 0

    @property
    def state(self) -> str:
        """closed | open | half_open."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """May a notification be attempted now."""
        return self.state != "open"

    def record(self, ok: bool) -> None:
        """The outcome of one notification (after its retries)."""
        if ok:
            self.consecutive = 0
            self.opened_at = None
            return
        self.consecutive += 1
        if self.opened_at is not None or self.consecutive >= self.failures:
            self.opened_at = self.clock()
            self.opened_total += 1


class ReceiverWorker(threading.Thread):
    """Sends the notifications of one receiver, in order."""

    def __init__(self, cfg: ReceiverConfig, notifier: Notifier,
                 record: Callable[..., None], on_delivered: Callable[[Notification], None],
                 clock_ms: Callable[[], int]) -> None:
        super().__init__(name=f"legion-alerts-{cfg.name}", daemon=True)
        self.cfg, self.notifier = cfg, notifier
        self.record, self.on_delivered, self.clock_ms = record, on_delivered, clock_ms
        self.queue: queue.Queue[Notification | None] = queue.Queue(QUEUE_MAX)
        self.breaker = Breaker(cfg.breaker_failures, cfg.breaker_reset_secs, time.monotonic)
        self.stats = {"sent": 0, "failed": 0, "dropped": 0, "attempts": 0}
        self._halt = threading.Event()

    def offer(self, n: Notification) -> bool:
        """Queue a notification without blocking; False (recorded as dropped) when full."""
        try:
            self.queue.put_nowait(n)
            return True
        except queue.Full:
            self.stats["dropped"] += 1
            self._record(n, 0, "dropped", "queue full")
            return False

    def run(self) -> None:
        while not self._halt.is_set():
            n = self.queue.get()
            if n is None:
                return
            self._deliver(n)

    def _deliver(self, n: Notification) -> None:
        if not self.breaker.allow():
            self.stats["failed"] += 1
            self._record(n, 0, "circuit_open", "circuit open: not attempted")
            return
        tries = 1 if self.breaker.state == "half_open" else self.cfg.max_attempts
        error = ""
        for attempt in range(1, tries + 1):
            self.stats["attempts"] += 1
            try:
                self.notifier.send(n, self.cfg.options, self.cfg.timeout_secs)
            except (NotifyError, OSError) as exc:
                error = str(exc)
                self._record(n, attempt, "failed", error)
                if attempt < tries and self._halt.wait(self.cfg.backoff_secs * 2 ** (attempt - 1)):
                    break
                continue
            except Exception as exc:  # a notifier bug must not kill the thread
                error = f"{type(exc).__name__}: {exc}"
                self._record(n, attempt, "failed", error)
                break
            self._record(n, attempt, "sent", None)
            self.breaker.record(True)
            try:
                self.on_delivered(n)
            except Exception as exc:  # the notification log is best effort after a send
                log.error("event=nflog_write_failed receiver=%s error=%r", self.cfg.name, exc)
            self.stats["sent"] += 1
            return
        self.stats["failed"] += 1
        self.breaker.record(False)
        log.warning("event=notification_failed receiver=%s group=%s error=%s breaker=%s",
                    self.cfg.name, n.group_key, error, self.breaker.state)

    def _record(self, n: Notification, attempt: int, outcome: str, error: str | None) -> None:
        try:
            self.record(self.clock_ms(), self.cfg.name, n.group_key, n.kind, attempt, outcome,
                        error, n.alert_ids)
        except Exception as exc:  # recording must never stop delivery
            log.error("event=attempt_record_failed receiver=%s error=%r", self.cfg.name, exc)

    def stop(self) -> None:
        """Finish the notification in hand, then exit."""
        self._halt.set()
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass


class Dispatcher:
    """The receiver workers; `send` never blocks."""

    def __init__(self, receivers: tuple[ReceiverConfig, ...], record: Callable[..., None],
                 on_delivered: Callable[[Notification], None],
                 clock_ms: Callable[[], int]) -> None:
        self.workers = {r.name: ReceiverWorker(r, NOTIFIERS[r.type](), record, on_delivered,
                                               clock_ms) for r in receivers}

    def start(self) -> None:
        """Start every worker (idempotent)."""
        for w in self.workers.values():
            if not w.is_alive() and w.ident is None:
                w.start()

    def send(self, n: Notification) -> bool:
        """Queue `n` for its receiver; False when unknown or full."""
        w = self.workers.get(n.receiver)
        return w.offer(n) if w is not None else False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers (safe before start)."""
        for w in self.workers.values():
            w.stop()
        for w in self.workers.values():
            if w.ident is not None:
                w.join(timeout)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per receiver: sent, failed, dropped, attempts, breaker state."""
        return {name: {**w.stats, "breaker": w.breaker.state, "queued": w.queue.qsize(),
                       "breaker_opened": w.breaker.opened_total}
                for name, w in self.workers.items()}
