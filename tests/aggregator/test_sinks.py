"""The Sink seam and the remote-write sink against a real Prometheus and a real VictoriaMetrics
(Debian packages, started on free 127.0.0.1 ports with temporary data directories)."""

from __future__ import annotations

import http.server
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from legion.aggregator.remote_query import RemoteQueryStore, query_store
from legion.aggregator.sinks import prompb
from legion.aggregator.sinks.config import RemoteWriteConfig
from legion.aggregator.sinks.remote_write import RemoteWriteSink, SinkError
from legion.aggregator.sinks.table import SINKS, SinkSet, build_sinks
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import config_from_dict
from legion.kernel.errors import ConfigError, StoreError
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.aggregator.remote_peers import Peer
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for p in started:
        p.stop()


def start_peer(peers: list[Peer], kind: str, tmp_path: Path) -> Peer:
    p = Peer(kind, tmp_path / kind).start()
    peers.append(p)
    return p


def batches(node: str, n_batches: int, per_batch: int, t0: int, seq0: int = 1
            ) -> list[IncomingBatch]:
    """Batches of a few awkward series: a dotted name, labels that need mapping, a label `node`."""
    out = []
    for b in range(n_batches):
        samples = []
        for i in range(per_batch):
            ts = t0 + (b * per_batch + i) * 100
            samples.append(Sample("app.latency-ms", canonical_labels(
                {"route": f"/r{i % 3}", "status code": "200", "node": "inner"}), float(i) / 7, ts))
            samples.append(Sample("legion_tasks_total", canonical_labels({"agent_id": "a1"}),
                                  float(b * per_batch + i), ts))
        out.append(IncomingBatch(node, 1, seq0 + b, MetricsBatch.from_samples(samples), t0))
    return out


