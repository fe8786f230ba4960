"""A cardinality flood from one node: excess refused with a typed reason, counted and acked;
another node keeps committing. Real aggregator, real Curve sockets on loopback, real DuckDB."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from legion.cli.config import config_from_dict, load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.errors import ConfigError
from tests.aggregator.curve_peer import aggregator_with_peers, flood_and_quiet, series_batch
from tests.conftest import make_setup, wait_for

PER_NODE = 2_000
PER_BATCH = 500


def test_flood_is_limited_and_the_quiet_node_keeps_committing(tmp_path: Path) -> None:
    cfg_path = make_setup(tmp_path / "legion", aggregator={"max_series_per_node": PER_NODE})
    cfg = load_config(cfg_path)
    with flood_and_quiet(cfg) as (agg, flood, quiet):
        batches = 20  # 10,000 new series against a limit of 2,000 (the probe holds one)
        for seq in range(2, batches + 2):
            flood.send(seq, series_batch("flood_value", (seq - 2) * PER_BATCH, PER_BATCH))
        seq_q = 1
        deadline = time.monotonic() + 120
        while len(flood.answered()) < batches + 1 and time.monotonic() < deadline:
            seq_q += 1
            quiet.send(seq_q, series_batch("quiet_value", 0, 3))
            flood.pump(50)
            quiet.pump(50)
        assert flood.answered() == set(range(1, batches + 2)), "every flood batch answered"
        # The first 3 batches fit (1 + 1,500 series); the 4th would pass 2,000: it and all
        # after it are refused whole, acknowledged `rejected`.
        assert set(flood.acks["committed"]) == {1, 2, 3, 4}
        assert set(flood.acks["rejected"]) == set(range(5, batches + 2))
        st = agg.status()
        assert st["ingest"]["rejected"].get("series_limit") == batches - 3
        assert st["limits"]["rejected_batches"] == {"flood": batches - 3}
        assert len(agg.store.series(node="flood")) == 1 + 3 * PER_BATCH

        # The quiet node was never held up: all its batches were committed, and its commit
        # latency during the flood is reported (timings are asserted only in bench/).
        wait_for(lambda: (quiet.pump(100), set(quiet.acks["committed"]) >=
                          set(range(1, seq_q + 1)))[1], 60)
        lat = sorted(quiet.acks["committed"][s] - quiet.sent[s] for s in range(2, seq_q + 1))
        print(f"quiet node commit latency during the flood: max {lat[-1] * 1000:.0f} ms, "
              f"median {lat[len(lat) // 2] * 1000:.0f} ms over {len(lat)} batches")

        # A node at its limit keeps feeding the series it has.
        flood.send(batches + 2, series_batch("flood_value", 0, PER_BATCH))
        wait_for(lambda: (flood.pump(100), batches + 2 in flood.acks["committed"])[1], 30)

        # Refused seqs are reported apart: `missing` still means "lost" (it stayed 17 before).
        row = next(n for n in agg.store.nodes() if n["node"] == "flood")
        assert (row["last_seq"], row["missing"], row["rejected"]) == (batches + 2, 0, batches - 3)


def test_limits_survive_a_restart(tmp_path: Path) -> None:
    """The counts come from the store at start: a restart does not reset a node's budget."""
    cfg_path = make_setup(tmp_path / "legion", aggregator={"max_series_per_node": 600})
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "flood")
    for attempt in range(2):
        with aggregator_with_peers(cfg, "flood") as (_, [peer]):
            seq = 10 + attempt
            peer.send(seq, series_batch("flood_value", attempt * 500, 500))
            wait_for(lambda: (peer.pump(100), seq in peer.answered())[1], 30)
            level = "committed" if attempt == 0 else "rejected"
            assert seq in peer.acks[level]


def test_limit_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match="aggregator.max_series_per_node"):
        config_from_dict({"aggregator": {"max_series_per_node": -1}})
    cfg = config_from_dict({"aggregator": {"max_series_per_metric": 0}})
    assert cfg.aggregator.max_series_per_metric == 0 and cfg.aggregator.max_series_per_node > 0
    assert json.dumps(cfg.aggregator.max_series_per_node)  # plain int, written by `init`
