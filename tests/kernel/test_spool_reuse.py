"""Spool: a checkpoint ack that releases the whole active segment empties it in place.

The contract (legion/kernel/spool/spool.py, docs/internals.md): no segment file is created or
deleted and released.log is neither appended to nor rewritten; released records are never seen
again after a reopen (with or without close, and after kill -9 of a real writer process), nothing
unreleased is lost, and the byte cap counts only what is on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from legion.kernel.spool.records import HEADER
from legion.kernel.spool.spool import Spool

from .test_spool import EPOCH, open_spool, payload, segments

pytestmark = pytest.mark.timeout(60)


def files(d: Path) -> dict[str, tuple[int, int]]:
    """name -> (inode, size) of every file in the spool directory (quarantine/ aside)."""
    return {p.name: (p.stat().st_ino, p.stat().st_size) for p in d.iterdir() if p.is_file()}


def test_full_release_empties_the_active_segment_in_place(tmp_path: Path) -> None:
    now = [0.0]
    sp = open_spool(tmp_path, clock=lambda: now[0])
    for s in range(1, 11):
        sp.append(s, payload(s))
    sp.sync()
    before, syncs = files(tmp_path), sp.syncs
    assert sp.release(EPOCH, [(1, 10)]) == 10
    after = files(tmp_path)
    [seg] = [n for n in after if n.startswith("seg-")]
    assert after[seg] == (before[seg][0], 0)  # the same file, truncated
    assert after["released.log"] == before["released.log"]  # no entry, no rewrite
    assert set(after) == set(before) and sp.syncs == syncs  # no file made, no fsync on the ack
    assert sp.stats()["spool_bytes"] == 0 and sp.stats()["spool_records"] == 0
    for s in range(11, 14):
        sp.append(s, payload(s))
    assert files(tmp_path)[seg][0] == before[seg][0]  # the next appends go to that file
    assert files(tmp_path)[seg][1] == sp.stats()["spool_bytes"]
    # no close(): as after kill -9; the released records are gone, the new ones are all there
    sp2 = open_spool(tmp_path)
    assert dict(sp2.pending()) == {s: payload(s) for s in range(11, 14)}
    assert sp2.stats()["batches_dropped_total"] == 0
    sp2.close()


def test_partial_release_of_the_active_segment_is_logged(tmp_path: Path) -> None:
    sp = open_spool(tmp_path)
    for s in range(1, 11):
        sp.append(s, payload(s))
    sp.release(EPOCH, [(1, 7)])  # 8..10 still pending: the records stay, the log says so
    assert (tmp_path / "released.log").stat().st_size == 28
    sp.release(EPOCH, [(8, 10)])  # now all of it: emptied, nothing more in the log
    assert (tmp_path / "released.log").stat().st_size == 28
    assert [p.stat().st_size for p in segments(tmp_path)] == [0]
    sp.append(11, payload(11))
    sp2 = open_spool(tmp_path)  # stale log entries of the emptied records are harmless
    assert dict(sp2.pending()) == {11: payload(11)}
    sp2.close()
    sp.close()


def test_cap_counts_only_records_on_disk_after_reuse(tmp_path: Path) -> None:
    rec = HEADER.size + 500
    cap = 10 * rec
    sp = open_spool(tmp_path, cap, segment_bytes=5 * rec)
    for s in range(1, 4):
        sp.append(s, payload(s, 500))
    sp.release(EPOCH, [(1, 3)])
    for s in range(4, 14):  # exactly the cap again, in the emptied segment and a new one
        sp.append(s, payload(s, 500))
    assert sp.stats()["batches_dropped_total"] == 0 and sp.stats()["spool_bytes"] == cap
    sp.append(14, payload(14, 500))  # over the cap: the oldest segment (4..8) goes, counted
    assert sp.dropped_ranges() == ((EPOCH, 4, 8),)
    assert [s for s, _ in sp.pending()] == list(range(9, 15))
    sp.close()


def test_truncate_refused_falls_back_to_deleting(tmp_path: Path) -> None:
    """A real kernel error, no mock: the active segment's descriptor is swapped for a read-only
    one of the same file, so ftruncate fails (EINVAL) as it would on a disk error."""
    sp = open_spool(tmp_path)
    for s in range(1, 6):
        sp.append(s, payload(s))
    [seg] = segments(tmp_path)
    active = sp._active
    assert active is not None and active.fd is not None
    ro = os.open(seg, os.O_RDONLY)
    os.dup2(ro, active.fd)
    os.close(ro)
    assert sp.release(EPOCH, [(1, 5)]) == 5
    assert not seg.exists() and sp.stats()["spool_write_errors_total"] == 1
    sp.append(6, payload(6))  # a fresh segment
    assert [p.name for p in segments(tmp_path)] != [seg.name]
    sp2 = open_spool(tmp_path)
    assert dict(sp2.pending()) == {6: payload(6)}
    sp2.close()
    sp.close()


WRITER = """
import os, sys
sys.path.insert(0, sys.argv[2])
from test_spool import payload
from legion.kernel.spool.spool import Spool
d, start, ep = sys.argv[1], int(sys.argv[3]), int(sys.argv[5])
sp = Spool(d, 1 << 22, 500, epoch=ep, segment_bytes=16 * 1024)
log = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.write(log, b"ready\\n")
s, done = start, start - 1
while True:
    sp.append(s, payload(s))
    os.write(log, b"a %d\\n" % s)
    if s % 10 == 0:  # a checkpoint ack: the new ones but a tail of 0-2, as acks race appends
        last = s - (s // 10) % 3
        sp.release(ep, [(done + 1, last)])
        os.write(log, b"r %d %d\\n" % (done + 1, last))
        done = last
    s += 1
"""


def test_kill9_around_checkpoint_acks_loses_nothing_and_resends_nothing(tmp_path: Path) -> None:
    """A real writer appends and releases (a third of the acks empty the active segment), is
    killed with SIGKILL at a moment it does not choose, three times on the same directory.
    Its op log (written after each call returned) says what must be there at the reopen."""
    d = tmp_path / "spool"
    here = str(Path(__file__).parent)
    must_stay: set[int] = set()  # appended, never released, across rounds
    for rnd in range(3):
        start = 1 + 100_000 * rnd
        oplog = tmp_path / f"ops{rnd}.log"
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(d), here, str(start),
                              str(oplog), str(EPOCH + rnd)])
        deadline = time.monotonic() + 20
        while not (oplog.exists() and oplog.read_bytes().count(b"\n") > 300):
            assert time.monotonic() < deadline and p.poll() is None, "writer did not run"
            time.sleep(0.02)
        time.sleep(0.05 * rnd)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        appended: set[int] = set()
        released: set[int] = set()
        for line in oplog.read_text().splitlines()[1:]:
            f = line.split()
            if f[0] == "a":
                appended.add(int(f[1]))
            elif f[0] == "r":
                released.update(range(int(f[1]), int(f[2]) + 1))
        last = max(appended)  # last + 1 may be written unlogged, or torn
        # after the last logged append, its release may have run unlogged
        done = max(released, default=start - 1)
        maybe = (set(range(done + 1, last - (last // 10) % 3 + 1)) if last % 10 == 0
                 else set())
        sp = Spool(d, 1 << 22, 500, epoch=EPOCH + rnd, segment_bytes=16 * 1024)
        got = dict(sp.pending())
        assert all(frame == payload(s) for s, frame in got.items())
        assert not released & set(got), "a released batch would be resent"
        must_stay |= appended - released - maybe
        assert must_stay <= set(got), f"lost: {sorted(must_stay - set(got))[:5]}"
        assert set(got) <= must_stay | appended | {last + 1}
        # at most the record being written at each kill, torn, counted as dropped
        assert sp.stats()["batches_dropped_total"] <= rnd + 1
        must_stay = set(got)
        sp.close()


@pytest.mark.parametrize("released_too", [False, True])
def test_quarantine_counts_only_the_seqs_in_the_bad_bytes(tmp_path: Path,
                                                           released_too: bool) -> None:
    """Records released and gone from disk (a deleted segment, an emptied active one) leave
    gaps in the seqs found at open; a quarantine must count only what the bad bytes held, not
    those gaps (it counted the whole gap between the oldest and newest records found), and
    not a record in them that was released (the aggregator has it)."""
    rec = HEADER.size + 300
    sp = open_spool(tmp_path, segment_bytes=10 * rec)
    for s in range(1, 31):  # three segments of ten: 1..10, 11..20, 21..30 (active)
        sp.append(s, payload(s, 300))
    sp.release(EPOCH, [(11, 30)])  # the middle one deleted, the active one emptied
    for s in range(31, 36):
        sp.append(s, payload(s, 300))
    if released_too:
        sp.release(EPOCH, [(33, 33)])
    sp.close()
    active = segments(tmp_path)[-1]
    data = bytearray(active.read_bytes())
    data[2 * rec + HEADER.size + 7] ^= 0x40  # flip a byte of seq 33's payload
    active.write_bytes(bytes(data))
    sp = open_spool(tmp_path, segment_bytes=10 * rec)
    assert [s for s, _ in sp.pending()] == [*range(1, 11), 31, 32, 34, 35]
    assert sp.dropped_ranges() == (() if released_too else ((EPOCH, 33, 33),))
    assert sp.stats()["batches_dropped_total"] == (0 if released_too else 1)
    assert sp.stats()["spool_quarantine_events_total"] == 1
    sp.close()
