"""The node agent's configuration: the `agent` section and what the agent is handed at start."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from legion.kernel.config import POSITIVE, Rule, check_rules, resolve_endpoint, resolve_path

RESEND_JITTER = 0.2
"""Each resend delay is scaled by a random factor in [1 - RESEND_JITTER, 1 + RESEND_JITTER]."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Node agent: where to send, which keys, where to keep state and the spool."""

    aggregator_endpoint: str = "tcp://127.0.0.1:5555"
    ack_endpoint: str = "tcp://127.0.0.1:5556"
    server_public_key_path: str = "keys/aggregator.key"
    keys_dir: str = "keys/agents"
    state_dir: str = "state"
    monitor_endpoint: str = "ipc://run/agent-monitor.sock"
    collectors: tuple[str, ...] = ()
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_sync_interval_ms: int = 2000
    resend_timeout_secs: float = 5.0
    heartbeat_interval_secs: float = 2.0
    aggregator_endpoints: tuple[str, ...] = ()  # ordered failover list (overrides the above)
    ack_endpoints: tuple[str, ...] = ()  # the ack endpoint of each, at the same positions
    failover_after_secs: float = 10.0
    failback_probe_secs: float = 15.0

    def validate(self) -> list[str]:
        """Every problem of the section, as 'agent.key: message'."""
        from legion.node_agent.collectors import COLLECTORS

        problems = check_rules(self, "agent", _RULES)
        if len(self.aggregator_endpoints or ()) != len(self.ack_endpoints or ()):
            problems.append("agent: aggregator_endpoints and ack_endpoints need one entry each "
                            f"per aggregator (got {len(self.aggregator_endpoints or ())} and "
                            f"{len(self.ack_endpoints or ())})")
        problems += [f"agent.collectors: unknown collector {n!r} (known: "
                     f"{', '.join(sorted(COLLECTORS))})"
                     for n in self.collectors or () if n not in COLLECTORS]
        return problems

    def earliest_resend_ms(self) -> int:
        """How soon an unacknowledged batch can first be resent: the timeout less its jitter."""
        return int(self.resend_timeout_secs * (1.0 - RESEND_JITTER) * 1000)

    def resolved(self, base_dir: str | Path) -> AgentConfig:
        """This section with its paths and ipc:// endpoints resolved against `base_dir`."""
        return dataclasses.replace(
            self, server_public_key_path=str(resolve_path(base_dir, self.server_public_key_path)),
            keys_dir=str(resolve_path(base_dir, self.keys_dir)),
            state_dir=str(resolve_path(base_dir, self.state_dir)),
            monitor_endpoint=resolve_endpoint(base_dir, self.monitor_endpoint))


_RULES: list[Rule] = [
    ("spool_max_bytes", lambda v: v >= 64 * 1024, "must be >= 64 KiB"),
    ("spool_sync_interval_ms", lambda v: v >= 0, "must be >= 0"),
    ("resend_timeout_secs", lambda v: v > 0, POSITIVE),
    ("failover_after_secs", lambda v: v > 0, POSITIVE),
    ("failback_probe_secs", lambda v: v > 0, POSITIVE),
    ("heartbeat_interval_secs", lambda v: 0.1 <= v <= 600, "must be in [0.1, 600]"),
]
# The seed's top-level `collection_interval` is the agent's: checked where the file is composed.
COLLECTION_INTERVAL_RULE: Rule = ("collection_interval", lambda v: v > 0 and math.isfinite(v),
                                  POSITIVE)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What a node agent is handed: its section (paths resolved) and the two values it reads."""

    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    collection_interval: float = 1.0
    max_message_bytes: int = 8 * 1024 * 1024  # the aggregator's frame limit (`aggregator.*`)
