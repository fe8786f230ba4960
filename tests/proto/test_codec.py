"""Wire schema v1: golden payloads, round trips, every rejection reason, and fuzzing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import legion.proto
from legion.proto import (
    Ack,
    Envelope,
    MetricsBatch,
    Reason,
    Sample,
    WireError,
    canonical_labels,
    decode,
    encode,
    encode_samples,
)
from legion.proto import limits as L

FIXTURES = Path(legion.proto.__file__).parent / "fixtures" / "v1"
NOW = 1_795_845_600_000


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.msgpack")), ids=lambda p: p.name)
def test_golden_payloads_decode_forever(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text())
    env = decode(path.read_bytes(), now_ms=expected["ts"])
    assert (env.kind, env.node, env.epoch, env.seq, env.ts_ms) == (
        expected["kind"], expected["node"], expected["epoch"], expected["seq"], expected["ts"])
    if "samples" in expected:
        got = [[s.name, dict(s.labels), s.value, s.ts_ms] for s in env.body.samples()]
        assert got == expected["samples"]
    else:
        assert env.body == Ack(expected["ack"]["level"], expected["ack"]["epoch"],
                               tuple(tuple(r) for r in expected["ack"]["ranges"]))


def test_golden_fixtures_exist() -> None:
    assert len(list(FIXTURES.glob("*.msgpack"))) >= 4


names = st.from_regex(r"[a-z_][a-z0-9_]{0,30}", fullmatch=True)
label_sets = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                             st.text(max_size=20), max_size=4)
samples = st.lists(st.tuples(names, label_sets,
                             st.floats(allow_nan=False, allow_infinity=False),
                             st.integers(NOW - L.MAX_PAST_MS, NOW + L.MAX_FUTURE_MS)),
                   max_size=50)


@settings(max_examples=300, deadline=None)
@given(samples, st.integers(0, L.MAX_EPOCH), st.integers(0, L.MAX_SEQ))
def test_round_trip(pts: list, epoch: int, seq: int) -> None:
    batch = MetricsBatch.from_samples(
        Sample(n, canonical_labels(lb), v, t) for n, lb, v, t in pts)
    env = Envelope("metrics", "node-1", epoch, seq, NOW, batch)
    back = decode(encode(env), now_ms=NOW)
    assert back == env
    assert [(s.name, s.labels, s.value, s.ts_ms) for s in back.body.samples()] == [
        (n, canonical_labels(lb), v, t) for n, lb, v, t in pts]


def _frame(**over: object) -> bytes:
    body = {"names": ["m_a"], "labels": [{}],
            "name_idx": np.array([0], "<u4").tobytes(), "label_idx": np.array([0], "<u4").tobytes(),
            "values": np.array([1.0], "<f8").tobytes(), "ts": np.array([NOW], "<i8").tobytes()}
    body.update(over.pop("body", {}))  # type: ignore[arg-type]
    env = {"v": 1, "kind": "metrics", "node": "n1", "epoch": 1, "seq": 1, "ts": NOW, "body": body}
    env.update(over)
    env = {k: v for k, v in env.items() if v is not ...}
    return msgpack.packb(env, use_bin_type=True)


BAD = {
    Reason.BAD_MSGPACK: b"\xc1\xc1",
    Reason.FRAME_TOO_LARGE: b"\x00" * (L.MAX_FRAME_BYTES + 1),
    Reason.UNSUPPORTED_VERSION: _frame(v=2),
    Reason.UNKNOWN_KIND: _frame(kind="logs"),
    Reason.MISSING_FIELD: _frame(seq=...),
    Reason.MISTYPED_FIELD: _frame(seq="1"),
    Reason.BAD_NODE: _frame(node="a b"),
    Reason.TOO_MANY_POINTS: _frame(body={
        "name_idx": bytes(4 * (L.MAX_POINTS_PER_BATCH + 1)),
        "label_idx": bytes(4 * (L.MAX_POINTS_PER_BATCH + 1)),
        "values": bytes(8 * (L.MAX_POINTS_PER_BATCH + 1)),
        "ts": np.full(L.MAX_POINTS_PER_BATCH + 1, NOW, "<i8").tobytes()}),
    Reason.NAME_TOO_LONG: _frame(body={"names": ["m" * (L.MAX_NAME_LEN + 1)]}),
    Reason.BAD_NAME: _frame(body={"names": ["cpu-usage"]}),
    Reason.TOO_MANY_LABELS: _frame(body={"labels": [{f"k{i}": "v" for i in range(17)}]}),
    Reason.LABEL_TOO_LONG: _frame(body={"labels": [{"k": "v" * (L.MAX_LABEL_VALUE_LEN + 1)}]}),
    Reason.BAD_LABEL: _frame(body={"labels": [{"1k": "v"}]}),
    Reason.LENGTH_MISMATCH: _frame(body={"values": np.array([1.0, 2.0], "<f8").tobytes()}),
    Reason.INDEX_OUT_OF_RANGE: _frame(body={"name_idx": np.array([3], "<u4").tobytes()}),
    Reason.NON_FINITE_VALUE: _frame(body={"values": np.array([np.nan], "<f8").tobytes()}),
    Reason.TIMESTAMP_OUT_OF_RANGE: _frame(
        body={"ts": np.array([NOW + L.MAX_FUTURE_MS + 1], "<i8").tobytes()}),
}


@pytest.mark.parametrize("reason", list(BAD), ids=lambda r: r.value)
def test_each_rejection_reason(reason: Reason) -> None:
    with pytest.raises(WireError) as info:
        decode(BAD[reason], now_ms=NOW)
    assert info.value.reason is reason


def test_body_rejection_keeps_header_for_rejected_ack() -> None:
    with pytest.raises(WireError) as info:
        decode(BAD[Reason.NON_FINITE_VALUE], now_ms=NOW)
    assert info.value.header == ("metrics", "n1", 1, 1)


def test_bool_is_not_an_int_on_the_wire() -> None:
    with pytest.raises(WireError) as info:
        decode(_frame(seq=True), now_ms=NOW)
    assert info.value.reason is Reason.MISTYPED_FIELD


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=512))
def test_random_bytes_only_typed_rejections(data: bytes) -> None:
    try:
        decode(data, now_ms=NOW)
    except WireError as exc:
        assert isinstance(exc.reason, Reason)


def test_fuzz_100k_random_and_mutated_frames() -> None:
    """100,000 mutated valid frames and random blobs: decode returns or raises WireError only."""
    rng = random.Random(1234)
    seeds = [p.read_bytes() for p in sorted(FIXTURES.glob("*.msgpack"))] + [_frame()]
    outcomes = {"ok": 0, "rejected": 0}
    for i in range(100_000):
        base = bytearray(rng.choice(seeds))
        op = i % 4
        if op == 0:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                base[rng.randrange(len(base))] = rng.randrange(256)
        elif op == 1:  # truncate
            base = base[: rng.randrange(len(base))]
        elif op == 2:  # splice random bytes in
            pos = rng.randrange(len(base) + 1)
            base[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:  # pure random
            base = bytearray(rng.randbytes(rng.randint(0, 256)))
        try:
            decode(bytes(base), now_ms=NOW)
            outcomes["ok"] += 1
        except WireError as exc:
            assert isinstance(exc.reason, Reason)
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 50_000  # the mutations really produced bad frames


@settings(max_examples=200, deadline=None)
@given(samples, st.integers(0, L.MAX_EPOCH), st.integers(0, L.MAX_SEQ))
def test_encode_samples_equals_batch_encoding(pts: list, epoch: int, seq: int) -> None:
    """The node agent's numpy-free encoder writes exactly the bytes of the batch encoder."""
    ss = [Sample(n, canonical_labels(lb), v, t) for n, lb, v, t in pts]
    via_batch = encode(Envelope("metrics", "node-1", epoch, seq, NOW,
                                MetricsBatch.from_samples(ss)))
    assert encode_samples("node-1", epoch, seq, NOW, ss) == via_batch


def test_node_agent_does_not_import_numpy() -> None:
    """numpy is ~14 MiB of RSS: the agent's encode path must not load it."""
    import subprocess
    import sys

    code = ("import sys, legion.cli.main, legion.node_agent.agent, legion.proto as p;"
            "f = p.encode_samples('n', 1, 1, 0, [p.Sample('a', (), 1.0, 0)]);"
            "p.decode(p.encode(p.Envelope('ack', 'n', 1, 1, 0, p.Ack('committed', 1, ((1, 1),)))));"
            "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
