"""Scheduler: grid without drift, skipped ticks, failure accounting, lifecycle on real threads."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from legion.cli.config import config_from_dict
from legion.kernel.errors import ConfigError
from legion.node_agent.collectors import available_collectors
from legion.node_agent.scheduler import (
    COLLECTOR_DURATION,
    COLLECTOR_ERRORS,
    COLLECTOR_SUCCESS,
    INVALID_SAMPLES,
    MAX_REASONS,
    TICKS_SKIPPED,
    Scheduler,
)
from legion.proto import KIND_METRICS, Envelope, MetricsBatch, Sample, decode, encode


class FakeClock:
    """Virtual time: `sleep` advances it, optionally oversleeping like a busy OS would."""

    def __init__(self, oversleep: float = 0.0, seed: int = 7) -> None:
        self.mono = 5000.0
        self.wall_offset = 1_795_000_000.0 - self.mono
        self.oversleep = oversleep
        self.rng = random.Random(seed)

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.mono + self.wall_offset

    def sleep(self, secs: float) -> None:
        self.mono += secs + self.rng.uniform(0.0, self.oversleep)

    def advance(self, secs: float) -> None:
        self.mono += secs


class Busy:
    """A collector that takes `secs` of (virtual) time, longer on chosen calls."""

    def __init__(self, clock: FakeClock, secs: float, slow: dict[int, float] | None = None,
                 name: str = "busy") -> None:
        self.name, self.clock, self.secs, self.slow, self.calls = name, clock, secs, slow or {}, 0

    def collect(self) -> list[tuple[str, Any, float]]:
        self.clock.advance(self.slow.get(self.calls, self.secs))
        self.calls += 1
        return [("system_busy_seconds", (), float(self.calls))]


class Boom:
    name = "boom"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[tuple[str, Any, float]]:
        self.calls += 1
        raise RuntimeError("source unreadable")


def ticks_of(sched_args: dict[str, Any], n: int) -> list[list[Sample]]:
    """Run `n` ticks in the foreground and return what on_tick received."""
    got: list[list[Sample]] = []
    Scheduler(on_tick=got.append, **sched_args).run(max_ticks=n)
    return got


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    hits = [s.value for s in samples if s.name == name and s.labels == want]
    assert len(hits) <= 1
    return hits[0] if hits else None


def test_no_drift_over_many_ticks() -> None:
    clock = FakeClock(oversleep=0.05)  # every wake-up up to 50 ms late
    busy = Busy(clock, 0.37)
    got = ticks_of({"collectors": [busy], "interval_secs": 1.0, "clock": clock}, 2000)
    stamps = [tick[0].ts_ms for tick in got]
    start = stamps[0]
    for k, ts in enumerate(stamps):
        # Late wake-ups shift one tick, never the ones after it (sleep(interval) would drift
        # by 0.37 + ~0.025 s per tick, i.e. ~13 minutes over 2000 ticks).
        assert 0 <= ts - start - 1000 * k <= 51, (k, ts - start)
    assert stamps[-1] - start == pytest.approx(1999 * 1000, abs=51)
    assert value(got[-1], TICKS_SKIPPED) == 0.0


def test_one_timestamp_per_tick() -> None:
    clock = FakeClock()
    collectors = [Busy(clock, 0.2, name="a"), Busy(clock, 0.3, name="b")]
    for tick in ticks_of({"collectors": collectors, "interval_secs": 1.0, "clock": clock}, 5):
        assert len({s.ts_ms for s in tick}) == 1


def test_late_ticks_are_skipped_and_counted() -> None:
    clock = FakeClock()
    busy = Busy(clock, 0.1, slow={2: 2.5})  # the third tick takes 2.5 intervals
    got = ticks_of({"collectors": [busy], "interval_secs": 1.0, "clock": clock}, 6)
    start = got[0][0].ts_ms
    assert [(t[0].ts_ms - start) // 1000 for t in got] == [0, 1, 2, 5, 6, 7]
    # Counted once the slow tick has ended, so the tick after the gap reports them.
    assert [value(t, TICKS_SKIPPED) for t in got] == [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]


def test_failing_collector_is_counted_and_others_still_run() -> None:
    clock = FakeClock()
    boom, busy = Boom(), Busy(clock, 0.1)
    got = ticks_of({"collectors": [boom, busy], "interval_secs": 1.0, "clock": clock}, 4)
    assert boom.calls == 4 and busy.calls == 4
    last = got[-1]
    assert value(last, "system_busy_seconds") == 4.0
    assert value(last, COLLECTOR_ERRORS, collector="boom", reason="RuntimeError") == 4.0
    assert value(last, COLLECTOR_SUCCESS, collector="boom") == 0.0
    assert value(last, COLLECTOR_SUCCESS, collector="busy") == 4.0
    assert value(last, COLLECTOR_ERRORS, collector="busy", reason="RuntimeError") is None
    assert value(last, COLLECTOR_DURATION, collector="busy") == pytest.approx(0.1)
    assert value(last, COLLECTOR_DURATION, collector="boom") is not None


def test_error_reasons_are_bounded() -> None:
    class Many:
        name = "many"

        def __init__(self) -> None:
            self.n = 0

        def collect(self) -> list[tuple[str, Any, float]]:
            self.n += 1
            raise type(f"Error{self.n}", (Exception,), {})()

    sched = Scheduler([Many()], 1.0, lambda s: None, clock=FakeClock())
    for _ in range(3 * MAX_REASONS):
        samples = sched.run_once()
    reasons = {dict(s.labels)["reason"] for s in samples if s.name == COLLECTOR_ERRORS}
    assert len(reasons) == MAX_REASONS + 1 and "other" in reasons
    total = sum(s.value for s in samples if s.name == COLLECTOR_ERRORS)
    assert total == 3 * MAX_REASONS


def test_non_finite_and_malformed_readings_are_dropped_and_counted() -> None:
    class Dirty:
        name = "dirty"

        def collect(self) -> list[Any]:
            return [("system_x_bytes", (), float("nan")), ("system_y_bytes", (), float("inf")),
                    ("system_z_bytes", (), "not a number"), ("short",),
                    ("system_ok_bytes", (), 1)]

    samples = Scheduler([Dirty()], 1.0, lambda s: None, clock=FakeClock()).run_once()
    assert value(samples, "system_ok_bytes") == 1.0
    assert {s.name for s in samples}.isdisjoint({"system_x_bytes", "system_y_bytes",
                                                  "system_z_bytes"})
    assert value(samples, INVALID_SAMPLES, collector="dirty") == 4.0


def test_raising_on_tick_does_not_stop_the_loop() -> None:
    calls = []

    def on_tick(samples: list[Sample]) -> None:
        calls.append(len(samples))
        raise ConnectionError("sender down")

    clock = FakeClock()
    Scheduler([Busy(clock, 0.1)], 1.0, on_tick, clock=clock).run(max_ticks=3)
    assert len(calls) == 3


def test_invalid_interval() -> None:
    """The agent is handed a checked interval: the config rejects the bad ones at load."""
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="collection_interval: must be > 0"):
            config_from_dict({"collection_interval": bad})


# ---- real time, real threads, real collectors --------------------------------------------------
def test_lifecycle_with_real_collectors_and_wire_round_trip() -> None:
    ticks: list[list[Sample]] = []
    ticked = threading.Event()

    def on_tick(samples: list[Sample]) -> None:
        ticks.append(samples)
        if len(ticks) >= 3:
            ticked.set()

    never_started = Scheduler([], 0.05, on_tick)
    never_started.stop()  # safe before start, and idempotent
    never_started.stop(timeout=1.0)
    never_started.start()  # stopped before it started (a signal during start-up): stays stopped
    assert not never_started.running
    sched = Scheduler(available_collectors(), 0.05, on_tick)
    sched.start()
    sched.start()  # idempotent: still one thread
    assert [t.name for t in threading.enumerate()].count("legion-scheduler") == 1
    assert ticked.wait(5.0)
    sched.stop(timeout=2.0)
    sched.stop(timeout=2.0)
    assert not sched.running
    n = len(ticks)
    time.sleep(0.15)
    assert len(ticks) == n  # nothing after stop
    sched.start()  # a stopped scheduler stays stopped
    assert not sched.running
    last = ticks[-1]
    assert len({s.ts_ms for s in last}) == 1
    assert sum(1 for s in last if s.name.startswith("system_")) >= 60
    batch = MetricsBatch.from_samples(last)
    env = decode(encode(Envelope(KIND_METRICS, "node-1", 1, 1, last[0].ts_ms, batch)))
    assert env.body == batch


def test_stop_is_prompt_with_a_long_interval() -> None:
    got: list[list[Sample]] = []
    sched = Scheduler([], 30.0, got.append)
    sched.start()
    deadline = time.monotonic() + 2.0
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    sched.stop(timeout=2.0)
    assert time.monotonic() - t0 < 0.5
    assert not sched.running and len(got) == 1
