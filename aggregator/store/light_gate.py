"""When a light round may skip materialising and packing: nothing settled since one found
nothing to do (issue 17: the idle aggregator's cost).

A light round runs every `rollup_interval_ms` (5 s). Its rollup pass works from the writer's
in-memory dirty minutes and costs no statement when no minute has settled; materialising
(1h/1d) and packing, though, asked DuckDB ~11 small statements per round (tier_state marks,
`min(bucket)`, `EXISTS late_points`, ...) to find, nearly every time, that no hour had settled.

Their work appears only when (a) a new hour settles (the settled time, clock or newest data
minus the settle time, crosses an hour), or (b) a rollup pass recomputes minutes (late data
in an older hour, or the minutes that let an hour settle). So after a round in which rollup,
materialising and packing all did nothing, later light rounds skip the two while the settled
hour is the same and their rollup pass did nothing. Anything else (late rows of packed windows
waiting in `late_points`, a bucket a light round's budget did not fit) is done by the next
maintenance round, which always runs every step (`maintenance_interval_secs`, 60 s), as it
did before; a maintenance round also re-arms the full light round.
"""

from __future__ import annotations

from legion.aggregator.store.chunk_tables import HOUR_MS


class LightRoundGate:
    """Remembers the settled hour at which a light round last found nothing to do."""

    def __init__(self) -> None:
        self._idle_hour: int | None = None
        self.skipped = 0  # light rounds that skipped materialising and packing

    def may_skip(self, rolled_minutes: int, settled_ms: int) -> bool:
        """Whether this light round may skip materialising and packing."""
        if rolled_minutes == 0 and self._idle_hour == settled_ms // HOUR_MS:
            self.skipped += 1
            return True
        return False

    def done(self, did_work: bool, settled_ms: int) -> None:
        """After a full light round: idle from now on if it did nothing at all."""
        self._idle_hour = None if did_work else settled_ms // HOUR_MS

    def rearm(self) -> None:
        """The next light round runs in full (after a maintenance round)."""
        self._idle_hour = None
