"""Fault injection for the simulator: what each fault does, schedules, and the real burners.

| fault | effect |
|---|---|
| `slow` | every LLM and tool latency of the agent x10 (`SLOW_FACTOR`) |
| `failing` | 60% of its tasks raise; its tool calls fail 40% of the time |
| `cpu_hog` | a thread burns real CPU (sha256, GIL released) at `cpu_duty` of one core |
| `memory_leak` | holds real, touched memory: `leak_bytes_per_sec`, up to `leak_max_bytes` |
| `partition` | the agent stops working, sending messages and reporting metrics (its queue grows) |
| `token_runaway` | the agent re-prompts in a loop: 4 LLM calls per task with x12 output tokens |

All are bounded in time (`max_duration_secs`) and size, so a demo can never take the host down.
"""  # noqa: E501 - markdown table rows cannot wrap

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from legion.kernel.errors import ConfigError

FAULTS = ("slow", "failing", "cpu_hog", "memory_leak", "partition", "token_runaway")
SLOW_FACTOR = 10.0
"""How much slower a `slow` agent's LLM and tool calls are (most of its tasks then take > 5 s)."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One scheduled fault: `name` on `agent_id` from `start_secs` for `duration_secs`."""

    name: str
    agent_id: str
    start_secs: float
    duration_secs: float

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse `name:agent_id:start_secs:duration_secs` (the CLI form)."""
        parts = text.split(":")
        if len(parts) != 4:
            raise ConfigError([f"fault {text!r}: expected name:agent_id:start_secs:duration_secs"])
        try:
            return cls(parts[0], parts[1], float(parts[2]), float(parts[3]))
        except ValueError as exc:
            raise ConfigError([f"fault {text!r}: {exc}"]) from exc


def demo_schedule(start_secs: float = 90.0, gap_secs: float = 150.0,
                  duration_secs: float = 90.0) -> tuple[FaultSpec, ...]:
    """One of each fault, on different agents, spaced so each stands out on its own."""
    plan = [("slow", "market-researcher"), ("failing", "qa-tester"),
            ("cpu_hog", "devops-engineer"), ("memory_leak", "data-analyst"),
            ("token_runaway", "sales-assistant"), ("partition", "support-agent")]
    return tuple(FaultSpec(n, a, start_secs + i * gap_secs, duration_secs)
                 for i, (n, a) in enumerate(plan))


def validate(name: str, agent_id: str, duration_secs: float, agent_ids: tuple[str, ...]) -> None:
    """Raise ConfigError unless the fault name, agent and duration make sense."""
    problems = []
    if name not in FAULTS:
        problems.append(f"fault: unknown name {name!r}; one of {', '.join(FAULTS)}")
    if agent_id not in agent_ids:
        problems.append(f"fault: unknown agent {agent_id!r}")
    if not duration_secs > 0:
        problems.append(f"fault: duration must be > 0 (got {duration_secs!r})")
    if problems:
        raise ConfigError(problems)


class FaultBoard:
    """Active faults per agent, and the threads that burn real CPU or hold real memory."""

    def __init__(self, cpu_duty: float = 0.5, leak_bytes_per_sec: int = 4 << 20,
                 leak_max_bytes: int = 256 << 20, max_duration_secs: float = 900.0) -> None:
        self.cpu_duty = min(max(cpu_duty, 0.05), 0.9)
        self.leak_bytes_per_sec = leak_bytes_per_sec
        self.leak_max_bytes = leak_max_bytes
        self.max_duration_secs = max_duration_secs
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str], float] = {}  # (agent, fault) -> monotonic end
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._cpu_secs: dict[str, float] = {}
        self._leaked: dict[str, int] = {}
        self._stop = threading.Event()
        self.injected = 0

    def activate(self, name: str, agent_id: str, duration_secs: float) -> None:
        """Start (or extend) a fault now."""
        end = time.monotonic() + min(duration_secs, self.max_duration_secs)
        key = (agent_id, name)
        with self._lock:
            self._until[key] = max(end, self._until.get(key, 0.0))
            self.injected += 1
            if name in ("cpu_hog", "memory_leak") and key not in self._threads:
                target = self._burn if name == "cpu_hog" else self._leak
                t = threading.Thread(target=target, args=(agent_id,), daemon=True,
                                     name=f"legion-sim-{name}-{agent_id}")
                self._threads[key] = t
                t.start()

    def active(self, agent_id: str, name: str) -> bool:
        """Is `name` active on `agent_id` right now."""
        end = self._until.get((agent_id, name))
        return end is not None and end > time.monotonic()

    def active_list(self) -> list[tuple[str, str, float]]:
        """(fault, agent_id, seconds left) for every active fault."""
        now = time.monotonic()
        with self._lock:
            return [(n, a, round(end - now, 1)) for (a, n), end in self._until.items() if end > now]

    def cpu_seconds(self, agent_id: str) -> float:
        """CPU seconds burned by `cpu_hog` on behalf of this agent so far."""
        return self._cpu_secs.get(agent_id, 0.0)

    def leaked_bytes(self, agent_id: str) -> int:
        """Bytes currently held by `memory_leak` for this agent."""
        return self._leaked.get(agent_id, 0)

    def stop(self, timeout: float = 2.0) -> None:
        """End every fault and join the burner threads."""
        self._stop.set()
        with self._lock:
            self._until.clear()
            threads = list(self._threads.values())
        threads = [t for t in threads if t is not threading.current_thread()]
        for t in threads:
            t.join(timeout)

    def _keep_going(self, agent_id: str, name: str) -> bool:
        # decided under the lock `activate` holds, so a re-activation never finds a thread
        # that is about to leave
        with self._lock:
            if not self._stop.is_set() and self.active(agent_id, name):
                return True
            self._threads.pop((agent_id, name), None)
            return False

    def _burn(self, agent_id: str) -> None:
        buf = b"\x5a" * (256 << 10)
        period = 0.02
        while self._keep_going(agent_id, "cpu_hog"):
            c0 = time.thread_time()
            t_end = time.perf_counter() + period * self.cpu_duty
            while time.perf_counter() < t_end:
                hashlib.sha256(buf).digest()  # releases the GIL: real CPU, no stall of the loop
            self._cpu_secs[agent_id] = self.cpu_seconds(agent_id) + time.thread_time() - c0
            self._stop.wait(period * (1.0 - self.cpu_duty))

    def _leak(self, agent_id: str) -> None:
        held: list[bytearray] = []
        step = 0.25
        while self._keep_going(agent_id, "memory_leak"):
            if self._leaked.get(agent_id, 0) < self.leak_max_bytes:
                n = min(int(self.leak_bytes_per_sec * step),
                        self.leak_max_bytes - self._leaked.get(agent_id, 0))
                held.append(bytearray(b"\xa5") * n)  # filled, so the pages are really resident
                self._leaked[agent_id] = self._leaked.get(agent_id, 0) + n
            self._stop.wait(step)
        held.clear()
        self._leaked[agent_id] = 0
