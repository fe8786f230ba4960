"""The collection scheduler: ticks on a fixed grid, runs every collector, accounts for failures.

Tick k is due at `start + k * interval` on the monotonic clock, so time spent collecting never
accumulates into drift. A tick that is already past when the previous one finishes is skipped
(counted in `legion_agent_ticks_skipped_total`) rather than run late, so a host too busy to keep
up sends fewer batches instead of a burst. Every sample of one tick carries the same timestamp.

Each collector call is wrapped: its duration, successes and errors (by exception class name, a
bounded set) become self-metric samples appended to every tick. A raising collector never stops
the others, and a raising `on_tick` never stops the loop.

Example::

    sched = Scheduler(available_collectors(), 1.0, on_tick=sender.send)
    sched.start()
    ...
    sched.stop(timeout=2.0)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from legion.node_agent.collectors import Collector
from legion.proto import Labels, Sample

log = logging.getLogger(__name__)

COLLECTOR_DURATION = "legion_agent_collector_duration_seconds"
COLLECTOR_SUCCESS = "legion_agent_collector_success_total"
COLLECTOR_ERRORS = "legion_agent_collector_errors_total"
INVALID_SAMPLES = "legion_agent_collector_invalid_samples_total"
TICKS = "legion_agent_ticks_total"
TICKS_SKIPPED = "legion_agent_ticks_skipped_total"
TICK_ERRORS = "legion_agent_tick_callback_errors_total"

MAX_REASONS = 8  # distinct error reasons per collector; later ones are counted as "other"
LOG_EVERY_SECS = 60.0  # repeated errors of one kind are logged at most this often


class Clock(Protocol):
    """What the scheduler needs from time: the `time` module satisfies it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch (for sample timestamps)."""
        ...

    def sleep(self, secs: float) -> None:
        """Block for `secs` seconds."""
        ...


class _Accounting:
    """Per-collector counters; owned by the scheduler thread."""

    __slots__ = ("duration", "errors", "labels", "success")

    def __init__(self, name: str) -> None:
        self.labels: Labels = (("collector", name),)
        self.duration: float | None = None
        self.success = 0
        self.errors: dict[str, int] = {}


class Scheduler:
    """Runs `collectors` every `interval_secs` and hands each tick's samples to `on_tick`."""

    def __init__(self, collectors: Sequence[Collector], interval_secs: float,
                 on_tick: Callable[[list[Sample]], None], clock: Clock = time) -> None:
        self._collectors = list(collectors)
        self._interval = float(interval_secs)
        self._on_tick = on_tick
        self._clock = clock
        self._acct = [_Accounting(c.name) for c in self._collectors]
        self._ticks = 0
        self._skipped = 0
        self._invalid: dict[str, int] = {}
        self._callback_errors = 0
        self._last_log: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run the loop in a daemon thread (idempotent; once `stop()` was called, a no-op)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self.run, name="legion-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and wait up to `timeout` seconds for it (idempotent, safe before start)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def collectors(self) -> tuple[Collector, ...]:
        """The collectors this scheduler runs, in order."""
        return tuple(self._collectors)

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def ticks_skipped(self) -> int:
        """Ticks skipped because the previous one ended after their due time."""
        return self._skipped

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, max_ticks: int | None = None) -> None:
        """Tick on the grid until `stop()` (or `max_ticks` ticks ran), in the calling thread."""
        start = self._clock.monotonic()
        k = 0  # index of the next due tick
        done = 0
        while not self._stop.is_set():
            delay = start + k * self._interval - self._clock.monotonic()
            if delay > 0:
                self._wait(delay)
                if self._stop.is_set():
                    break
            self.run_once()
            done += 1
            if max_ticks is not None and done >= max_ticks:
                break
            # The next due tick is the first grid point still in the future (or the very next).
            elapsed = self._clock.monotonic() - start
            nxt = max(k + 1, math.floor(elapsed / self._interval) + 1)
            if nxt > k + 1:
                self._skipped += nxt - k - 1
                self._log_limited("scheduler", "late",
                                  "ticks_skipped=%d total=%d", nxt - k - 1, self._skipped)
            k = nxt

    def _wait(self, delay: float) -> None:
        if self._clock is time:
            self._stop.wait(delay)  # real time: wake at once when stop() is called
        else:
            self._clock.sleep(delay)  # an injected clock decides what waiting means

    def run_once(self) -> list[Sample]:
        """Run every collector once, give the samples and self-metrics to `on_tick`, return them."""
        ts_ms = int(self._clock.time() * 1000)
        samples: list[Sample] = []
        for collector, acct in zip(self._collectors, self._acct, strict=True):
            t0 = self._clock.monotonic()
            try:
                readings = collector.collect()
            except Exception as exc:  # noqa: BLE001 - one collector must never stop the others
                acct.duration = self._clock.monotonic() - t0
                self._count_error(acct, collector.name, exc)
                continue
            acct.duration = self._clock.monotonic() - t0
            acct.success += 1
            bad = _append(samples, readings, ts_ms)
            if bad:
                self._invalid[collector.name] = self._invalid.get(collector.name, 0) + bad
        self._ticks += 1
        samples.extend(self._self_metrics(ts_ms))
        try:
            self._on_tick(samples)
        except Exception as exc:  # noqa: BLE001 - the sender's trouble must not stop collection
            self._callback_errors += 1
            self._log_limited("on_tick", type(exc).__name__, "on_tick failed: %r", exc)
        return samples

    # ---- accounting --------------------------------------------------------------------------
    def _count_error(self, acct: _Accounting, name: str, exc: Exception) -> None:
        reason = type(exc).__name__
        if reason not in acct.errors and len(acct.errors) >= MAX_REASONS:
            reason = "other"
        acct.errors[reason] = acct.errors.get(reason, 0) + 1
        self._log_limited(name, reason, "collector=%s reason=%s error=%r", name, reason, exc)

    def _log_limited(self, who: str, reason: str, msg: str, *args: object) -> None:
        now = self._clock.monotonic()
        last = self._last_log.get((who, reason))
        if last is None or now - last >= LOG_EVERY_SECS:
            self._last_log[(who, reason)] = now
            log.warning(msg, *args)

    def _self_metrics(self, ts_ms: int) -> list[Sample]:
        out: list[Sample] = []
        for acct in self._acct:
            if acct.duration is not None:
                out.append(Sample(COLLECTOR_DURATION, acct.labels, acct.duration, ts_ms))
            out.append(Sample(COLLECTOR_SUCCESS, acct.labels, float(acct.success), ts_ms))
            for reason, n in acct.errors.items():
                labels = tuple(sorted(acct.labels + (("reason", reason),)))
                out.append(Sample(COLLECTOR_ERRORS, labels, float(n), ts_ms))
        for name, n in self._invalid.items():
            out.append(Sample(INVALID_SAMPLES, (("collector", name),), float(n), ts_ms))
        out.append(Sample(TICKS, (), float(self._ticks), ts_ms))
        out.append(Sample(TICKS_SKIPPED, (), float(self._skipped), ts_ms))
        if self._callback_errors:
            out.append(Sample(TICK_ERRORS, (), float(self._callback_errors), ts_ms))
        return out


def _append(samples: list[Sample], readings: object, ts_ms: int) -> int:
    """Append valid readings as samples; return how many were dropped as malformed."""
    bad = 0
    try:
        items = list(readings)  # type: ignore[call-overload]
    except TypeError:
        return 1
    try:  # the usual tick: every value a finite float (v - v is nan for inf and nan)
        good = [Sample(n, lab, v, ts_ms) for n, lab, v in items
                if type(v) is float and v - v == 0.0]
    except (TypeError, ValueError):  # not a 3-tuple somewhere: sort it out one by one
        good = []
    if len(good) == len(items):
        samples += good
        return 0
    for item in items:
        try:
            name, labels, value = item
            v = float(value)
        except (TypeError, ValueError):
            bad += 1
            continue
        if math.isfinite(v):
            samples.append(Sample(name, labels, v, ts_ms))
        else:  # the codec rejects a whole batch for one NaN: drop the point, count it
            bad += 1
    return bad
