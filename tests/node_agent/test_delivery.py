"""Delivery: resend timing with backoff and jitter, ack levels, spool release, fairness."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from legion.kernel.spool.spool import Spool
from legion.node_agent.delivery import Delivery
from legion.proto import ACK_CHECKPOINTED, ACK_COMMITTED, ACK_REJECTED, Ack

pytestmark = pytest.mark.timeout(30)

EPOCH = 42


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def frame(seq: int) -> bytes:
    return f"frame-{seq}".encode() * 20


def make(tmp_path: Path, timeout: float = 5.0, jitter: float = 0.0, **kw: object
         ) -> tuple[Spool, Delivery, Clock]:
    clock = Clock()
    sp = Spool(tmp_path / "spool", kw.pop("max_bytes", 1 << 22),  # type: ignore[arg-type]
               kw.pop("sync_interval_ms", 500), epoch=EPOCH, clock=clock)  # type: ignore
    d = Delivery(sp, clock, resend_timeout=timeout, jitter=jitter, rng=random.Random(1),
                 **kw)  # type: ignore[arg-type]
    return sp, d, clock


def send_live(sp: Spool, d: Delivery, clock: Clock, seq: int) -> None:
    sp.append(seq, frame(seq))
    d.on_sent(seq, clock())


def ack(level: str, *ranges: tuple[int, int], epoch: int = EPOCH) -> Ack:
    return Ack(level=level, epoch=epoch, ranges=tuple(ranges))


def test_resend_after_timeout_with_exponential_backoff(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path, timeout=5.0, max_backoff=40.0)
    send_live(sp, d, clock, 1)
    assert d.due_resends(clock()) == []
    clock.t += 4.9
    assert d.due_resends(clock()) == []
    clock.t += 0.2
    assert d.due_resends(clock()) == [(1, frame(1))]
    d.on_sent(1, clock())  # the caller's bookkeeping after a resend is harmless
    times = []
    start = clock.t
    for _ in range(1200):  # step 0.1 s and note when it comes back
        clock.t += 0.1
        if d.due_resends(clock()):
            times.append(clock.t)
    gaps = [b - a for a, b in zip([start] + times, times, strict=False)]
    assert len(gaps) >= 4
    for got, want in zip(gaps, [10.0, 20.0, 40.0, 40.0], strict=False):  # 2x each time, capped
        assert want <= got < want + 0.15
    assert d.stats()["resends_total"] == 1 + len(times)


def test_jitter_spreads_resends(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path, timeout=10.0, jitter=0.2)
    for s in range(1, 201):
        send_live(sp, d, clock, s)
    due_at = {}
    for step in range(1, 140):
        t = clock.t + step * 0.1
        for seq, _ in d.due_resends(t, limit=1000):
            due_at.setdefault(seq, t - 1000.0)
    assert len(due_at) == 200
    assert 8.0 - 1e-6 <= min(due_at.values()) < 9.0 and 11.0 < max(due_at.values()) <= 12.1
    assert len({round(v, 1) for v in due_at.values()}) > 20


def test_acks_clear_and_levels(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path)
    for s in range(1, 11):
        send_live(sp, d, clock, s)
    assert d.stats()["unacked_batches"] == 10
    assert d.on_ack(ack(ACK_COMMITTED, (1, 4), (9, 9))) == 5
    st = d.stats()
    assert st["unacked_batches"] == 5 and st["spool_records"] == 10  # committed: kept on disk
    assert d.on_ack(ack(ACK_COMMITTED, (1, 4), epoch=EPOCH - 1)) == 0  # other epoch: ignored
    clock.t += 30  # past the resend timeout, within the checkpoint timeout
    assert sorted(s for s, _ in d.due_resends(clock())) == [5, 6, 7, 8, 10]
    bytes_before = d.stats()["spool_bytes"]
    d.on_ack(ack(ACK_CHECKPOINTED, (1, 10)))
    st = d.stats()
    assert st["unacked_batches"] == 0 and st["spool_records"] == 0
    assert st["spool_bytes"] == 0 < bytes_before  # checkpointed: spool space released
    clock.t += 1000
    assert d.due_resends(clock()) == []


def test_rejected_stops_resends_and_frees_spool(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path)
    for s in (1, 2):
        send_live(sp, d, clock, s)
    d.on_ack(ack(ACK_REJECTED, (2, 2)))
    assert d.stats()["batches_rejected_total"] == 1
    clock.t += 10
    assert [s for s, _ in d.due_resends(clock())] == [1]
    assert sp.read(EPOCH, 2) is None


def test_oldest_unacked_age(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path)
    assert d.stats()["oldest_unacked_age_seconds"] == 0.0
    send_live(sp, d, clock, 1)
    clock.t += 3
    send_live(sp, d, clock, 2)
    clock.t += 2
    assert d.stats()["oldest_unacked_age_seconds"] == 5.0
    d.on_ack(ack(ACK_COMMITTED, (1, 1)))
    assert d.stats()["oldest_unacked_age_seconds"] == 2.0


def test_restart_resends_whole_spool_oldest_first(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path)
    for s in range(1, 31):
        send_live(sp, d, clock, s)
    d.on_ack(ack(ACK_CHECKPOINTED, (1, 10)))
    d.on_ack(ack(ACK_COMMITTED, (11, 20)))  # committed but not checkpointed: still spooled
    sp.close()
    now_ms = [10_000_000]
    sp2 = Spool(tmp_path / "spool", 1 << 22, 500, epoch=EPOCH + 1, clock=clock)
    d2 = Delivery(sp2, clock, resend_timeout=5.0, wall_ms=lambda: now_ms[0])
    assert d2.stats()["unacked_batches"] == 20
    first = d2.due_resends(clock(), limit=8)  # due at once, oldest first
    assert [s for s, _ in first] == list(range(11, 19))
    assert all(f == frame(s) for s, f in first)
    d2.on_ack(ack(ACK_CHECKPOINTED, (11, 30)))  # acks for the old epoch still release it
    assert d2.stats()["spool_records"] == 0 and d2.stats()["unacked_batches"] == 0
    sp2.close()


def test_dropped_by_overflow_leave_unacked_set(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path, max_bytes=20_000)
    for s in range(1, 201):
        send_live(sp, d, clock, s)
    st = d.stats()
    assert st["unacked_batches"] == st["spool_records"] < 200
    assert st["batches_dropped_total"] == 200 - st["spool_records"]
    clock.t += 10
    resent = [s for s, _ in d.due_resends(clock(), limit=1000)]
    assert resent == [s for s, _ in sp.pending()]


def test_backoff_reset_when_acks_resume(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path, timeout=1.0, max_backoff=300.0)
    for s in range(1, 6):
        send_live(sp, d, clock, s)
    for _ in range(600):  # a 60 s outage: backoff grows to 32 s and more
        clock.t += 0.1
        d.due_resends(clock(), limit=100)
    d.on_ack(ack(ACK_COMMITTED, (1, 1)))  # the aggregator is back
    assert [s for s, _ in d.due_resends(clock(), limit=100)] == [2, 3, 4, 5]


def test_interleaving_fairness_with_big_backlog(tmp_path: Path) -> None:
    """Hours of backlog drain at `limit` per tick while every tick's live batch goes out."""
    # fsync timing is the spool tests' business; here it would only cost seconds
    sp, d, clock = make(tmp_path, timeout=5.0, max_backoff=30.0, sync_interval_ms=10**9)
    backlog = 5000  # e.g. 1.4 h at one batch per second, aggregator away
    for s in range(1, backlog + 1):
        send_live(sp, d, clock, s)
        clock.t += 1.0
    seq = backlog
    limit = 50
    live_sent, resent_order, ticks = [], [], 0
    # aggregator back: each tick = one live batch + up to `limit` resends; acks arrive
    while d.stats()["unacked_batches"] and ticks < 1000:
        ticks += 1
        clock.t += 1.0
        seq += 1
        send_live(sp, d, clock, seq)
        live_sent.append(seq)
        out = d.due_resends(clock(), limit=limit)
        assert len(out) <= limit
        resent_order += [s for s, _ in out]
        got = [seq] + [s for s, _ in out]
        for s in got:
            d.on_ack(ack(ACK_CHECKPOINTED, (s, s)), clock())
    assert ticks <= backlog // limit + 5  # ~100 ticks: 83 s for 1.4 h of backlog
    assert len(live_sent) == ticks  # the present was never skipped
    backlog_resends = [s for s in resent_order if s <= backlog]
    assert backlog_resends == sorted(backlog_resends)  # oldest first
    assert set(backlog_resends) == set(range(1, backlog + 1))
    assert d.stats()["spool_records"] == 0