def remote_key(node: str, metric: str, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(prompb.series_labels(node, metric, tuple(sorted(labels.items()))))


def local_points(store: Store, node: str) -> dict[tuple[tuple[str, str], ...], list]:
    out: dict[tuple[tuple[str, str], ...], list] = {}
    for s in store.series(node=node):
        rows = store.query(s["metric"], node=node, labels=s["labels"])
        out[remote_key(node, s["metric"], s["labels"])] = [(r["ts_ms"], r["value"]) for r in rows
                                                          if r["labels"] == s["labels"]]
    return out


def sink_cfg(url: str, **kw: object) -> RemoteWriteConfig:
    return RemoteWriteConfig(name="rw", url=url, **{"shards": 2, "min_backoff_secs": 0.05,
                                                    "max_backoff_secs": 0.5, **kw})


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_round_trip_values_names_labels(kind: str, tmp_path: Path, peers: list[Peer]) -> None:
    peer = start_peer(peers, kind, tmp_path)
    store = Store(tmp_path / "db.duckdb")
    sink = RemoteWriteSink(sink_cfg(peer.write_url), tmp_path / "q")
    sinks = SinkSet(store, [sink])
    sinks.start()
    try:
        t0 = (int(time.time() * 1000) - 120_000) // 1000 * 1000
        group = batches("web-1", 6, 50, t0)
        result = sinks.write(group[:3])
        assert len(result.stored) == 3
        sinks.write(group[1:])  # two repeats: the store says duplicate, nothing is re-queued
        sinks.checkpoint()
        wait_for(lambda: sink.stats()["samples_sent_total"] == 600, timeout=30)
        assert sink.stats()["samples_queued_total"] == 600
        want = local_points(store, "web-1")
        assert sum(len(v) for v in want.values()) == 600
        got = wait_for(lambda: (r := peer.raw('{node="web-1"}', t0 - 1000, t0 + 60_000))
                       and sum(len(v) for v in r.values()) >= 600 and r, timeout=30)
        # same names (mapped), labels (mapped), timestamps and values; VictoriaMetrics keeps
        # 12 significant decimal digits of a float64 (documented there), Prometheus all of it
        assert set(got) == set(want)
        for key, pts in want.items():
            assert [t for t, _ in got[key]] == [t for t, _ in pts]
            rel = 0 if kind == "prometheus" else 1e-11
            assert [v for _, v in got[key]] == pytest.approx([v for _, v in pts], rel=rel)
        names = {dict(k)["__name__"] for k in got}
        assert names == {"app_latency_ms", "legion_tasks_total"}
        some = next(dict(k) for k in got if dict(k)["__name__"] == "app_latency_ms")
        assert some["node"] == "web-1" and some["exported_node"] == "inner"
        assert some["status_code"] == "200"
    finally:
        sinks.stop()
        store.close()


def test_400_for_some_series_is_counted_and_never_blocks(tmp_path: Path,
                                                         peers: list[Peer]) -> None:
    peer = Peer("prometheus", tmp_path / "prom", out_of_order=False).start()
    peers.append(peer)
    sink = RemoteWriteSink(sink_cfg(peer.write_url, shards=1), tmp_path / "q")
    sink.start()
    try:
        now = int(time.time() * 1000) // 1000 * 1000
        first = [Sample("late_metric", (), 1.0, now), Sample("ok_metric", (), 1.0, now)]
        sink.write([IncomingBatch("n", 1, 1, MetricsBatch.from_samples(first), now)])
        wait_for(lambda: sink.stats()["samples_sent_total"] == 2, timeout=30)
        # One request: late_metric goes back in time (Prometheus answers 400 "out of order"),
        # three other series are fine and must get through.
        mixed = [Sample("late_metric", (), 2.0, now - 5000)] + [
            Sample(f"ok_{i}", (), float(i), now + 1000) for i in range(3)]
        sink.write([IncomingBatch("n", 1, 2, MetricsBatch.from_samples(mixed), now)])
        after = [Sample("after_metric", (), 9.0, now + 2000)]
        sink.write([IncomingBatch("n", 1, 3, MetricsBatch.from_samples(after), now)])
        st = wait_for(lambda: (s := sink.stats())["queue_records"] == 0
                      and s["samples_sent_total"] == 6 and s, timeout=30)
        assert st["samples_rejected_total"] == 1
        (reason, n), = st["rejected"].items()
        assert n == 1 and reason.startswith("400") and "out of order" in reason
        got = peer.raw('{node="n"}', now - 10_000, now + 5000)
        names = {dict(k)["__name__"]: v for k, v in got.items()}
        assert names["late_metric"] == [(now, 1.0)]
        assert {"ok_0", "ok_1", "ok_2", "after_metric"} <= set(names)
    finally:
        sink.stop()


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers with the next scripted status. Test double on loopback: a real Prometheus cannot
    be made to answer 429 or 503 on demand."""

    script: list[int] = []
    seen: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        status = self.script.pop(0) if self.script else 200
        self.seen.append(status)
        self.send_response(status)
        body = b"scripted: answer" if status != 200 else b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_retries_5xx_and_429_never_other_4xx(tmp_path: Path) -> None:
    _Scripted.script, _Scripted.seen = [503, 429, 500, 400], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = RemoteWriteSink(sink_cfg(f"http://127.0.0.1:{server.server_port}/w", shards=1),
                           tmp_path / "q")
    sink.start()
    try:
        now = int(time.time() * 1000)
        one = [Sample("m", (), 1.0, now)]
        sink.write([IncomingBatch("n", 1, 1, MetricsBatch.from_samples(one), now)])
        st = wait_for(lambda: (s := sink.stats())["queue_records"] == 0 and s, timeout=30)
        # 503, 429, 500 retried; the 400 rejected the (single-series) request, never retried
        assert _Scripted.seen == [503, 429, 500, 400]
        assert st["samples_retried_total"] == 3 and st["samples_sent_total"] == 0
        assert st["rejected"] == {"400 scripted": 1}
        sink.write([IncomingBatch("n", 1, 2, MetricsBatch.from_samples(one), now)])
        wait_for(lambda: sink.stats()["samples_sent_total"] == 1, timeout=30)
        assert _Scripted.seen[-1] == 200
    finally:
        sink.stop()
        server.shutdown()


def test_queue_is_bounded_drops_oldest_counted_and_survives_restart(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/v1/write"  # nobody listens: everything queues
    cfg = sink_cfg(dead, shards=1, queue_max_bytes=1 << 20)
    sink = RemoteWriteSink(cfg, tmp_path / "q")
    now = int(time.time() * 1000)
    big = [Sample(f"m{i}", (), float(i), now) for i in range(2000)]  # ~80 KB per record
    for seq in range(1, 31):
        sink.write([IncomingBatch("n", 1, seq, MetricsBatch.from_samples(big), now)])
    st = sink.stats()
    assert st["queue_bytes"] <= 1 << 20
    assert st["queue_dropped_records_total"] > 0
    assert st["queue_records"] + st["queue_dropped_records_total"] == 30
    assert st["enqueue_errors_total"] == 0
    kept = st["queue_records"]
    # one commit group far larger than a shard's queue is split into records that fit
    huge = [Sample(f"h{i}", (), float(i), now) for i in range(40_000)]  # ~1.6 MB encoded
    sink.write([IncomingBatch("n", 1, 99, MetricsBatch.from_samples(huge), now)])
    assert sink.stats()["samples_queued_total"] == 30 * 2000 + 40_000
    kept = sink.stats()["queue_records"]
    sink.stop()
    again = RemoteWriteSink(cfg, tmp_path / "q")  # a restart finds the same queue on disk
    assert again.stats()["queue_records"] == kept
    again.stop()


def test_sinkset_queues_first_and_each_new_batch_once(tmp_path: Path) -> None:
    class Refusing:
        name, kind = "refusing", "test"

        def __init__(self) -> None:
            self.ok, self.got = False, []

        def write(self, b):  # type: ignore[no-untyped-def]
            if not self.ok:
                raise SinkError("disk full")
            self.got += [x.key for x in b]

    store = Store(tmp_path / "db.duckdb")
    sink = Refusing()
    sinks = SinkSet(store, [sink])  # type: ignore[list-item]
    now = int(time.time() * 1000)
    b1 = IncomingBatch("n", 1, 1, MetricsBatch.from_samples([Sample("m", (), 1.0, now)]), now)
    with pytest.raises(SinkError):  # not queued: not stored either, and the writer acks nothing
        sinks.write([b1])
    assert store.stored_ranges("n", 1) == []
    sink.ok = True
    b2 = IncomingBatch("n", 1, 2, MetricsBatch.from_samples([Sample("m", (), 2.0, now)]), now)
    result = sinks.write([b1, b2, b2])  # the agent resent b1; b2 sent and resent in one group
    assert sorted(result.stored) == [("n", 1, 1), ("n", 1, 2)]
    sinks.write([b1, b2])  # both stored already: nothing is queued again
    assert sink.got == [("n", 1, 1), ("n", 1, 2)]
    store.close()


# bcrypt("s3cret"), cost 12, made once with crypt(3): Prometheus's web config wants a hash
S3CRET_BCRYPT = "$2b$12$CwaGzCQvUAJDQ8XgWNPsS.UVMs39vnWgORgBSLhW4apf.m130yCXW"


def test_tls_ca_and_basic_auth_from_config(tmp_path: Path, peers: list[Peer]) -> None:
    import base64
    import ssl

    from legion.aggregator.gateway.certs import create_self_signed

    cert, key = create_self_signed(tmp_path / "prom.crt", tmp_path / "prom.key")
    web = (f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
           f"basic_auth_users:\n  legion: {S3CRET_BCRYPT}\n")
    auth = "Basic " + base64.b64encode(b"legion:s3cret").decode()
    peer = Peer("prometheus", tmp_path / "prom", web_config=web, auth=auth,
                ssl_context=ssl.create_default_context(cafile=str(cert))).start()
    peers.append(peer)
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "bad").write_text("wrong\n")
    cfg = config_from_dict({"sinks": {"remote_write": [
        {"name": "good", "url": peer.write_url, "tls_ca_path": "prom.crt",
         "basic_auth_username": "legion", "basic_auth_password_file": "pw", "shards": 1},
        {"name": "bad", "url": peer.write_url, "tls_ca_path": "prom.crt",
         "basic_auth_username": "legion", "basic_auth_password_file": "bad", "shards": 1}]}},
        base_dir=tmp_path)
    store = Store(tmp_path / "db.duckdb")
    sinks = build_sinks(cfg.aggregator_settings(), store)
    sinks.start()
    try:
        now = int(time.time() * 1000)
        b = MetricsBatch.from_samples([Sample("tls_metric", (), 4.0, now)])
        sinks.write([IncomingBatch("n", 1, 1, b, now)])
        good, bad = sinks.sinks
        wait_for(lambda: good.stats()["samples_sent_total"] == 1, timeout=30)
        st = wait_for(lambda: (s := bad.stats())["samples_rejected_total"] == 1 and s,
                      timeout=30)
        assert list(st["rejected"]) == ["401 Unauthorized"]  # a 4xx: counted, never retried
        assert st["samples_retried_total"] == 0
        got = peer.raw('{__name__="tls_metric"}', now - 1000, now + 1000)
        assert list(got.values()) == [[(now, 4.0)]]
        # and read back through the query path, with the same TLS CA and credentials
        reader_cfg = config_from_dict({"storage": {
            "remote_read_url": peer.base, "remote_read_tls_ca_path": "prom.crt",
            "remote_read_headers": {"Authorization": auth}}}, base_dir=tmp_path)
        reader = query_store(reader_cfg.aggregator_settings(), store)
        assert isinstance(reader, RemoteQueryStore)
        rows = reader.query("tls_metric", node="n", since_ms=now - 1000, until_ms=now + 1000)
        assert rows == [{"ts_ms": now, "node": "n", "metric": "tls_metric", "labels": {},
                         "value": 4.0}]
        assert [(s["node"], s["metric"]) for s in reader.series(node="n")] \
            == [("n", "tls_metric")]
        assert reader.nodes() == store.nodes()  # everything else stays local
        denied = query_store(config_from_dict({"storage": {
            "remote_read_url": peer.base, "remote_read_tls_ca_path": "prom.crt"}},
            base_dir=tmp_path).aggregator_settings(), store)
        with pytest.raises(StoreError, match="401"):
            denied.query("tls_metric", since_ms=now - 1000, until_ms=now + 1000)
    finally:
        sinks.stop()
        store.close()


def test_label_mapping_and_payload_parsing() -> None:
    assert prompb.metric_name("cpu.usage-%") == "cpu_usage__"
    assert prompb.metric_name("9lives") == "_9lives"
    assert prompb.label_name("status code") == "status_code"
    assert prompb.label_name("node") == "exported_node"
    assert prompb.label_name("__meta") == "exported_meta"
    labels = prompb.series_labels("h1", "up", (("a", "1"), ("empty", "")))
    assert labels == [("__name__", "up"), ("a", "1"), ("node", "h1")]
    now = int(time.time() * 1000)
    enc = prompb.Encoder(1)
    b = MetricsBatch.from_samples([Sample("x", (), math.pi, now), Sample("x", (), 2.0, now + 1),
                                   Sample("y", (), -1.0, 5)])  # 5 ms: the slow varint path
    (req, n), = enc.encode([IncomingBatch("h", 1, 1, b, now)])
    assert n == 3 and prompb.count_samples(req) == 3 and len(prompb.split_series(req)) == 2
    decoded = {d[0]["__name__"]: d[1] for d in prompb.decode(req)}
    assert decoded == {"x": [(now, math.pi), (now + 1, 2.0)], "y": [(5, -1.0)]}


def test_config_contract_and_table(tmp_path: Path) -> None:
    cfg = config_from_dict({"sinks": {"remote_write": [
        {"name": "prom", "url": "http://127.0.0.1:9/api/v1/write", "headers": {"X-Org": "a"},
         "queue_path": "q/prom"}]}, "storage": {"remote_read_url": "http://127.0.0.1:9"}},
        base_dir=tmp_path)
    assert cfg.sinks.remote_write[0].headers["X-Org"] == "a"
    assert cfg.storage.remote_read_url == "http://127.0.0.1:9"
    assert set(SINKS) == {"remote_write"}
    store = Store(tmp_path / "db.duckdb")
    built = build_sinks(cfg.aggregator_settings(), store)
    assert [s.name for s in built.sinks] == ["prom"] and (tmp_path / "q/prom").is_dir()
    built.stop()
    store.close()
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sinks": {"remote_write": [
            {"name": "a", "url": "ftp://x", "shards": 0, "bearer_token_file": "t",
             "basic_auth_username": "u"}, {"name": "a", "url": "http://x", "nope": 1},
            {"name": "c", "url": "http:///write"}]},
            "storage": {"remote_read_url": "localhost:9090"}})
    text = str(err.value)
    for frag in ("sinks.remote_write[0].url", "sinks.remote_write[0].shards",
                 "sinks.remote_write[0]: use bearer_token_file or basic_auth_*",
                 "sinks.remote_write[1].name: duplicate", "sinks.remote_write[1].nope: unknown",
                 "sinks.remote_write[2].url", "storage.remote_read_url"):
        assert frag in text, frag
