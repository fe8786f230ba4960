"""Scale-out with real processes: aggregators with a remote-write sink into a real
VictoriaMetrics / Prometheus, the remote store stopped mid-stream, the aggregator killed with -9
while the sink has a backlog, an agent failing over between two aggregators and back, and
`legionctl query` through the remote store."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from legion.aggregator.sinks.prompb import series_labels
from legion.aggregator.store import Store
from legion.cli.client import ApiClient, resolve_token
from legion.cli.config import load_config
from legion.cli.setup_cmds import use_free_ports
from legion.kernel.errors import LegionError
from tests.aggregator.remote_peers import Peer
from tests.conftest import LEGIONCTL, wait_for
from tests.legion.test_lose_nothing import drained, last_allocated, setup

pytestmark = pytest.mark.timeout(240)

OUTAGE_SECS = 10.0  # the "a minute", shortened: the same mechanism (40 ticks)


@pytest.fixture
def peers() -> Any:
    started: list[Peer] = []
    yield started
    for p in started:
        p.stop()


def rw(peer: Peer) -> dict[str, Any]:
    return {"remote_write": [{"name": "remote", "url": peer.write_url, "shards": 2,
                              "min_backoff_secs": 0.1, "max_backoff_secs": 1.0}]}


def status(cfg_path: Path) -> dict[str, Any]:
    cfg = load_config(cfg_path)
    try:
        return ApiClient(cfg, resolve_token(cfg, None), timeout=10).get("/api/v1/status")
    except LegionError:
        return {}


def sink_status(cfg_path: Path) -> dict[str, Any]:
    return status(cfg_path).get("sinks", {}).get("remote", {})


def local_points(cfg_path: Path, node: str) -> dict[tuple[tuple[str, str], ...], list]:
    cfg = load_config(cfg_path)
    store = Store(cfg.path(cfg.storage.db_path), cfg.storage)
    try:
        out = {}
        for s in store.series(node=node):
            rows = store.query(s["metric"], node=node, labels=s["labels"])
            key = tuple(series_labels(node, s["metric"], tuple(sorted(s["labels"].items()))))
            out[key] = [(r["ts_ms"], r["value"]) for r in rows
                        if r["labels"] == s["labels"]]  # a label filter matches a subset
        return out
    finally:
        store.close()


def assert_remote_equals_local(cfg_path: Path | list[Path], peer: Peer, node: str,
                               may_repeat: bool = False) -> int:
    """Every point of `node` stored locally (by one aggregator, or by several together) is in
    the remote store exactly once (at least once if `may_repeat`), with the same value."""
    want: dict[tuple[tuple[str, str], ...], list] = {}
    for cfg in cfg_path if isinstance(cfg_path, list) else [cfg_path]:
        for key, pts in local_points(cfg, node).items():
            want[key] = sorted(want.get(key, []) + pts)
    lo = min(t for pts in want.values() for t, _ in pts) - 1000
    hi = max(t for pts in want.values() for t, _ in pts) + 1000
    n = sum(len(v) for v in want.values())
    deadline = time.monotonic() + 30
    while True:  # the remote store may need a moment before new samples are searchable
        got = peer.raw(f'{{node="{node}"}}', lo, hi)
        if sum(len(v) for v in got.values()) >= n or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(got) == set(want)
    for key, pts in want.items():
        ts = [t for t, _ in got[key]]
        dups = sorted({t for t in ts if ts.count(t) > 1})
        assert may_repeat or not dups, f"{key}: samples stored twice at {dups[:5]}"
        ts = sorted(set(ts))
        lost = sorted(set(t for t, _ in pts) - set(ts))
        assert not lost, f"{key}: {len(lost)} of {len(pts)} lost, first {lost[:5]}, " \
                         f"range {pts[0][0]}..{pts[-1][0]}"
        assert ts == [t for t, _ in pts], f"{key}: extra samples"
        values = dict(got[key])
        assert [values[t] for t, _ in pts] == pytest.approx([v for _, v in pts], rel=1e-11)
    return n


def finish(cfg: Path, agent: Any, procs: Any) -> None:
    """Stop the agent, restart it until every batch it made is stored (it resends what is still
    unacknowledged), stop it again, and wait until the sink's queue is empty."""
    assert agent.stop() == 0
    want = {"n1": last_allocated(cfg, "n1")}
    again = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1-again")
    wait_for(lambda: drained(cfg, want), timeout=90, interval=1)
    assert again.stop() == 0
    wait_for(lambda: (s := sink_status(cfg)) and s["queue_records"] == 0, timeout=60,
             interval=1)


