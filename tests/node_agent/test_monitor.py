"""AgentMonitor over real ZeroMQ ipc:// sockets: counts, durations, failures, async, threads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from legion.node_agent import AgentMonitor
from legion.node_agent.monitor_receiver import MonitorReceiver
from legion.proto import Sample

pytestmark = pytest.mark.timeout(60)


def collect(r: MonitorReceiver, until: Callable[[list[Sample]], bool],
            timeout: float = 5.0) -> list[Sample]:
    """Drain until `until(all samples so far)` holds."""
    got: list[Sample] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += r.drain(10_000)
        if until(got):
            return got
        time.sleep(0.02)
    raise AssertionError(f"condition not met in {timeout}s; {len(got)} samples")


def last(samples: list[Sample], name: str, **labels: str) -> float | None:
    """Value of the newest sample with this name whose labels include `labels`."""
    val = None
    for s in samples:
        d = dict(s.labels)
        if s.name == name and all(d.get(k) == v for k, v in labels.items()):
            val = s.value
    return val


def has(name: str, **labels: str) -> Callable[[list[Sample]], bool]:
    return lambda got: last(got, name, **labels) is not None


def test_counts_and_durations(endpoint: str, receiver: MonitorReceiver) -> None:
    # a long interval: the only report is the explicit flush, so percentiles cover all 20
    mon = AgentMonitor("researcher-1", "research", endpoint=endpoint, interval_secs=30)
    try:
        for _ in range(5):
            with mon.track_task("analyze"):
                time.sleep(0.03)
        for _ in range(15):
            with mon.track_task("analyze"):
                pass
        assert mon.flush()
        got = collect(receiver, lambda g: last(g, "agent_response_time_ms_count",
                                               task_type="analyze") == 20)
        base = {"agent_id": "researcher-1", "department": "research", "task_type": "analyze"}
        assert last(got, "agent_tasks_total", status="ok", **base) == 20
        assert last(got, "agent_tasks_total", status="error", **base) == 0
        assert last(got, "agent_response_time_ms_count", **base) == 20
        total_ms = last(got, "agent_response_time_ms_sum", **base)
        assert total_ms is not None and 150 <= total_ms < 1000
        p50 = last(got, "agent_response_time_ms", quantile="p50", **base)
        p99 = last(got, "agent_response_time_ms", quantile="p99", **base)
        assert p50 is not None and p50 < 5
        assert p99 is not None and p99 >= 30
        assert last(got, "agent_success_rate_percent", agent_id="researcher-1") == 100.0
    finally:
        mon.close()


def test_failure_counted_and_reraised_untouched(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("coder-1", "engineering", endpoint=endpoint, interval_secs=0.1)
    boom = RuntimeError("tool exploded")

    def inner() -> None:
        raise boom

    try:
        with pytest.raises(RuntimeError) as info, mon.track_task("build"):
            inner()
        assert info.value is boom
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert frames[-1] == "inner"  # traceback intact down to the raising frame
        assert boom.__context__ is None and boom.__cause__ is None
        with mon.track_task("build"):
            pass
        mon.flush()
        got = collect(receiver, lambda g: last(g, "agent_response_time_ms_count",
                                               task_type="build") == 2)
        assert last(got, "agent_tasks_total", status="error", task_type="build") == 1
        assert last(got, "agent_tasks_total", status="ok", task_type="build") == 1
        assert last(got, "agent_success_rate_percent") == 50.0
    finally:
        mon.close()


def test_async_with_and_decorators(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("support-1", "sales_support", endpoint=endpoint, interval_secs=0.1)

    @mon.task("reply")
    async def reply(i: int) -> int:
        await asyncio.sleep(0.01)
        if i % 10 == 0:
            raise ValueError(i)
        return i

    @mon.task
    def classify(x: int) -> int:
        return x * 2

    async def handle(i: int) -> None:
        async with mon.track_task("ticket"):
            await asyncio.sleep(0.005)

    async def main() -> list[Any]:
        await asyncio.gather(*(handle(i) for i in range(50)))
        return await asyncio.gather(*(reply(i) for i in range(30)), return_exceptions=True)

    try:
        results = asyncio.run(main())
        assert sum(isinstance(r, ValueError) for r in results) == 3
        assert classify(21) == 42 and classify.__name__ == "classify"
        assert reply.__name__ == "reply" and asyncio.iscoroutinefunction(reply)
        mon.flush()
        got = collect(receiver, has("agent_tasks_total", task_type="classify"))
        assert last(got, "agent_tasks_total", status="ok", task_type="ticket") == 50
        assert last(got, "agent_tasks_total", status="ok", task_type="reply") == 27
        assert last(got, "agent_tasks_total", status="error", task_type="reply") == 3
        assert last(got, "agent_tasks_total", status="ok", task_type="classify") == 1
        assert last(got, "agent_response_time_ms", task_type="ticket", quantile="p50") >= 4.0
    finally:
        mon.close()


def test_many_threads_exact_counts(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("ops-1", "operations", endpoint=endpoint, interval_secs=0.05)
    n_threads, per = 16, 2000

    def work(i: int) -> None:
        for j in range(per):
            try:
                with mon.track_task(f"t{j % 3}"):
                    if j % 100 == 0:
                        raise KeyError(j)
            except KeyError:
                pass
            mon.track_message_sent(None)
            mon.track_message_received(None)
        mon.track_llm_call("gpt-4o", 100, 10, cost=0.001)
        mon.track_tool_call("sql", ok=i % 2 == 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mon.flush()
        got = collect(receiver, lambda g: (
            (last(g, "agent_tool_calls_total", tool="sql", status="ok") or 0)
            + (last(g, "agent_tool_calls_total", tool="sql", status="error") or 0) == n_threads))
        ok = sum(last(got, "agent_tasks_total", status="ok", task_type=f"t{k}") for k in range(3))
        err = sum(last(got, "agent_tasks_total", status="error", task_type=f"t{k}")
                  for k in range(3))
        assert ok + err == n_threads * per
        assert err == n_threads * (per // 100)
        assert last(got, "agent_messages_sent_total") == n_threads * per
        assert last(got, "agent_messages_received_total") == n_threads * per
        assert last(got, "agent_tokens_total", type="input") == n_threads * 100
        assert last(got, "agent_llm_calls_total", model="gpt-4o") == n_threads
        assert last(got, "agent_llm_cost_usd_total") == pytest.approx(n_threads * 0.001)
        assert last(got, "agent_tool_calls_total", tool="sql", status="error") == n_threads / 2
    finally:
        mon.close()


def test_cardinality_limit(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("sales-1", "sales_support", endpoint=endpoint, interval_secs=0.1,
                       max_series=3)
    try:
        for i in range(10):
            with mon.track_task(f"kind-{i}"):
                pass
        mon.track_tool_call("crm", True)  # over the limit too: tools share it
        mon.flush()
        got = collect(receiver, lambda g: last(g, "legion_monitor_overflow_total") == 8)
        types = {dict(s.labels).get("task_type") for s in got if s.name == "agent_tasks_total"}
        assert types == {"kind-0", "kind-1", "kind-2", "__overflow__"}
        assert last(got, "agent_tasks_total", task_type="__overflow__", status="ok") == 7
        assert last(got, "agent_tool_calls_total", tool="__overflow__") == 1
        assert last(got, "legion_monitor_overflow_total") == 8
        assert mon.stats()["overflow"] == 8 and mon.stats()["series"] == 3
    finally:
        mon.close()


def test_bad_input_never_raises(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("fin-1", "finance", endpoint=endpoint, interval_secs=0.1)
    try:
        with mon.track_task({"unhashable": 1}):  # type: ignore[arg-type]
            pass
        with mon.track_task(None):
            pass
        mon.track_llm_call("m", -5, "x")  # type: ignore[arg-type]
        mon.track_llm_call("m", 1, 1, cost=float("nan"))
        mon.track_tool_call(None, True)
        mon.set_queue_depth(float("inf"))  # non-finite gauges are omitted, never sent
        mon.set_resource_usage(cpu_percent="bogus")  # type: ignore[arg-type]
        assert mon.flush()
        got = collect(receiver, has("agent_tasks_total"))
        assert last(got, "agent_task_queue_depth") is None
        assert mon.stats()["invalid"] == 2
    finally:
        mon.close()


def test_process_metrics_opt_in(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("exec-1", "executive", endpoint=endpoint, interval_secs=0.1,
                       process_metrics=True)
    try:
        mon.set_queue_depth(7)
        got = collect(receiver, has("agent_cpu_usage_percent", agent_id="exec-1"))
        mem = last(got, "agent_memory_usage_percent", agent_id="exec-1")
        assert mem is not None and 0 < mem < 100
        assert last(got, "agent_task_queue_depth", agent_id="exec-1") == 7
    finally:
        mon.close()


def test_eighteen_agents_share_one_thread_and_envelope(endpoint: str,
                                                       receiver: MonitorReceiver) -> None:
    mons = [AgentMonitor(f"agent-{i}", "dept", endpoint=endpoint, interval_secs=0.1)
            for i in range(18)]
    try:
        for m in mons:
            with m.track_task("x"):
                pass
        names = [t.name for t in threading.enumerate()]
        assert names.count("legion-monitor-flusher") == 1
        frames0 = receiver.frames
        got = collect(receiver, lambda g: len({dict(s.labels)["agent_id"] for s in g
                                               if s.name == "agent_tasks_total"}) == 18)
        # all 18 arrived in one envelope per interval, not 18
        assert receiver.frames - frames0 <= 3
        assert receiver.stats()["lost"] == 0 and got
    finally:
        for m in mons:
            m.close()


def test_import_has_no_side_effects() -> None:
    code = ("import threading, sys\n"
            "from legion.node_agent import AgentMonitor\n"
            "assert threading.active_count() == 1, threading.enumerate()\n"
            "assert 'legion.node_agent.monitor' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_endpoint_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from legion.kernel.errors import ConfigError
    from legion.node_agent.monitor import resolve_endpoint

    monkeypatch.delenv("LEGION_MONITOR_ENDPOINT", raising=False)
    cfg = tmp_path / "monitoring_config.json"
    cfg.write_text('{"agent": {"monitor_endpoint": "ipc://run/{node}-monitor.sock"}}')
    monkeypatch.setenv("LEGION_CONFIG", str(cfg))
    monkeypatch.setenv("LEGION_NODE", "web-1")
    assert resolve_endpoint() == f"ipc://{tmp_path.resolve()}/run/web-1-monitor.sock"
    monkeypatch.setenv("LEGION_MONITOR_ENDPOINT", "tcp://127.0.0.1:7777")
    assert resolve_endpoint() == "tcp://127.0.0.1:7777"
    assert resolve_endpoint("inproc://x") == "inproc://x"
    with pytest.raises(ConfigError):
        resolve_endpoint("http://nope")
    with pytest.raises(ConfigError):
        AgentMonitor("", "dept")


def test_pending_bound_keeps_counts_exact(endpoint: str, receiver: MonitorReceiver) -> None:
    mon = AgentMonitor("burst", "ops", endpoint=endpoint, interval_secs=30, max_pending=100)
    try:
        for _ in range(5000):
            with mon.track_task("tiny"):
                pass
        assert mon.flush()
        got = collect(receiver, has("agent_response_time_ms_count", task_type="tiny"))
        assert last(got, "agent_tasks_total", task_type="tiny", status="ok") == 5000
        assert last(got, "agent_response_time_ms_count", task_type="tiny") == 5000
        assert last(got, "agent_response_time_ms_sum", task_type="tiny") > 0
    finally:
        mon.close()


def test_forked_child_gets_its_own_flusher(endpoint: str, receiver: MonitorReceiver) -> None:
    import multiprocessing as mp

    parent = AgentMonitor("parent", "exec", endpoint=endpoint, interval_secs=0.1)

    def child(ep: str) -> None:
        m = AgentMonitor("child", "exec", endpoint=ep, interval_secs=0.1)
        with m.track_task("forked"):
            pass
        m.flush()
        m.close()

    try:
        with parent.track_task("before"):
            pass
        p = mp.get_context("fork").Process(target=child, args=(endpoint,))
        p.start()
        p.join(20)
        assert p.exitcode == 0
        got = collect(receiver, lambda g: has("agent_tasks_total", agent_id="child")(g)
                      and has("agent_tasks_total", agent_id="parent")(g))
        assert last(got, "agent_tasks_total", agent_id="child", status="ok") == 1
        assert not any(dict(s.labels).get("agent_id") == "parent" and s.ts_ms and
                       dict(s.labels).get("task_type") == "forked" for s in got)
    finally:
        parent.close()


def test_messages_counted_in_total_and_per_recipient(endpoint: str,
                                                     receiver: MonitorReceiver) -> None:
    """Every message counts in the total; those naming a recipient also per recipient."""
    mon = AgentMonitor("router", "ops", endpoint=endpoint, interval_secs=30)
    try:
        for _ in range(3):
            mon.track_message_sent({"to": "coder"})
        mon.track_message_sent({"recipient": "reviewer"})
        mon.track_message_sent("plain text, no recipient")
        mon.track_message_sent(None)
        mon.flush()
        got = collect(receiver, has("agent_messages_sent_to_total", to="reviewer"))
    finally:
        mon.close(timeout=0.5)
    assert last(got, "agent_messages_sent_total") == 6.0
    assert last(got, "agent_messages_sent_to_total", to="coder") == 3.0
    assert last(got, "agent_messages_sent_to_total", to="reviewer") == 1.0