def test_max_bytes_budget_per_tick(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path)
    for s in range(1, 21):
        send_live(sp, d, clock, s)
    clock.t += 10
    one = len(frame(1))
    out = d.due_resends(clock(), limit=100, max_bytes=3 * one)
    assert [s for s, _ in out] == [1, 2, 3]
    assert [s for s, _ in d.due_resends(clock(), limit=100, max_bytes=one // 2)] == [4]


AGENT_LOOP = """
import sys, time
from legion.node_agent.delivery import Delivery
from legion.kernel.spool.spool import Spool
from legion.node_agent.state import SeqAllocator
from legion.proto import (ACK_CHECKPOINTED, KIND_METRICS, Ack, Envelope, MetricsBatch, Sample,
                          canonical_labels, encode)
d = sys.argv[1]
st = SeqAllocator.open(d)
sp = Spool(d + "/spool", 1 << 24, 500, epoch=st.epoch)
dl = Delivery(sp, resend_timeout=0.05)
print("epoch", st.epoch, flush=True)
while True:
    seq = st.next_seq()
    now = int(time.time() * 1000)
    b = MetricsBatch.from_samples([Sample("x_total", canonical_labels({"i": str(seq)}), seq, now)])
    sp.append(seq, encode(Envelope(KIND_METRICS, "n1", st.epoch, seq, now, b)))
    dl.on_sent(seq)
    dl.due_resends(limit=5)
    if seq % 10 == 0 and seq > 20:  # the aggregator checkpointed everything up to seq - 20
        dl.on_ack(Ack(ACK_CHECKPOINTED, st.epoch, ((1, seq - 20),)))
        print("acked", seq - 20, flush=True)
    print("sent", seq, flush=True)
"""


def test_kill9_agent_loop_then_restart_loses_nothing(tmp_path: Path) -> None:
    """state + spool + delivery in a real process, kill -9, reopen: every batch acked or pending."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from legion.node_agent.state import SeqAllocator
    from legion.proto import decode

    d = str(tmp_path / "agent")
    p = subprocess.Popen([sys.executable, "-c", AGENT_LOOP, d], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    epoch = int(p.stdout.readline().split()[1])
    sent, acked = 0, 0
    deadline = time.monotonic() + 60  # killed mid-stream once past 60 batches, however slow
    while sent <= 60 and time.monotonic() < deadline:
        kind, n = p.stdout.readline().split()
        sent, acked = (int(n), acked) if kind == "sent" else (sent, int(n))
    os.kill(p.pid, signal.SIGKILL)
    for line in p.stdout.read().split("\n")[:-1]:
        kind, n = line.split()
        sent, acked = (int(n), acked) if kind == "sent" else (sent, int(n))
    p.wait(timeout=10)
    assert sent > 50

    st = SeqAllocator.open(d)
    assert st.epoch == epoch and st.peek_next_seq() > sent
    sp = Spool(d + "/spool", 1 << 24, 500, epoch=st.epoch)
    dl = Delivery(sp, resend_timeout=5.0)
    pending = dict(sp.pending())
    for seq in range(acked + 1, sent + 1):  # everything not acked is still there, intact
        if seq not in pending:  # only an ack applied but not yet printed may explain it
            assert seq <= sent + 1 - 20
            continue
        env = decode(pending[seq])
        assert (env.epoch, env.seq, env.node) == (epoch, seq, "n1")
    assert min(pending) > acked  # released records did not come back
    assert dl.stats()["unacked_batches"] == len(pending)
    resent = dl.due_resends(limit=10_000)
    assert [s for s, _ in resent] == sorted(pending)
    sp.close()
    st.close()


def test_lost_checkpoint_ack_resends_after_checkpoint_timeout(tmp_path: Path) -> None:
    sp, d, clock = make(tmp_path, timeout=5.0, checkpoint_timeout=60.0)
    for s in (1, 2, 3):
        send_live(sp, d, clock, s)
    d.on_ack(ack(ACK_COMMITTED, (1, 3)))
    d.on_ack(ack(ACK_CHECKPOINTED, (3, 3)))
    assert d.stats()["uncheckpointed_batches"] == 2
    clock.t += 59
    assert d.due_resends(clock()) == []  # committed: no resend before the checkpoint timeout
    clock.t += 2
    assert [s for s, _ in d.due_resends(clock())] == [1, 2]  # the checkpoint ack never came
    st = d.stats()
    assert st["checkpoint_timeouts_total"] == 2 and st["unacked_batches"] == 2
    d.on_ack(ack(ACK_CHECKPOINTED, (1, 2)))  # the aggregator answers the duplicate
    st = d.stats()
    assert st["unacked_batches"] == st["uncheckpointed_batches"] == st["spool_records"] == 0
