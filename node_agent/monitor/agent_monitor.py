"""The application-facing half: `AgentMonitor`, its spans and its per-label state."""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from time import perf_counter_ns
from types import TracebackType
from typing import Any, Self, TypeVar

from legion.kernel.errors import ConfigError
from legion.node_agent.monitor import flusher as _fl
from legion.node_agent.monitor.summary import ALL, OVERFLOW, MonitorState, TaskSeries

log = logging.getLogger("legion.node_agent.monitor")

__all__ = ["ALL", "OVERFLOW", "AgentMonitor"]
_MAX_LABEL_LEN = 128
_F = TypeVar("_F", bound=Callable[..., Any])


class _Span:
    """One tracked task: a context manager (sync and async) that records duration and outcome."""

    __slots__ = ("_s", "_t0")

    def __init__(self, series: TaskSeries) -> None:
        self._s = series

    def __enter__(self) -> Self:
        self._t0 = perf_counter_ns()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        dt = perf_counter_ns() - self._t0
        s = self._s
        if et is None:
            s.ok.append(dt)
            s.ok_inc()
        else:  # counted as a failure; returning None lets the very same exception propagate
            s.err.append(dt)
            s.err_inc()

    async def __aenter__(self) -> Self:
        self._t0 = perf_counter_ns()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(et, ev, tb)


