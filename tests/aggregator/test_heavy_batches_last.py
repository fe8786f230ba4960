"""A batch that brings many new series is committed after the rest of its group, in a commit of
its own, so the other nodes' batches of that group are stored and acked without waiting for its
series to be created. Real `IngestWriter`, allowlist and DuckDB; the frames go straight into the
writer's queue before it starts, so that they land in one group (through sockets, which group a
frame joins is a matter of timing)."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import zmq

from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.commit_groups import HEAVY_NEW_SERIES
from legion.aggregator.ingest import IngestWriter
from legion.aggregator.receiver import Frame, Inbound
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store.commits import CommitNotice
from legion.aggregator.telemetry import IngestTelemetry
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.curve import load_public, load_secret
from legion.proto import Envelope, MetricsBatch, encode
from tests.aggregator.curve_peer import series_batch
from tests.conftest import make_setup, wait_for


def frame(sender: bytes, node: str, seq: int, batch: MetricsBatch) -> Frame:
    data = encode(Envelope("metrics", node, 1, seq, int(time.time() * 1000), batch))
    return Frame(data, sender, int(time.time() * 1000), len(data))


def test_a_batch_with_many_new_series_is_committed_after_the_rest_of_its_group(
        tmp_path: Path) -> None:
    cfg = load_config(make_setup(tmp_path / "legion", aggregator={
        "max_series_per_node": 0, "max_series_per_metric": 0}))
    senders = {n: load_public(add_agent_key(cfg, n)[1]) for n in ("flood", "quiet")}
    settings = cfg.aggregator_settings()
    store = Store(tmp_path / "legion.duckdb")
    quiet = series_batch("quiet_value", 0, 3)
    store.write([IncomingBatch("quiet", 1, 1, quiet, 0)])  # the quiet node's series exist
    notices: list[CommitNotice] = []
    store.subscribe_commits(notices.append)
    inbox: queue.Queue[Inbound] = queue.Queue()
    inbox.put(frame(senders["flood"], "flood", 1,
                    series_batch("flood_value", 0, 5 * HEAVY_NEW_SERIES)))
    inbox.put(frame(senders["quiet"], "quiet", 2, series_batch("quiet_value", 0, 3)))
    ctx: zmq.Context[zmq.Socket[object]] = zmq.Context()
    registry = KeyRegistry(Path(settings.aggregator.authorized_keys_dir))
    writer = IngestWriter(ctx, settings, load_secret(Path(settings.aggregator.secret_key_path)),
                          registry, inbox, store, IngestTelemetry())
    writer.start()
    try:
        wait_for(lambda: len(notices) >= 2, timeout=60)
    finally:
        writer.stop()
        writer.join(30)
        ctx.term()
    try:
        first, second = notices[0].nodes, notices[1].nodes
        assert "quiet" in first and "flood" not in first, notices
        assert second == {"flood"}
        assert store.stored_ranges("quiet", 1) == [(1, 2)]
        assert store.stored_ranges("flood", 1) == [(1, 1)]
        assert len(store.series(node="flood")) == 5 * HEAVY_NEW_SERIES
        assert writer.budget.cost_per_series_s > 0
    finally:
        store.close()
