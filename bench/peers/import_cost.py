"""What each top-level package the aggregator imports costs in memory (issue 17).

    python bench/peers/import_cost.py [--top 40]

A fresh interpreter imports what `legionctl aggregator run` imports before it serves (the
command module, the service and the gateway, the lean way the service does) with a meter on
every module's loader: the growth of `/proc/self/smaps_rollup` while a module is created and
executed, less what the modules it imports grew meanwhile, is charged to that module's
top-level package (the project's own by component). Anonymous = private memory; file = library
pages touched (shared with other processes, but counted in RSS). A package's figure is what
leaving it out would save.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

METER = """
import importlib.abc, json, sys
def roll():
    out = {}
    for line in open("/proc/self/smaps_rollup").read().splitlines()[1:]:
        k, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            out[k] = int(rest.split()[0])
    return out["Anonymous"], out["Rss"] - out["Anonymous"]
cost = {}
stack = []
last = [roll()]
def switch(push=None):
    now = roll()
    if stack:
        c = cost.setdefault(stack[-1], [0, 0, 0])
        c[0] += now[0] - last[0][0]
        c[1] += now[1] - last[0][1]
    if push is None:
        stack.pop()
    else:
        stack.append(push)
    last[0] = now
class Metered(importlib.abc.Loader):
    def __init__(self, inner, name):
        self.inner, self.name = inner, name
    def create_module(self, spec):
        switch(self.name)
        try:
            return self.inner.create_module(spec)
        finally:
            switch()
    def exec_module(self, module):
        cost.setdefault(self.name, [0, 0, 0])[2] = 1
        switch(self.name)
        try:
            self.inner.exec_module(module)
        finally:
            switch()
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
class Meter(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = Metered(spec.loader, name)
                return spec
        return None
start = roll()
from legion.aggregator.lean_imports import CLIENT_ONLY, NEVER_USED, keep_out
with keep_out(CLIENT_ONLY + NEVER_USED):
    sys.meta_path.insert(1, Meter())
    import legion.cli.main, legion.cli.run_cmds, legion.aggregator.service
    import legion.aggregator.gateway.app
print(json.dumps({"start": start, "cost": cost}))
"""


def package(module: str) -> str:
    """The top-level package, or the project's component (legion.aggregator.gateway)."""
    parts = module.split(".")
    if parts[0] != "legion":
        return parts[0].lstrip("_") if parts[0] in ("_duckdb", "_ssl", "_hashlib") else parts[0]
    return ".".join(parts[:3 if module.startswith("legion.aggregator.") else 2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    res = json.loads(subprocess.run([sys.executable, "-c", METER], capture_output=True,
                                    text=True, timeout=300, check=True).stdout)
    anon: dict[str, int] = {}
    file: dict[str, int] = {}
    count: dict[str, int] = {}
    for name, (a, f, executed) in res["cost"].items():
        top = package(name)
        anon[top] = anon.get(top, 0) + a
        file[top] = file.get(top, 0) + f
        count[top] = count.get(top, 0) + executed
    a0, f0 = res["start"]
    print(f"interpreter + site: anon {a0 / 1024:.1f} MiB, file {f0 / 1024:.1f}")
    print(f"imports: {sum(count.values())} modules, anon +{sum(anon.values()) / 1024:.1f} MiB, "
          f"file +{sum(file.values()) / 1024:.1f} MiB")
    print("   anon    file  modules  package (own cost, without what it imports)")
    for top, a in sorted(anon.items(), key=lambda kv: -(kv[1] + file[kv[0]]))[:args.top]:
        print(f"{a / 1024:7.2f} {file[top] / 1024:7.2f} {count[top]:8d}  {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