def _label_value(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a label must never raise into the app
        return "unknown"
    text = text[:_MAX_LABEL_LEN]
    return text if text else "unknown"


MAX_PEERS = 32
PEER_KEYS = ("to", "recipient", "receiver", "target")


def _peer_of(message: Any) -> str | None:
    """The recipient named by a message mapping, if any (bounded length)."""
    if isinstance(message, Mapping):
        for key in PEER_KEYS:
            v = message.get(key)
            if isinstance(v, str) and v:
                return v[:64]
    return None


class AgentMonitor:
    """In-app metrics for one agent; cheap, thread- and asyncio-safe, never raises into the app."""

    def __init__(
        self,
        agent_id: str,
        department: str = "default",
        *,
        endpoint: str | None = None,
        interval_secs: float = 1.0,
        max_series: int = 64,
        context: Any = None,
        process_metrics: bool = False,
        success_window_secs: float = 30.0,
        max_pending: int = 10_000,
    ) -> None:
        problems = []
        # enums and other objects are fine as long as their str() is a usable label value
        agent_id = agent_id if isinstance(agent_id, str) or agent_id is None else str(agent_id)
        department = department if isinstance(department, str) or department is None \
            else str(getattr(department, "value", department))
        if not isinstance(agent_id, str) or not agent_id or len(agent_id) > _MAX_LABEL_LEN:
            problems.append(f"agent_id: must be a non-empty string of <= {_MAX_LABEL_LEN} chars")
        if not isinstance(department, str) or not department or len(department) > _MAX_LABEL_LEN:
            problems.append(f"department: must be a non-empty string of <= {_MAX_LABEL_LEN} chars")
        if not (isinstance(interval_secs, (int, float)) and 0.01 <= interval_secs <= 3600):
            problems.append("interval_secs: must be between 0.01 and 3600")
        if not isinstance(max_series, int) or max_series < 1:
            problems.append("max_series: must be an integer >= 1")
        if not (isinstance(success_window_secs, (int, float)) and success_window_secs > 0):
            problems.append("success_window_secs: must be > 0")
        if problems:
            raise ConfigError(problems)
        self.agent_id = agent_id
        self.department = department
        self.interval_secs = float(interval_secs)
        self.max_series = max_series
        self.process_metrics = bool(process_metrics)
        self.endpoint = _fl.resolve_endpoint(endpoint)
        self.context = context
        self.reporting = True
        self._max_pending = max_pending
        self._tasks: dict[Any, TaskSeries] = {}
        self._n_series = 0
        self._models: dict[str, str] = {}
        self._tools: dict[str, str] = {}
        self._overflow_series = TaskSeries(OVERFLOW, max_pending)
        sent, received = itertools.count(), itertools.count()
        self._sent_inc = sent.__next__
        self._recv_inc = received.__next__
        self.state = MonitorState(
            agent_id, department, self._overflow_series, sent.__next__, received.__next__,
            max(1, math.ceil(success_window_secs / self.interval_secs)), self.process_metrics)
        self._lock = self.state.lock
        self._closed = False
        _fl.get_flusher().register(self)

    # ---- tasks (hot path) -----------------------------------------------------------------
    def track_task(self, task_type: Any = "unknown") -> _Span:
        """Context manager (`with` / `async with`) timing one task and counting its outcome."""
        try:
            s = self._tasks.get(task_type)
        except TypeError:  # unhashable label value
            s = None
        if s is None:
            s = self._resolve_task(task_type)
        return _Span(s)

    def task(self, task_type: Any = None) -> Any:
        """Decorator form: `@monitor.task("kind")` or bare `@monitor.task`, sync or async."""
        if callable(task_type) and not isinstance(task_type, str):
            return self.task(getattr(task_type, "__name__", "unknown"))(task_type)

        def deco(fn: _F) -> _F:
            kind = task_type if task_type is not None else getattr(fn, "__name__", "unknown")
            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    with self.track_task(kind):
                        return await fn(*args, **kwargs)
                return awrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.track_task(kind):
                    return fn(*args, **kwargs)
            return wrapper  # type: ignore[return-value]
        return deco

    def _resolve_task(self, task_type: Any) -> TaskSeries:
        key = _label_value(task_type)
        with self._lock:
            s = self._tasks.get(key)
            if s is None:
                if self._n_series >= self.max_series:
                    self.state.overflow += 1
                    return self._overflow_series  # not cached: memory stays bounded
                s = TaskSeries(key, self._max_pending)
                self._tasks[key] = s
                self.state.tasks.append(s)
                self._n_series += 1
            if key is not task_type and len(self._tasks) < 4 * self.max_series:
                try:
                    self._tasks[task_type] = s  # alias for hashable non-str values (enums)
                except TypeError:
                    pass
        return s

    # ---- messages, queue, resources -------------------------------------------------------
    def track_message_sent(self, message: Any = None) -> None:
        """Count one message this agent sent (and per recipient when the message names one).

        Every message counts in `agent_messages_sent_total`. A message that is a mapping with a
        `to`/`recipient`/`receiver`/`target` string also counts in
        `agent_messages_sent_to_total{to=...}` (at most `MAX_PEERS` recipients per agent): the
        message flows the dashboard draws between agents.
        """
        self._sent_inc()
        try:
            peer = _peer_of(message)
            if peer is not None:
                inc = self.state.sent_to.get(peer)
                if inc is None and len(self.state.sent_to) < MAX_PEERS:
                    inc = self.state.sent_to.setdefault(peer, itertools.count().__next__)
                if inc is not None:
                    inc()
        except Exception:  # noqa: BLE001 - an odd message object must never hurt the app
            pass

    def track_message_received(self, message: Any = None) -> None:
        """Count one message this agent received."""
        self._recv_inc()

    def set_queue_depth(self, depth: float) -> None:
        """Set the task queue depth gauge (last value per interval is reported)."""
        self.state.queue_depth = depth

    def set_resource_usage(self, cpu_percent: float | None = None,
                           memory_percent: float | None = None) -> None:
        """Report this agent's CPU/memory share when it is not its own process."""
        if cpu_percent is not None:
            self.state.cpu_percent = cpu_percent
        if memory_percent is not None:
            self.state.memory_percent = memory_percent

    # ---- GenAI: LLM and tool calls --------------------------------------------------------
    def track_llm_call(self, model: Any, input_tokens: int, output_tokens: int,
                       cost: float | None = None) -> None:
        """Count one LLM call (gen_ai chat): tokens by type, calls by model, cost in USD."""
        try:
            tin, tout = int(input_tokens), int(output_tokens)
            usd = float(cost) if cost is not None else None
            if tin < 0 or tout < 0 or (usd is not None and not (math.isfinite(usd) and usd >= 0)):
                raise ValueError("negative or non-finite")
        except Exception:  # noqa: BLE001 - bad input is counted, never raised
            with self._lock:
                self.state.invalid += 1
            return
        with self._lock:
            m = self._bounded(self._models, model)
            st = self.state
            st.llm_calls[m] = st.llm_calls.get(m, 0) + 1
            st.tokens_in += tin
            st.tokens_out += tout
            if usd is not None:
                st.cost_usd = (st.cost_usd or 0.0) + usd

    def track_tool_call(self, tool: Any, ok: bool) -> None:
        """Count one tool call (gen_ai execute_tool) with its outcome."""
        try:
            status = "ok" if ok else "error"
        except Exception:  # noqa: BLE001 - e.g. an array's ambiguous truth value
            status = "error"
        with self._lock:
            t = self._bounded(self._tools, tool)
            key = (t, status)
            self.state.tool_calls[key] = self.state.tool_calls.get(key, 0) + 1

    def _bounded(self, table: dict[str, str], value: Any) -> str:
        key = _label_value(value)
        got = table.get(key)
        if got is None:
            if self._n_series >= self.max_series:
                self.state.overflow += 1
                return OVERFLOW
            table[key] = got = key
            self._n_series += 1
        return got

    # ---- lifecycle and introspection ------------------------------------------------------
    def flush(self, timeout: float = 2.0) -> bool:
        """Flush now (from any thread); True when the report was handed to ZeroMQ."""
        return _fl.get_flusher().flush_now(self, timeout)

    def set_reporting(self, enabled: bool) -> None:
        """Pause/resume sending (tracking continues; cumulative counters catch up on resume)."""
        self.reporting = bool(enabled)

    def stats(self) -> dict[str, Any]:
        """Monitor self-telemetry: reports sent/dropped, overflow, series, endpoint."""
        st = self.state
        return {"endpoint": self.endpoint, "reports": st.reports, "sent": st.sent,
                "dropped": st.dropped, "dropped_samples": st.dropped_samples,
                "overflow": st.overflow, "invalid": st.invalid, "series": self._n_series,
                "last_error": st.last_error, "closed": self._closed}

    def close(self, timeout: float = 1.0) -> None:
        """Send a final report and detach from the flusher (idempotent)."""
        if self._closed:
            return
        self._closed = True
        _fl.get_flusher().unregister(self, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AgentMonitor({self.agent_id!r}, {self.department!r}, endpoint={self.endpoint!r})"
