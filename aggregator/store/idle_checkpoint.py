"""When to fold the WAL while ingest is idle: a small install should not carry MiBs of WAL.

The maintenance round checkpoints at its start only when the measured cost of a checkpoint fits
its budget (forced from `rounds.CHECKPOINT_FORCE_WAL`), so on a loaded machine a young install
carried 0.7-7.3 MiB of WAL at any time (docs/peers.md, "File on disk"). A checkpoint cannot be
split and holds the writer; it only hurts ingest when batches are waiting. So after each round
(light or maintenance) the store also checkpoints once the WAL holds `CHECKPOINT_IDLE_WAL`, if
the writer spent at most `IDLE_BUSY_SHARE` of the time since the previous round inside writes
(no backlog: under load the writes run back to back and the budgeted rule alone applies).
Time is the store's timer (monotonic in service; the simulated clock in benches and tests).
"""

from __future__ import annotations

CHECKPOINT_IDLE_WAL = 1 << 20
"""From this WAL size (bytes) an idle writer checkpoints after its round, whatever the budget
(the budgeted rule's floor, `rounds.CHECKPOINT_MIN_WAL`). 256 KiB was measured too: WAL mean 0.12
instead of 0.47 MiB, but a checkpoint about four times as often, each costing about the same
(mostly fixed), and writes' p99 stall higher (docs/peers.md, "File on disk")."""
IDLE_BUSY_SHARE = 0.25
"""The writer counts as idle when writes took at most this share of the time since the last
round."""


class WriterLoad:
    """Time the writer spent inside writes since the last round, as a share of the time since."""

    __slots__ = ("_since", "_busy")

    def __init__(self, now_s: float) -> None:
        self._since = now_s
        self._busy = 0.0

    def note_write(self, seconds: float) -> None:
        """Add one write's duration."""
        self._busy += max(0.0, seconds)

    def idle(self, now_s: float) -> bool:
        """Whether the writer was idle enough since the last call (which starts a new window)."""
        span = now_s - self._since
        busy, self._since, self._busy = self._busy, now_s, 0.0
        return span > 0 and busy <= IDLE_BUSY_SHARE * span
