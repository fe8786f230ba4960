"""At low rates the ingest writer gathers batches for up to `aggregator.commit_max_delay_ms`
after a group's first one, so that several share one commit (a commit's cost is nearly all
fixed); a group of `GATHER_POINTS` or more is committed as without the delay, and acks still
follow the commit. Real aggregator, Curve peers and DuckDB; commits are observed through the
store's commit notices (which nodes each commit stored)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator import ingest
from legion.aggregator.config import AggregatorConfig
from legion.aggregator.ingest import GATHER_POINTS, gather_wait
from legion.aggregator.store.commits import CommitNotice
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.errors import ConfigError
from legion.proto import MetricsBatch
from tests.aggregator.curve_peer import aggregator_with_peers
from tests.conftest import make_setup, wait_for

NODE = "web-1"
# Gathering must stay within 3/4 of the agents' earliest resend (config rule); the peers here
# resend nothing, and a 10 s resend leaves room for the 5-6 s delays below.
ROOM = {"resend_timeout_secs": 10.0}


@pytest.fixture(autouse=True)
def _no_self_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aggregator's own batch (every 5 s) would open a group of its own at a random moment:
    kept out of the way so that which batches share a commit is decided by the test alone."""
    monkeypatch.setattr(ingest, "SELF_METRICS_SECS", 3600.0)


def points_batch(n: int) -> MetricsBatch:
    """`n` points of 10 series (`gather_value{id}`), one timestamp per point."""
    ts = int(time.time() * 1000) - n
    return MetricsBatch(("gather_value",), tuple((("id", str(i)),) for i in range(10)),
                        np.zeros(n, np.uint32), (np.arange(n) % 10).astype(np.uint32),
                        np.ones(n), np.arange(ts, ts + n, dtype=np.int64))


def test_gather_wait() -> None:
    assert gather_wait(10.0, 9.5, 116, 2.0) == pytest.approx(1.5)
    assert gather_wait(12.0, 9.5, 116, 2.0) < 0  # waited long enough
    assert gather_wait(10.0, 9.5, GATHER_POINTS, 2.0) == 0  # a full group does not wait
    assert gather_wait(10.0, 9.5, 116, 0.0) == 0  # 0 = off


def test_the_key_is_checked() -> None:
    assert AggregatorConfig().commit_max_delay_ms == 3_000
    assert AggregatorConfig(commit_max_delay_ms=0).validate() == []
    assert "aggregator.commit_max_delay_ms" in AggregatorConfig(
        commit_max_delay_ms=-1).validate()[0]


def test_a_bad_value_is_refused_with_its_key_path(tmp_path: Path) -> None:
    path = make_setup(tmp_path / "legion", aggregator={"commit_max_delay_ms": 120_000})
    with pytest.raises(ConfigError, match="aggregator.commit_max_delay_ms"):
        load_config(path)


def _commits_of(delay_ms: int, tmp_path: Path, sizes: list[int], gap_s: float
                ) -> tuple[list[frozenset[int]], set[int]]:
    """Send one batch per size (seqs 2..) `gap_s` apart from a connected peer; return the seqs
    of each commit that stored any of them, and the seqs acked."""
    cfg = load_config(make_setup(tmp_path / "legion", agent=ROOM,
                                 aggregator={"commit_max_delay_ms": delay_ms}))
    add_agent_key(cfg, NODE)
    with aggregator_with_peers(cfg, NODE) as (agg, (peer,)):
        notices: list[CommitNotice] = []
        before: list[list[tuple[int, int]]] = []

        def on_commit(notice: CommitNotice) -> None:
            if NODE in notice.nodes:
                notices.append(notice)
                before.append(agg.store.stored_ranges(NODE, 1))
        agg.store.subscribe_commits(on_commit)
        seqs = list(range(2, 2 + len(sizes)))
        for seq, n in zip(seqs, sizes, strict=True):
            peer.send(seq, points_batch(n))
            peer.pump(int(gap_s * 1000))
        wait_for(lambda: (peer.pump(50), set(seqs) <= set(peer.acks["committed"]))[1],
                 timeout=60)
        acked = set(peer.acks["committed"]) & set(seqs)
        # each commit's seqs: what the stored ranges gained in it
        out: list[frozenset[int]] = []
        have: set[int] = {1}
        for ranges in before:
            now = {s for lo, hi in ranges for s in range(lo, hi + 1)}
            if now - have:
                out.append(frozenset(now - have))
            have = now
        return out, acked


def test_low_rate_batches_share_one_commit(tmp_path: Path) -> None:
    commits, acked = _commits_of(3_000, tmp_path, [116, 116, 116], gap_s=0.2)
    assert acked == {2, 3, 4}
    assert commits == [frozenset({2, 3, 4})]


def test_without_the_delay_each_batch_is_committed_at_once(tmp_path: Path) -> None:
    commits, acked = _commits_of(0, tmp_path, [116, 116, 116], gap_s=0.5)
    assert acked == {2, 3, 4}
    assert commits == [frozenset({2}), frozenset({3}), frozenset({4})]


def test_a_full_group_does_not_wait(tmp_path: Path) -> None:
    # the first batch alone fills a group: committed without waiting for the second
    commits, acked = _commits_of(5_000, tmp_path, [GATHER_POINTS, 116], gap_s=0.5)
    assert acked == {2, 3}
    assert commits[0] == frozenset({2})


def test_a_gathering_batch_is_in_the_query_head_before_its_commit(tmp_path: Path) -> None:
    cfg = load_config(make_setup(tmp_path / "legion", agent=ROOM,
                                 aggregator={"commit_max_delay_ms": 6_000}))
    add_agent_key(cfg, NODE)
    with aggregator_with_peers(cfg, NODE) as (agg, (peer,)):
        peer.send(2, points_batch(20))  # its series are new: stored at its commit
        wait_for(lambda: (peer.pump(50), 2 in peer.acks["committed"])[1], timeout=60)
        now = int(time.time() * 1000)
        q = {"metric": "gather_value", "agg": "count", "step_ms": 60_000, "group_by": "*",
             "since_ms": now - 600_000, "until_ms": now + 600_000}
        agg.store.query(**q)  # loads the head

        def points() -> float | None:
            rows = agg.store.query_now(**q)
            return None if rows is None else sum(r["value"] for r in rows)
        wait_for(lambda: points() == 20, timeout=30)
        peer.send(3, points_batch(20))  # known series: into the head as the writer takes it
        wait_for(lambda: points() == 40, timeout=30)
        peer.pump(50)
        assert 3 not in peer.acks["committed"]  # the group is still gathering
        wait_for(lambda: (peer.pump(50), 3 in peer.acks["committed"])[1], timeout=60)
        assert points() == 40  # not fed again at the commit
