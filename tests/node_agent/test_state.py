"""SeqAllocator: seqs continue across restarts and kill -9, a wiped dir starts a new epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from legion.node_agent import state as state_mod
from legion.node_agent.state import CURSOR_FILE, STATE_FILE, SeqAllocator

pytestmark = pytest.mark.timeout(30)

CHILD = """
import sys
from legion.node_agent.state import SeqAllocator
st = SeqAllocator.open(sys.argv[1], block=int(sys.argv[2]))
print(st.epoch, flush=True)
while True:
    s = st.next_seq()
    print(s, flush=True)
"""


def test_new_dir_starts_epoch_at_seq_1(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path / "s", clock_ms=lambda: 1_700_000_000_000)
    assert st.new_epoch and st.epoch == 1_700_000_000_000
    assert [st.next_seq() for _ in range(3)] == [1, 2, 3]
    st.close()
    st.close()  # idempotent


def test_clean_restart_continues_exactly(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path, block=4)
    seqs = [st.next_seq() for _ in range(10)]  # crosses two block reservations
    st.close()
    st2 = SeqAllocator.open(tmp_path, block=4)
    assert st2.epoch == st.epoch and not st2.new_epoch
    assert st2.next_seq() == seqs[-1] + 1


def test_wiped_dir_starts_newer_epoch(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path / "s")
    st.next_seq()
    st.close()
    for f in (tmp_path / "s").iterdir():
        f.unlink()
    (tmp_path / "s").rmdir()
    time.sleep(0.002)
    st2 = SeqAllocator.open(tmp_path / "s")
    assert st2.new_epoch and st2.epoch > st.epoch and st2.next_seq() == 1


def test_clock_going_back_still_gives_new_epoch(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path, clock_ms=lambda: 5000)
    st.close()
    (tmp_path / STATE_FILE).unlink()  # state lost, cursor still there
    st2 = SeqAllocator.open(tmp_path, clock_ms=lambda: 100)
    assert st2.epoch == 5001


def test_corrupt_state_file_moved_aside_new_epoch(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path)
    st.close()
    (tmp_path / STATE_FILE).write_text("{not json")
    st2 = SeqAllocator.open(tmp_path)
    assert st2.new_epoch and st2.epoch != st.epoch
    assert list(tmp_path.glob(STATE_FILE + ".corrupt-*"))


def test_other_boot_resumes_at_reservation_never_reuses(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    st = SeqAllocator.open(tmp_path, block=100)
    used = [st.next_seq() for _ in range(5)]
    # No close: as after a power loss. A different boot id means the cursor may be stale.
    fake = tmp_path / "boot_id"
    fake.write_text("00000000-0000-0000-0000-000000000001\n")
    monkeypatch.setattr(state_mod, "_BOOT_ID_PATH", str(fake))
    st2 = SeqAllocator.open(tmp_path, block=100)
    nxt = st2.next_seq()
    assert nxt > max(used) and nxt == 101  # the reservation ceiling: a gap, never a reuse


def test_corrupt_cursor_falls_back_to_reservation(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path, block=10)
    for _ in range(3):
        st.next_seq()
    st.close()
    raw = bytearray((tmp_path / CURSOR_FILE).read_bytes())
    raw[9] ^= 0xFF
    (tmp_path / CURSOR_FILE).write_bytes(bytes(raw))
    assert SeqAllocator.open(tmp_path, block=10).next_seq() == 11


def test_state_file_written_atomically(tmp_path: Path) -> None:
    st = SeqAllocator.open(tmp_path, block=2)
    for _ in range(5):
        st.next_seq()
    body = json.loads((tmp_path / STATE_FILE).read_text())
    assert body["epoch"] == st.epoch and body["reserved_until"] >= 6
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("block", [1, 64])
def test_kill9_continues_sequence(tmp_path: Path, block: int) -> None:
    """A child hands out seqs as fast as it can; after SIGKILL the next seq is the next one."""
    d = tmp_path / "s"
    last_seen = 0
    epoch = None
    for _round in range(3):
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(d), str(block)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        ep = int(p.stdout.readline())
        assert epoch is None or ep == epoch
        epoch = ep
        first = int(p.stdout.readline())
        assert first == last_seen + 1  # no gap, no reuse
        printed = [first]
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            printed.append(int(p.stdout.readline()))
        os.kill(p.pid, signal.SIGKILL)
        out = p.stdout.read()  # not communicate(): it would skip what readline buffered
        p.wait(timeout=10)
        # Only whole lines count; the child may have handed out one seq it did not print.
        printed += [int(x) for x in out.split("\n")[:-1]]
        assert printed == list(range(first, first + len(printed)))
        st = SeqAllocator.open(d, block=block)
        nxt = st.peek_next_seq()
        st.close()
        assert nxt > max(printed)
        assert nxt <= max(printed) + 2  # at most one seq handed out but not printed
        last_seen = nxt - 1