def test_remote_store_down_then_back_loses_and_duplicates_nothing(tmp_path: Path, procs,
                                                                 peers: list[Peer]) -> None:
    # No deduplication in the receiver: a duplicate would show. (A request cut off by the
    # receiver's shutdown could legitimately come twice; the test then says so, see below.)
    vm = Peer("victoria-metrics", tmp_path / "vm", dedup=False).start()
    peers.append(vm)
    cfg = setup(tmp_path, ["n1"], sinks=rw(vm))
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    agent = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1")
    wait_for(lambda: sink_status(cfg).get("samples_sent_total", 0) > 0, timeout=60, interval=1)
    vm.stop()
    time.sleep(OUTAGE_SECS)
    during = status(cfg)
    # Contract: the sink's durable queue holds the backlog, not the agents' spools.
    assert during["sinks"]["remote"]["queue_records"] > 0
    assert during["sinks"]["remote"]["samples_retried_total"] > 0
    assert during["sinks"]["remote"]["lag_seconds"] > OUTAGE_SECS / 2
    assert during["agents"]["n1"]["unacked_batches"] < 20
    vm.start()
    time.sleep(1)
    finish(cfg, agent, procs)
    # the sink's self-metrics: on /metrics, and stored like any series (node `aggregator`)
    text = metrics_text(cfg)
    assert 'legion_aggregator_sink_samples_sent_total{sink="remote"}' in text
    assert 'legion_aggregator_sink_queue_records{sink="remote"} 0' in text
    stored = wait_for(lambda: query_json(cfg, "legion_aggregator_sink_samples_retried_total",
                                         "--node", "aggregator"), timeout=30, interval=1)
    assert {r["labels"]["sink"] for r in stored} == {"remote"} and stored[-1]["value"] > 0
    # A request whose connection broke (the receiver went away) has an unknown outcome and is
    # sent again: only then may a sample arrive twice.
    unknown = sink_status(cfg)["requests_outcome_unknown_total"]
    assert agg.stop() == 0
    assert assert_remote_equals_local(cfg, vm, "n1", may_repeat=unknown > 0) > 100


def metrics_text(cfg_path: Path) -> str:
    import urllib.request

    cfg = load_config(cfg_path)
    cli = ApiClient(cfg, resolve_token(cfg, None))
    req = urllib.request.Request(cli.base + "/metrics",
                                 headers={"Authorization": f"Bearer {cli.token}"})
    with urllib.request.urlopen(req, timeout=10, context=cli._ssl) as r:
        return r.read().decode()


