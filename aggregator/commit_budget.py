"""How many new series one commit may create, learnt from how long commits take.

New series are most of a commit's cost (a row in `series`, an id, a shape table): a group of
batches that brings many of them makes every node's batches in that commit wait. The writer
therefore closes a group once it holds `cap()` new series, where the cap is what fits in
`share` of one commit interval at the measured cost per new series, and a batch whose new
series would pass the cap waits for the next group (unless the group holds none yet: every
group makes progress). With the round-robin inbox (`fair_inbox.py`), a quiet node's batch goes
into the next group, and no commit holds more than about `share` of an interval of another
node's new-series work, so a flood delays other nodes by at most about one commit interval.
"""

from __future__ import annotations

MIN_CAP = 500
"""Never fewer new series per commit than this. At 2,000 (before commits shrank to 4 statements
and batches with many new series got a commit of their own, `commit_groups.HEAVY_NEW_SERIES`)
the floor overrode the budget on a loaded box (2,000 x 57 us = 114 ms against 50): with 500, a
quiet node's added latency during a 100,000-series flood fell from p50/p95/max 115-121/1164-1794/
1513-2099 ms to 23-45/709-770/1009-1266 ms, the flood answered in 10.9-13.7 s against
10.6-11.0 s (2 runs each, alternating, load ~13; bench/results/ingest_parity.txt). Much lower,
every commit's fixed cost makes a flood drain slowly (at 5+ statements per commit, 91 s against
4 s for 100 x 1,000 series)."""
MAX_CAP = 20_000
FIRST_COST_S = 25e-6
"""Seconds per new series assumed before the first measurement (measured: 17-73 µs)."""
ALPHA = 0.3
"""Weight of the newest measurement in the moving averages."""
MEASURE_MIN_SERIES = 200
"""Commits with fewer new series than this say too little about their cost."""


class CommitBudget:
    """New series allowed in one commit: `share` x interval / measured seconds per series."""

    def __init__(self, interval_s: float, share: float = 0.5) -> None:
        self.budget_s = interval_s * share
        self.cost_per_series_s = FIRST_COST_S
        self.base_s = 0.0  # a commit without new series (points, bookkeeping)
        self.deferred = 0  # batches moved to a later group, for `status`

    def cap(self) -> int:
        """How many new series the group being collected may hold."""
        room = (self.budget_s - self.base_s) / self.cost_per_series_s
        return int(min(MAX_CAP, max(MIN_CAP, room)))

    def observe(self, seconds: float, new_series: int) -> None:
        """Learn from one commit: its duration and how many series it created."""
        if new_series < MEASURE_MIN_SERIES:
            if new_series == 0:
                self.base_s += ALPHA * (seconds - self.base_s)
            return
        per = max(1e-7, (seconds - self.base_s) / new_series)
        self.cost_per_series_s += ALPHA * (per - self.cost_per_series_s)

    def report(self) -> dict[str, float | int]:
        """For `status`: the current cap and what it was learnt from."""
        return {"new_series_cap": self.cap(), "budget_ms": round(self.budget_s * 1000, 1),
                "us_per_new_series": round(self.cost_per_series_s * 1e6, 1),
                "base_commit_ms": round(self.base_s * 1000, 1),
                "deferred_batches": self.deferred}
