"""What the aggregator's memory is made of at one real agent at 1 s (issue 17).

    python bench/peers/rss_profile.py [--warmup 30] [--importtime] [--set SECTION.KEY=JSON]
                                      [--env NAME=VALUE]

Starts `legionctl aggregator run` and `legionctl agent run` as the peers host row does (the
`legionctl` first on PATH: activate another venv to profile another build), waits `--warmup`
seconds, then prints the aggregator's `/proc/PID/smaps_rollup` (Rss, Pss, private and shared,
anonymous), RSS by mapping split into private and shared pages, the anonymous memory in and
out of `[heap]` (with how many glibc arena reserves and thread guard pages there are) and the
threads by name. `--importtime` runs the aggregator with `PYTHONPROFILEIMPORTTIME=1` and
prints every top-level package it imported, with the number of its modules. `--env` (repeatable)
sets a variable for the aggregator only, e.g. `--env MALLOC_ARENA_MAX=1`.
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

ROLLUP = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
          "Anonymous")


def start(work: Path, settings: list[str], env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """The aggregator (with `env` added) then one agent at 1 s, on free loopback ports."""
    cfg = prepare(work, 1.0)
    raw = json.loads(cfg.read_text())
    for item in settings:
        path, _, value = item.partition("=")
        section, _, key = path.partition(".")
        raw[section][key] = json.loads(value)
    cfg.write_text(json.dumps(raw, indent=2) + "\n")
    procs = []
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        agg = legionctl("aggregator", "run", "--config", str(cfg), log=work / "aggregator.log")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert isinstance(agg, subprocess.Popen)
    procs.append(agg)
    time.sleep(1.0)
    agent = legionctl("agent", "run", "--node", NODE, "--config", str(cfg), log=work / "agent.log")
    assert isinstance(agent, subprocess.Popen)
    procs.append(agent)
    return procs


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup's fields in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            out[key] = int(rest.split()[0])
    return out


def mappings(pid: int) -> list[dict[str, object]]:
    """Every mapping of `pid`: name, size, Rss, private and shared KiB, start address."""
    maps: list[dict[str, object]] = []
    cur: dict[str, object] = {}
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            name = head[5] if len(head) > 5 else "[anon]"
            cur = {"name": os.path.basename(name) if name.startswith("/") else name,
                   "perms": head[1], "size": (hi - lo) // 1024, "lo": lo}
            maps.append(cur)
        elif head[0] in ("Rss:", "Private_Clean:", "Private_Dirty:", "Shared_Clean:",
                         "Shared_Dirty:"):
            cur[head[0][:-1]] = int(head[1])
    return maps


def anon_kinds(maps: list[dict[str, object]]) -> dict[str, float]:
    """Anonymous resident MiB in `[heap]` (glibc's main arena) and in the other anonymous
    mappings (other arenas, pymalloc's 1 MiB arenas, mmap'd blocks, DuckDB's allocator, thread
    stacks), plus how many glibc arena reserves (---p, ~64 MiB) and thread guard pages (---p,
    4 KiB) there are: which kind a rw mapping is cannot be told from smaps alone."""
    out = {"[heap] MiB": 0.0, "other anonymous MiB": 0.0, "arena reserves": 0.0,
           "guard pages": 0.0}
    for m in maps:
        size = int(m["size"])  # type: ignore[call-overload]
        if m["name"] == "[heap]":
            out["[heap] MiB"] += int(m.get("Rss", 0)) / 1024  # type: ignore[call-overload]
        elif m["name"] == "[anon]" and m["perms"] == "rw-p":
            out["other anonymous MiB"] += int(m.get("Rss", 0)) / 1024  # type: ignore[call-overload]
        elif m["name"] == "[anon]" and m["perms"] == "---p":
            out["guard pages" if size == 4 else "arena reserves"] += 1
    return out


def threads(pid: int) -> collections.Counter[str]:
    """Thread names (comm) and how many of each."""
    names: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names[Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()] += 1
        except OSError:
            continue
    return names


def imported_packages(log: Path) -> collections.Counter[str]:
    """Top-level package -> modules imported, from a `-X importtime` log."""
    pkgs: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            name = line.rsplit("|", 1)[1].strip()
            pkgs[name.split(".")[0]] += 1
    return pkgs


def report(pid: int) -> None:
    """Print the rollup, the biggest mappings, the anonymous memory and the threads."""
    r = rollup(pid)
    print("smaps_rollup MiB: " + ", ".join(f"{k} {r.get(k, 0) / 1024:.1f}" for k in ROLLUP))
    maps = mappings(pid)
    by: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for m in maps:
        c = by[str(m["name"])]
        for k in ("Rss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty"):
            c[k] += int(m.get(k, 0))  # type: ignore[call-overload]
    print("by mapping (MiB): rss private shared")
    for name, c in sorted(by.items(), key=lambda kv: -kv[1]["Rss"])[:20]:
        priv = c["Private_Clean"] + c["Private_Dirty"]
        print(f"  {c['Rss'] / 1024:7.1f} {priv / 1024:7.1f} {(c['Rss'] - priv) / 1024:7.1f}  "
              f"{name}")
    print("anonymous: " + ", ".join(f"{k} {v:.1f}" for k, v in anon_kinds(maps).items()))
    t = threads(pid)
    print(f"threads {sum(t.values())}: " + ", ".join(f"{n} x{c}" for n, c in t.most_common()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args(argv)
    env = dict(e.partition("=")[::2] for e in args.env)
    if args.importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    work = Path(tempfile.mkdtemp(prefix="legion-rss-profile-"))
    procs = []
    try:
        procs = start(work, args.set, env)
        time.sleep(args.warmup)
        print(f"load {os.getloadavg()[0]:.2f}; legionctl {shutil.which('legionctl')}")
        report(procs[0].pid)
        if args.importtime:
            pkgs = imported_packages(work / "aggregator.log")
            print(f"imported {sum(pkgs.values())} modules in {len(pkgs)} top-level packages: "
                  + ", ".join(f"{p} {n}" for p, n in pkgs.most_common()))
    finally:
        for p in procs:
            stop_proc(p)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
