"""A flood of new series from one node never holds another node's batches: per-commit work is
bounded (`commit_budget.py`), and a group that is full still takes what the other senders have
waiting (`fair_inbox.py`). Real aggregator, real Curve sockets on loopback, real DuckDB."""

from __future__ import annotations

import queue
from pathlib import Path
from types import SimpleNamespace


from legion.aggregator.commit_budget import MIN_CAP, CommitBudget
from legion.aggregator.fair_inbox import FairInbox
from legion.cli.config import load_config
from tests.aggregator.curve_peer import flood_and_quiet, series_batch
from tests.conftest import make_setup, wait_for

FLOOD = 40
PER_BATCH = 1000


def test_quiet_batches_with_new_series_are_committed_before_the_flood_is_through(
        tmp_path: Path) -> None:
    """Limits off (the worst case): 40 x 1,000 new series, then a quiet node's batches, each
    with a new series of its own. Every quiet batch is committed while flood batches still
    wait: before, a full group closed on the flood, and a quiet batch that brought a series
    was put off group after group (in a first version: until the flood was over)."""
    cfg = load_config(make_setup(tmp_path / "legion", aggregator={
        "max_series_per_node": 0, "max_series_per_metric": 0}))
    with flood_and_quiet(cfg) as (agg, flood, quiet):
        for seq in range(2, FLOOD + 2):
            flood.send(seq, series_batch("flood_value", seq * PER_BATCH, PER_BATCH))
        wait_for(lambda: (flood.pump(20), flood.acks["committed"])[1], 60)  # flood under way
        for seq in range(2, 7):
            quiet.send(seq, series_batch(f"quiet_value_{seq}", 0, 1))
        wait_for(lambda: (flood.pump(20), quiet.pump(20),
                          len(flood.acks["committed"]) == FLOOD + 1 and
                          len(quiet.acks["committed"]) == 6)[2], 180)
        last_flood = max(flood.acks["committed"].values())
        quiet_acked = [quiet.acks["committed"][s] for s in range(2, 7)]
        assert max(quiet_acked) < last_flood, "a quiet batch waited for the whole flood"
        assert len(agg.store.series(node="flood")) == 1 + FLOOD * PER_BATCH
        budget = agg.status()["limits"]
        assert budget["new_series_cap"] >= MIN_CAP and budget["us_per_new_series"] > 0


def test_fair_inbox_put_back_goes_first_and_skip_passes_senders_over() -> None:
    src: queue.Queue[SimpleNamespace] = queue.Queue()
    for sender, n in [(b"a", 1), (b"a", 2), (b"b", 1), (b"c", 1)]:
        src.put(SimpleNamespace(sender=sender, n=n))
    inbox: FairInbox[SimpleNamespace] = FairInbox(src)
    first = inbox.get(0.1)
    assert (first.sender, first.n) == (b"a", 1)
    assert inbox.get(0.1).sender == b"b"  # round-robin
    inbox.put_back(first)  # did not fit: it opens the next group
    again = inbox.get(0.1, skip={b"c"})
    assert (again.sender, again.n, inbox.senders()) == (b"a", 1, 2)
    got = inbox.get(0.0, skip={b"a"})
    assert got.sender == b"c"
    try:
        inbox.get(0.0, skip={b"a"})  # only a skipped sender has items
        raise AssertionError("expected queue.Empty")
    except queue.Empty:
        pass
    last = inbox.get(0.0)
    assert (last.sender, last.n) == (b"a", 2)
    assert inbox.empty()


def test_commit_budget_learns_the_cost_of_new_series() -> None:
    budget = CommitBudget(interval_s=1.0)  # half of it for new series
    start = budget.cap()
    for _ in range(20):
        budget.observe(0.010, 0)  # commits of points only: 10 ms
    for _ in range(20):
        budget.observe(0.010 + 1000 * 100e-6, 1000)  # 100 us per new series
    assert abs(budget.cost_per_series_s - 100e-6) < 10e-6
    assert budget.cap() == int((0.5 - budget.base_s) / budget.cost_per_series_s) < start
    for _ in range(20):
        budget.observe(5.0, 1000)  # a box so slow that nothing fits: still progress
    assert budget.cap() == MIN_CAP
