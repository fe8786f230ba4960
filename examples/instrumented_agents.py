"""Instrumenting your own agents with `AgentMonitor`: a planner (sync) and a researcher (async)
that call an LLM, use a tool and message each other.

    export LEGION_CONFIG=~/legion/monitoring_config.json   # the README's quick start, with
    legionctl agent run --node web-1 &                       # a node agent on this machine
    python examples/instrumented_agents.py                   # ~30 s; --secs N, --endpoint ...

Each `AgentMonitor` reports once a second to the node agent on this machine (the endpoint comes
from --endpoint, $LEGION_MONITOR_ENDPOINT or the config's `agent.monitor_endpoint`); the node
agent forwards the samples to the aggregator with its own. In the dashboard the two agents appear
under their host, in their departments (`strategy`, `research`): click one for its response
time p95, success rate, tokens/s and queue depth charts; the arc between them is the
`agent_messages_sent_to_total{to=...}` flow. `legionctl query agent_tokens_total` shows the raw
series. Without a listener nothing blocks: reports are dropped and counted.

The "LLM" and the "tool" are stand-ins (a sleep and a token count) so the example runs offline;
replace them with your client calls and keep the `track_*` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time

from legion.node_agent import AgentMonitor


def fake_llm(prompt: str) -> tuple[str, int, int]:
    """Stand-in for an LLM call: (text, input tokens, output tokens)."""
    time.sleep(random.uniform(0.02, 0.08))
    return f"plan for {prompt}", len(prompt.split()) * 4 + 20, random.randint(40, 160)


class Planner:
    """A synchronous agent: one task = one LLM call, then a message to the researcher."""

    def __init__(self, outbox: asyncio.Queue[dict[str, str]], loop: asyncio.AbstractEventLoop,
                 endpoint: str | None) -> None:
        self.monitor = AgentMonitor("planner", "strategy", endpoint=endpoint)
        self.outbox, self.loop = outbox, loop

    @property
    def name(self) -> str:
        return self.monitor.agent_id

    def handle(self, goal: str) -> str:
        with self.monitor.track_task("plan"):          # duration, ok/error, success rate
            text, tin, tout = fake_llm(goal)
            self.monitor.track_llm_call("gpt-4o-mini", tin, tout, cost=(tin + tout) * 2e-7)
            message = {"to": "researcher", "from": self.name, "body": text}
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, message)
            self.monitor.track_message_sent(message)    # the `to` key draws the arc
            return text


class Researcher:
    """An asynchronous agent: `async with` spans, a tool call, a queue depth gauge."""

    def __init__(self, inbox: asyncio.Queue[dict[str, str]], endpoint: str | None) -> None:
        self.monitor = AgentMonitor("researcher", "research", endpoint=endpoint)
        self.inbox = inbox

    @staticmethod
    async def search(query: str) -> list[str]:
        """Stand-in for a tool (web search); fails now and then, like real tools."""
        await asyncio.sleep(random.uniform(0.01, 0.05))
        if random.random() < 0.1:
            raise TimeoutError("search timed out")
        return [f"result about {query}"]

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                message = await asyncio.wait_for(self.inbox.get(), 0.5)
            except TimeoutError:
                continue
            self.monitor.track_message_received(message)
            self.monitor.set_queue_depth(self.inbox.qsize())
            try:
                async with self.monitor.track_task("research"):
                    try:
                        await self.search(message["body"])
                        self.monitor.track_tool_call("web_search", ok=True)
                    except TimeoutError:
                        self.monitor.track_tool_call("web_search", ok=False)
                        raise                            # the task fails: counted as an error
                    await asyncio.sleep(random.uniform(0.05, 0.2))   # an async LLM call
                    self.monitor.track_llm_call("claude-haiku", 300, 120, cost=0.0004)
            except TimeoutError:
                pass                                     # already counted by track_task


async def main(secs: float, endpoint: str | None) -> None:
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    planner = Planner(inbox, asyncio.get_running_loop(), endpoint)
    researcher = Researcher(inbox, endpoint)
    until = time.monotonic() + secs

    def plan_forever() -> None:  # the sync agent lives in its own thread
        i = 0
        while time.monotonic() < until:
            planner.handle(f"goal number {i}")
            i += 1
            time.sleep(0.1)

    worker = threading.Thread(target=plan_forever, daemon=True)
    worker.start()
    await researcher.run(until)
    worker.join()
    for m in (planner.monitor, researcher.monitor):
        m.close()  # sends a final report
    print(f"planner: {planner.monitor.stats()}\nresearcher: {researcher.monitor.stats()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Two instrumented agents (see the module text).")
    ap.add_argument("--secs", type=float, default=30.0)
    ap.add_argument("--endpoint", default=None, help="node agent's monitor endpoint")
    args = ap.parse_args()
    asyncio.run(main(args.secs, args.endpoint))
