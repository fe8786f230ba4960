"""Several aggregators: which one the agent sends to, when to fail over, and when to fail back.

The agent lists aggregators in order of preference (`agent.aggregator_endpoints`, with
`agent.ack_endpoints` at the same positions). It sends to one at a time and listens for acks
from all of them, so an ack still in flight from the previous aggregator is never missed.

* **Fail over** to the next endpoint when batches have waited longer than
  `failover_after_secs` and no ack arrived for as long (since the last switch, too).
* **Fail back** to the first endpoint once a probe socket completes a Curve handshake with it
  (the aggregator is up and accepts this agent's key), at most once per `failback_probe_secs`.

Nothing is lost or sent twice by a switch: unacknowledged batches stay in the spool and are
resent to whichever aggregator is active, at once after a failover. After a failback they are
resent only when their own timers run out: the aggregator left behind is alive and may still be
gathering them into a commit (`aggregator.commit_max_delay_ms`, kept below the earliest resend),
and its acks still count. Each aggregator stores a batch once (its own exactly-once
bookkeeping). Limit (README "Scale-out"): a batch that aggregator A committed but had not
checkpointed when it died is resent after `checkpoint_timeout` (60 s); if A is not back and
active by then, aggregator B stores it too, so across aggregators delivery is at-least-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

Endpoint = tuple[str, str]
"""(ingest endpoint, ack endpoint) of one aggregator."""


def endpoints_of(agent_cfg: Any) -> list[Endpoint]:
    """The ordered aggregator list; the single `aggregator_endpoint` when no list is given."""
    if agent_cfg.aggregator_endpoints:
        return list(zip(agent_cfg.aggregator_endpoints, agent_cfg.ack_endpoints, strict=True))
    return [(agent_cfg.aggregator_endpoint, agent_cfg.ack_endpoint)]


class Failover:
    """Decides the active endpoint; `probe_socket` is made by the caller (it owns the context)."""

    def __init__(self, endpoints: list[Endpoint], failover_after: float, failback_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoints = endpoints
        self.failover_after = failover_after
        self.failback_after = failback_after
        self.clock = clock
        self.active = 0
        self.switched_at = clock()
        self._last_ack = self.switched_at
        self._probe: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self.counters = {"failovers_total": 0, "failbacks_total": 0}
        self.last_switch = ""  # "failover" or "failback": the reason of the latest switch

    def on_ack(self) -> None:
        """An ack arrived (from any aggregator)."""
        self._last_ack = self.clock()

    def decide(self, oldest_unacked_age: float,
               make_probe: Callable[[str], zmq.Socket[Any]]) -> int | None:
        """The index to switch to now, or None to stay."""
        now = self.clock()
        if len(self.endpoints) < 2:
            return None
        quiet = now - max(self._last_ack, self.switched_at)
        if oldest_unacked_age > self.failover_after and quiet > self.failover_after:
            self.counters["failovers_total"] += 1
            self.last_switch = "failover"
            return self._switch((self.active + 1) % len(self.endpoints), now)
        if self.active != 0 and now - self.switched_at >= self.failback_after:
            if self._probe is None:
                self._probe = make_probe(self.endpoints[0][0])
                self._monitor = self._probe.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            if self._handshake_seen():
                self.counters["failbacks_total"] += 1
                self.last_switch = "failback"
                return self._switch(0, now)
        return None

    def _handshake_seen(self) -> bool:
        # Imported here: zmq.utils.monitor loads asyncio and ssl (~4 MiB of RSS, issue 17), and
        # only an agent failed over to a second aggregator ever probes.
        from zmq.utils.monitor import recv_monitor_message

        assert self._monitor is not None
        seen = False
        while self._monitor.poll(0):
            msg = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            seen = seen or msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        return seen

    def _switch(self, index: int, now: float) -> int:
        self.close_probe()
        self.active = index
        self.switched_at = now
        return index

    def close_probe(self) -> None:
        """Close the failback probe (idempotent)."""
        if self._probe is not None:
            self._probe.disable_monitor()
            assert self._monitor is not None
            self._monitor.close(linger=0)
            self._probe.close(linger=0)
        self._probe = self._monitor = None