def query_json(cfg_path: Path, metric: str, *args: str) -> list[dict]:
    r = subprocess.run(LEGIONCTL + ["query", metric, *args, "--config", str(cfg_path),
                                    "--format", "json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_aggregator_killed_with_a_sink_backlog_loses_nothing(tmp_path: Path, procs,
                                                            peers: list[Peer]) -> None:
    # Not started yet: everything queues. No deduplication in the receiver: the sink must not
    # send anything twice here (no request is cut off by a receiver going away).
    vm = Peer("victoria-metrics", tmp_path / "vm", dedup=False)
    peers.append(vm)
    cfg = setup(tmp_path, ["n1"], sinks=rw(vm))
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    agent = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1")
    wait_for(lambda: sink_status(cfg).get("queue_records", 0) > 10, timeout=60, interval=1)
    agg.kill9()
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg-again")
    wait_for(lambda: sink_status(cfg).get("queue_records", 0) > 10, timeout=60, interval=1)
    vm.start()
    finish(cfg, agent, procs)
    assert agg.stop() == 0
    assert assert_remote_equals_local(cfg, vm, "n1") > 50


def second_aggregator(first: Path, directory: Path) -> Path:
    """A copy of the first setup (same keys, allowlist and tokens) on its own ports and files."""
    shutil.copytree(first.parent, directory)
    path = directory / first.name
    raw = json.loads(path.read_text().replace(json.dumps(str(first.parent))[1:-1],
                                              json.dumps(str(directory))[1:-1]))
    use_free_ports(raw, agent=False)  # the agent keeps pointing at the first
    path.write_text(json.dumps(raw, indent=2))
    return path


def stored_seqs(cfg_path: Path, node: str) -> list[int]:
    cfg = load_config(cfg_path)
    con = duckdb.connect(str(cfg.path(cfg.storage.db_path)), read_only=True)
    try:
        return [r[0] for r in con.execute(
            "SELECT seq FROM batches WHERE node = ? ORDER BY seq", [node]).fetchall()]
    finally:
        con.close()


def nodes_of(cfg_path: Path) -> dict[str, dict]:
    out = subprocess.run(LEGIONCTL + ["nodes", "--config", str(cfg_path), "--format", "json"],
                         capture_output=True, text=True, timeout=30)
    return {n["node"]: n for n in json.loads(out.stdout)} if out.returncode == 0 else {}


def test_agent_fails_over_to_a_second_aggregator_and_back(tmp_path: Path, procs,
                                                          peers: list[Peer]) -> None:
    # Both aggregators forward to one remote store (no deduplication there: nothing may arrive
    # twice), as aggregators sharded by site would.
    vm = Peer("victoria-metrics", tmp_path / "vm", dedup=False).start()
    peers.append(vm)
    a_cfg = setup(tmp_path, ["n1"], sinks=rw(vm))
    b_cfg = second_aggregator(a_cfg, tmp_path / "b")
    a, b = json.loads(a_cfg.read_text()), json.loads(b_cfg.read_text())
    a["agent"].update(
        aggregator_endpoints=[a["aggregator"]["ingest_bind"], b["aggregator"]["ingest_bind"]],
        ack_endpoints=[a["aggregator"]["ack_bind"], b["aggregator"]["ack_bind"]],
        failover_after_secs=5.0, failback_probe_secs=3.0)
    a_cfg.write_text(json.dumps(a, indent=2))
    agg_a = procs("aggregator", "run", "--config", str(a_cfg), name="agg-a")
    agg_b = procs("aggregator", "run", "--config", str(b_cfg), name="agg-b")
    wait_for(lambda: status(a_cfg) and status(b_cfg), timeout=60, interval=0.5)
    agent = procs("agent", "run", "--config", str(a_cfg), "--node", "n1", name="n1")
    wait_for(lambda: nodes_of(a_cfg).get("n1", {}).get("last_seq", 0) > 8, timeout=60,
             interval=1)
    assert "n1" not in nodes_of(b_cfg)  # the first endpoint is preferred
    assert agg_a.stop() == 0
    wait_for(lambda: nodes_of(b_cfg).get("n1", {}).get("last_seq", 0) > 8, timeout=60,
             interval=1)  # failed over
    agg_a = procs("aggregator", "run", "--config", str(a_cfg), name="agg-a-again")
    b_seen = nodes_of(b_cfg)["n1"]["last_seq"]
    wait_for(lambda: nodes_of(a_cfg).get("n1", {}).get("last_seq", 0) > b_seen + 8,
             timeout=60, interval=1)  # failed back
    # Stop the agent once A has stored batches past a full checkpoint period of B (10 s) after
    # the failback, so B's checkpoint acks have freed what B committed. (Restarting the agent
    # instead would resend B's committed-but-unacknowledged batches to A: the documented
    # per-aggregator limit.)
    a_now = nodes_of(a_cfg)["n1"]["last_seq"]
    wait_for(lambda: nodes_of(a_cfg)["n1"]["last_seq"] > a_now + 50, timeout=90, interval=1)
    assert agent.stop() == 0
    epoch, last = last_allocated(a_cfg, "n1")
    left = spooled_seqs(a_cfg, "n1", epoch)  # not acknowledged yet: still on the agent's disk
    for cfg in (a_cfg, b_cfg):
        wait_for(lambda c=cfg: (s := sink_status(c)) and s["queue_records"] == 0, timeout=60,
                 interval=1)
    assert agg_a.stop() == 0 and agg_b.stop() == 0
    # each aggregator's own view: no batch stored twice, and together they hold every batch
    seqs_a, seqs_b = stored_seqs(a_cfg, "n1"), stored_seqs(b_cfg, "n1")
    assert len(seqs_a) == len(set(seqs_a)) and len(seqs_b) == len(set(seqs_b))
    assert seqs_b and seqs_a[0] == 1
    assert not set(seqs_a) & set(seqs_b), "a batch was stored by both aggregators"
    assert set(range(1, last + 1)) <= set(seqs_a) | set(seqs_b) | left, "a batch is lost"
    assert len(set(range(1, last + 1)) - set(seqs_a) - set(seqs_b)) < 10  # the unacked tail
    # the shared remote store holds what both stored, each sample once
    assert assert_remote_equals_local([a_cfg, b_cfg], vm, "n1") > 100


def spooled_seqs(cfg_path: Path, node: str, epoch: int) -> set[int]:
    """Seqs still in a stopped agent's spool."""
    from legion.kernel.spool.spool import Spool

    cfg = load_config(cfg_path)
    spool = Spool(cfg.path(cfg.agent.state_dir) / node / "spool", epoch=epoch)
    try:
        return {seq for ep, seq, _ts in spool.pending_keys() if ep == epoch}
    finally:
        spool.close()


def test_legionctl_query_remote_equals_local(tmp_path: Path, procs, peers: list[Peer]) -> None:
    prom = Peer("prometheus", tmp_path / "prom").start()
    peers.append(prom)
    # Local and remote are compared right after the agent stops; `setup` commits each batch at
    # once (no gathering), so none of its last batches is still waiting for a commit.
    cfg = setup(tmp_path, ["n1"], sinks=rw(prom))
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg")
    agent = procs("agent", "run", "--config", str(cfg), "--node", "n1", name="n1")
    wait_for(lambda: sink_status(cfg).get("samples_sent_total", 0) > 200, timeout=60,
             interval=1)
    finish(cfg, agent, procs)
    now = int(time.time() * 1000) // 10_000 * 10_000 + 10_000
    since = now - 300_000
    queries = [["query", "system_cpu_usage_percent", "--node", "n1"],
               ["query", "system_memory_free_bytes", "--node", "n1"],
               ["query", "system_cpu_usage_percent", "--node", "n1", "--step", "5s",
                "--agg", "max"],
               ["query", "system_load1", "--step", "10s", "--agg", "avg"]]

    def run_all() -> list[list[dict]]:
        out = []
        for q in queries:
            r = subprocess.run(LEGIONCTL + q + ["--since", str(since), "--until", str(now),
                                                "--config", str(cfg), "--format", "json"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            out.append(json.loads(r.stdout))
        return out

    local = run_all()
    assert all(local), "every query has points locally"
    assert agg.stop() == 0
    raw = json.loads(cfg.read_text())
    raw["storage"]["remote_read_url"] = prom.base
    cfg.write_text(json.dumps(raw, indent=2))
    agg = procs("aggregator", "run", "--config", str(cfg), name="agg-remote")
    wait_for(lambda: status(cfg), timeout=30, interval=0.5)
    remote = run_all()
    for q, lo, re_ in zip(queries, local, remote, strict=True):
        key = lambda r: (r["node"], sorted(r["labels"].items()), r["ts_ms"])  # noqa: E731
        lo, re_ = sorted(lo, key=key), sorted(re_, key=key)
        assert [key(r) for r in re_] == [key(r) for r in lo], q
        assert [r["value"] for r in re_] == pytest.approx([r["value"] for r in lo]), q
        assert {r["metric"] for r in re_} == {r["metric"] for r in lo}, q
