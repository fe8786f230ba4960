"""AgentMonitor: in-app instrumentation for multi-agent AI systems.

Usage (the seed's, as written)::

    monitor = AgentMonitor(agent_id, department)
    with monitor.track_task(task.get("type", "unknown")):      # also `async with`
        result = await self._process_task_internal(task)
    monitor.track_message_sent(message)

    @monitor.task("summarize")                                  # sync or async functions
    async def summarize(doc): ...

The application thread only appends a duration to a deque (lock-free) and bumps an atomic
counter; everything else (percentiles, success rate, encoding, the socket) happens in one
background flusher thread per process, shared by every monitor of that process. Each interval it
sends one `metrics` Envelope (node "local", epoch = start of this process's flusher, seq + 1 per
envelope, so gaps at the receiver are lost envelopes) over a ZeroMQ PUSH socket to the local node
agent, which PULLs it and adds the samples to its own batches (spool + acks). Sends are
non-blocking with a small high-water mark and IMMEDIATE: with no listener the report is dropped and
counted, and ZeroMQ reconnects by itself when the node agent comes back. Counters are cumulative,
so a dropped report loses only that interval's percentiles, never counts.

Transport choice: the monitor socket is plain (no Curve): it is local IPC, by default an ipc://
socket file whose directory the node agent creates with mode 0700, so only the same user can
write to it. The node agent's uplink to the aggregator is where Curve applies.

Metrics (labels `agent_id`, `department` on every series) and their OpenTelemetry GenAI
semantic-convention counterparts:

| metric | extra labels | OTel GenAI |
|---|---|---|
| `agent_tasks_total` | task_type, status=ok/error, gen_ai_operation=invoke_agent | `gen_ai.operation.name=invoke_agent` spans |
| `agent_response_time_ms` | task_type (or `__all__`), quantile=p50/p95/p99 (this interval) | `gen_ai.client.operation.duration` |
| `agent_response_time_ms_count` / `_sum` | task_type (cumulative) | same histogram's count/sum |
| `agent_success_rate_percent` | (sliding window, `success_window_secs`) | `error.type` on spans |
| `agent_task_queue_depth` | | — |
| `agent_messages_sent_total` / `_received_total` | | — |
| `agent_llm_calls_total` | model, gen_ai_operation=chat | `gen_ai.request.model`, operation `chat` |
| `agent_tokens_total` | type=input/output | `gen_ai.client.token.usage`, `gen_ai.token.type` |
| `agent_llm_cost_usd_total` | (only once a cost was given) | — |
| `agent_tool_calls_total` | tool, status, gen_ai_operation=execute_tool | `gen_ai.tool.name`, `execute_tool` |
| `agent_cpu_usage_percent`, `agent_memory_usage_percent` | (opt-in / reported) | — |
| `legion_monitor_dropped_total` | (reports of this agent dropped) | — |
| `legion_monitor_overflow_total` | (calls folded into `__overflow__`) | — |

Cardinality guard: at most `max_series` distinct task types + models + tools per agent; later
new values collapse into `"__overflow__"` and are counted.

Semantics worth knowing: percentiles cover the tasks that *finished* in the interval (omitted when
none did); failed tasks count in the durations too; `agent_success_rate_percent` covers the last
`success_window_secs` (so 1-second noise does not trip an 80% alert); any exception leaving a
tracked block, cancellation included, is an error. Per interval at most `max_pending` durations
per task type are kept for the percentiles (counts stay exact). Monitors do not survive
`fork()`: create them in the child. For `inproc://` pass the receiver's `context=`.
Other calls: `flush()`, `close()`, `set_reporting(bool)`, `set_resource_usage(cpu, mem)`,
`stats()`, and `close_monitors([...])` to close many with one final envelope.
"""  # noqa: E501 - markdown table rows cannot wrap

from legion.node_agent.monitor.agent_monitor import ALL, OVERFLOW, AgentMonitor
from legion.node_agent.monitor.flusher import ENDPOINT_ENV, close_monitors, resolve_endpoint

__all__ = ["ALL", "ENDPOINT_ENV", "OVERFLOW", "AgentMonitor", "close_monitors",
           "resolve_endpoint"]
