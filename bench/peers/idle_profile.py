"""Where the aggregator's time and memory go at one real agent at 1 s (issue 17).

    python bench/peers/idle_profile.py [--window 30] [--py-spy [--spy-rate 1000]] [--keep]
        [--set SECTION.KEY=JSON] [--no-agent]

Starts `legionctl aggregator run` and `legionctl agent run` as the peers host row does, waits
`--warmup` seconds, then over `--window` seconds prints CPU per thread (schedstat of each
`/proc/PID/task/*`, named by py-spy's thread names when `--py-spy` is given), and at the end
RSS by mapping (`/proc/PID/smaps`: each shared library's resident size, anonymous memory
and the heap). With `--py-spy` it also records stacks without stopping the process
(`py-spy record --nonblocking -f raw --threads`, not a project dependency) and prints the top
frames per thread. `--set` (repeatable) changes one config key before the start, e.g.
`--set aggregator.commit_max_delay_ms=0`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/

from agent_overhead import NODE, legionctl, prepare, stop_proc  # noqa: E402


def start_agent(work: Path, interval: float, settings: list[str], agent: bool = True
                ) -> list[subprocess.Popen[bytes]]:
    """`agent_overhead.start_agent` with `settings` ("section.key=json") applied to the config
    (without `agent`: the aggregator alone, its floor)."""
    cfg = prepare(work, interval)
    raw = json.loads(cfg.read_text())
    for item in settings:
        path, _, value = item.partition("=")
        section, _, key = path.partition(".")
        raw[section][key] = json.loads(value)
    cfg.write_text(json.dumps(raw, indent=2) + "\n")
    procs = []
    for args, log in ((("aggregator", "run"), "aggregator.log"),
                      (("agent", "run", "--node", NODE), "agent.log"))[:2 if agent else 1]:
        proc = legionctl(*args, "--config", str(cfg), log=work / log)
        assert isinstance(proc, subprocess.Popen)
        procs.append(proc)
        time.sleep(1.0)
    return procs


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (comm, on-CPU seconds) for every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except OSError:
            continue
        out[int(tid)] = (comm, ns / 1e9)
    return out


def py_thread_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from `py-spy dump --json`."""
    exe = shutil.which("py-spy")
    if exe is None:
        return {}
    res = subprocess.run([exe, "dump", "--json", "--pid", str(pid)], capture_output=True,
                         text=True, timeout=60, check=False)
    try:
        return {t["os_thread_id"]: t.get("thread_name") or "?" for t in json.loads(res.stdout)}
    except (ValueError, KeyError, TypeError):
        return {}


def smaps(pid: int) -> list[tuple[str, int]]:
    """(mapping, resident KiB) summed by mapped file / [heap] / [anon] / [stack], largest first."""
    rss: collections.Counter[str] = collections.Counter()
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else "[anon]"
            name = os.path.basename(name) if name.startswith("/") else name
        elif head[0] == "Rss:":
            rss[name] += int(head[1])
    return rss.most_common()


def top_frames(raw: Path, n: int = 12) -> dict[str, list[tuple[str, int]]]:
    """Per thread, the innermost-but-useful frames with most samples in a py-spy raw file."""
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "?")
        leaf = frames[-1] if frames else "?"
        per[thread][leaf] += int(count)
        per[thread]["TOTAL"] += int(count)
    return {t: c.most_common(n) for t, c in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--py-spy", action="store_true", dest="pyspy")
    ap.add_argument("--spy-rate", type=int, default=1000, help="py-spy samples per second")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-agent", action="store_true", help="the aggregator alone (its floor)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="legion-idle-profile-"))
    procs = []
    try:
        procs = start_agent(work, 1.0, args.set, agent=not args.no_agent)
        pid = procs[0].pid
        time.sleep(args.warmup)
        names = py_thread_names(pid)  # a one-shot dump, before the window
        load0 = os.getloadavg()[0]
        t0, c0 = time.monotonic(), thread_cpu(pid)
        spy = None
        if args.pyspy:
            # --nonblocking: py-spy must not stop the process, or every thread's CPU is inflated
            # (0.09 % each at 100 Hz, measured).
            spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "-r",
                                    str(args.spy_rate), "--nonblocking", "-f", "raw",
                                    "--threads", "-d", str(int(args.window)),
                                    "-o", str(work / "spy.raw"), "--pid", str(pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.window)
        t1, c1 = time.monotonic(), thread_cpu(pid)
        wall = t1 - t0
        total = 0.0
        rows = []
        for tid, (comm, s1) in c1.items():
            d = s1 - c0.get(tid, (comm, 0.0))[1]
            total += d
            rows.append((d, tid, comm, names.get(tid, "")))
        print(f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}; aggregator {100 * total / wall:.3f} "
              f"% CPU over {wall:.0f} s, {len(c1)} threads")
        for d, tid, comm, pname in sorted(rows, reverse=True):
            print(f"  {100 * d / wall:7.3f} %  {tid:>7} {comm:<16} {pname}")
        kib = smaps(pid)
        print(f"RSS {sum(k for _, k in kib) / 1024:.1f} MiB by mapping (top 25):")
        for name, k in kib[:25]:
            print(f"  {k / 1024:7.1f} MiB  {name}")
        if spy is not None:
            spy.wait(args.window + 60)
            if (work / "spy.raw").exists():
                for thread, top in top_frames(work / "spy.raw").items():
                    print(thread)
                    for leaf, n in top:
                        print(f"    {n:6d}  {leaf}")
    finally:
        for p in procs:
            stop_proc(p)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
