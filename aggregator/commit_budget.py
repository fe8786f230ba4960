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

MIN_CAP = 2000
"""Never fewer new series per commit than this (~50 ms of work on an idle 2-core box): below
it, on a loaded machine, a flood took 20x longer to drain (91 s against 4 s for 100 x 1,000
series, measured) because every commit pays costs that do not shrink with its size."""
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
