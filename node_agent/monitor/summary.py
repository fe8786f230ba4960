"""Per-agent state and the per-interval aggregation that turns it into samples (flusher side)."""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from legion.proto import Labels, Sample, canonical_labels

OVERFLOW = "__overflow__"
ALL = "__all__"
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


class _Reader:
    """Reads an `itertools.count` that others advance: value = next() minus our own reads."""

    __slots__ = ("_next", "_reads")

    def __init__(self, nxt: Callable[[], int]) -> None:
        self._next = nxt
        self._reads = 0

    def value(self) -> int:
        v = self._next() - self._reads
        self._reads += 1
        return v


class TaskSeries:
    """One task_type of one agent: pending durations (lock-free deques) and exact counters."""

    __slots__ = (
        "_err_r",
        "_ok_r",
        "err",
        "err_inc",
        "ok",
        "ok_inc",
        "sum_ms",
        "task_type",
        "total_err",
        "total_ok",
    )

    def __init__(self, task_type: str, max_pending: int = 10_000) -> None:
        self.task_type = task_type
        # deque.append/popleft are atomic in CPython: the app thread never takes a lock here.
        self.ok: deque[int] = deque(maxlen=max_pending)
        self.err: deque[int] = deque(maxlen=max_pending)
        ok_c, err_c = itertools.count(), itertools.count()
        self.ok_inc = ok_c.__next__
        self.err_inc = err_c.__next__
        self._ok_r = _Reader(ok_c.__next__)
        self._err_r = _Reader(err_c.__next__)
        self.total_ok = 0
        self.total_err = 0
        self.sum_ms = 0.0

    def drain(self) -> tuple[list[int], int, int]:
        """Durations (ns) recorded since last drain, and cumulative ok/error counts."""
        durs = _popall(self.ok) + _popall(self.err)
        ok, err = self._ok_r.value(), self._err_r.value()
        new = (ok - self.total_ok) + (err - self.total_err)
        self.total_ok, self.total_err = ok, err
        if durs:
            self.sum_ms += sum(durs) / 1e6
            if new > len(durs):  # deques hit max_pending: estimate the missing at this mean
                self.sum_ms += (new - len(durs)) * (sum(durs) / len(durs)) / 1e6
        return durs, ok, err


def _popall(d: deque[int]) -> list[int]:
    out = []
    pop = d.popleft
    for _ in range(len(d)):
        try:
            out.append(pop())
        except IndexError:
            break
    return out


def quantiles(durs_ns: list[int]) -> list[tuple[str, float]]:
    """Nearest-rank p50/p95/p99 in milliseconds."""
    xs = sorted(durs_ns)
    n = len(xs)
    return [(name, xs[max(0, math.ceil(q * n) - 1)] / 1e6) for name, q in QUANTILES]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class MonitorState:
    """Everything one monitor accumulates; app threads write, the flusher reads under `lock`."""

    def __init__(self, agent_id: str, department: str, overflow: TaskSeries,
                 sent_next: Callable[[], int], recv_next: Callable[[], int],
                 window_len: int, process_metrics: bool) -> None:
        self.lock = threading.Lock()
        self.base = {"agent_id": agent_id, "department": department}
        self.tasks: list[TaskSeries] = []
        self.overflow_series = overflow
        self._sent = _Reader(sent_next)
        self._recv = _Reader(recv_next)
        # peer -> counter of messages sent to it (filled by the app thread, read here)
        self.sent_to: dict[str, Callable[[], int]] = {}
        self._sent_to_readers: dict[str, _Reader] = {}
        self.window: deque[tuple[int, int]] = deque(maxlen=window_len)
        self.process_metrics = process_metrics
        self.queue_depth: Any = None
        self.cpu_percent: Any = None
        self.memory_percent: Any = None
        self.llm_calls: dict[str, int] = {}
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd: float | None = None
        self.tool_calls: dict[tuple[str, str], int] = {}
        self.overflow = 0
        self.invalid = 0
        # self-telemetry kept by the flusher
        self.reports = 0
        self.sent = 0
        self.dropped = 0
        self.dropped_samples = 0
        self.last_error: str | None = None
        self._labels: dict[tuple[tuple[str, str], ...], Labels] = {}

    def _lab(self, extra: tuple[tuple[str, str], ...]) -> Labels:
        got = self._labels.get(extra)
        if got is None:
            got = self._labels[extra] = canonical_labels({**self.base, **dict(extra)})
        return got

    def collect(self, ts_ms: int, proc: tuple[float, float] | None) -> list[Sample]:
        """Aggregate this interval and return its samples (called by the flusher thread only)."""
        out: list[Sample] = []

        def add(name: str, extra: tuple[tuple[str, str], ...], value: float) -> None:
            out.append(Sample(name, self._lab(extra), float(value), ts_ms))

        with self.lock:
            series = list(self.tasks)
            llm = dict(self.llm_calls)
            tools = dict(self.tool_calls)
            tin, tout, cost = self.tokens_in, self.tokens_out, self.cost_usd
        if self.overflow_series.total_ok or self.overflow_series.total_err or \
                self.overflow_series.ok or self.overflow_series.err:
            series.append(self.overflow_series)
        all_durs: list[int] = []
        d_ok = d_err = 0
        for s in series:
            prev_ok, prev_err = s.total_ok, s.total_err
            durs, ok, err = s.drain()
            d_ok += ok - prev_ok
            d_err += err - prev_err
            tt = (("task_type", s.task_type),)
            op = ("gen_ai_operation", "invoke_agent")
            add("agent_tasks_total", (op, ("status", "ok"), *tt), ok)
            add("agent_tasks_total", (op, ("status", "error"), *tt), err)
            add("agent_response_time_ms_count", tt, ok + err)
            add("agent_response_time_ms_sum", tt, s.sum_ms)
            if durs:
                all_durs.extend(durs)
                for q, v in quantiles(durs):
                    add("agent_response_time_ms", (*tt, ("quantile", q)), v)
        if all_durs:
            for q, v in quantiles(all_durs):
                add("agent_response_time_ms", (("task_type", ALL), ("quantile", q)), v)
        self.window.append((d_ok, d_err))
        w_ok = sum(o for o, _ in self.window)
        w_all = w_ok + sum(e for _, e in self.window)
        if w_all:
            add("agent_success_rate_percent", (), 100.0 * w_ok / w_all)
        depth = _num(self.queue_depth)
        if depth is not None:
            add("agent_task_queue_depth", (), depth)
        add("agent_messages_sent_total", (), self._sent.value())
        for peer, nxt in list(self.sent_to.items()):
            reader = self._sent_to_readers.setdefault(peer, _Reader(nxt))
            add("agent_messages_sent_to_total", (("to", peer),), reader.value())
        add("agent_messages_received_total", (), self._recv.value())
        for model, n in llm.items():
            add("agent_llm_calls_total", (("gen_ai_operation", "chat"), ("model", model)), n)
        if llm:
            add("agent_tokens_total", (("type", "input"),), tin)
            add("agent_tokens_total", (("type", "output"),), tout)
        if cost is not None:
            add("agent_llm_cost_usd_total", (), cost)
        for (tool, status), n in tools.items():
            add("agent_tool_calls_total",
                (("gen_ai_operation", "execute_tool"), ("status", status), ("tool", tool)), n)
        cpu, mem = _num(self.cpu_percent), _num(self.memory_percent)
        if proc is not None and self.process_metrics:
            cpu, mem = proc
        if cpu is not None:
            add("agent_cpu_usage_percent", (), cpu)
        if mem is not None:
            add("agent_memory_usage_percent", (), mem)
        add("legion_monitor_dropped_total", (), self.dropped)
        add("legion_monitor_overflow_total", (), self.overflow)
        return out
