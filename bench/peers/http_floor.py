"""The HTTP floor under `/api/v1/query`, in one run: a bare aiohttp hello-world and the
aggregator's gateway (`/whoami`, the one-series query, the fleet average) on asyncio's loop and
on uvloop, beside VictoriaMetrics' `query_range` on the same data and its `/health` (what a
compiled front end's floor would be).

    python bench/peers/http_floor.py [--hosts 10] [--minutes 15] [--rounds 3] [--reps 200]
        [--legion NAME=LOOP[,ENV=VALUE...]]...

`--legion before=-,PYTHONPATH=/tmp/base` measures another build beside this one (installed
there with `pip install --no-deps --target /tmp/base .` from its checkout; run the bench from
outside the repository, so that the aggregator's working directory does not shadow it).

Every target is served by its own process on 127.0.0.1 (both aggregators at once, each on its own
copy of the DuckDB file) and read by the same client: `peers.http_get`, urllib, a new connection
per request, as bench/peers/run.py's query row does; and the keep-alive row (`*_ka`): the
same queries on one persistent `http.client.HTTPConnection` per target, as a poller,
`requests.Session` or a browser asks. Each round measures every target in turn
(the order reversed every other round), the median of `--reps` requests; the figure is the median
over rounds and the ratios are against VictoriaMetrics in the same run; beside it, each server's
on-CPU milliseconds per request (less sensitive to a shared machine's load). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import data_rows as d  # noqa: E402
import peers  # noqa: E402

LOOPS = ("asyncio", "uvloop")
HELLO = """
import sys
from aiohttp import web
from legion.aggregator.event_loop import run
async def hello(request):
    return web.Response(body=b'{"hello": 1}', content_type="application/json")
async def main():
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[2])).start()
    print("ready", flush=True)
    await __import__("asyncio").Event().wait()
run(main(), sys.argv[1])
"""
"""A bare aiohttp app on the loop argv[1] names, listening on port argv[2]."""


def start_hello(loop: str) -> tuple[subprocess.Popen[bytes], str]:
    """The hello-world server on `loop`; its process and URL."""
    port = peers.free_port()
    p = subprocess.Popen([sys.executable, "-c", HELLO, loop, str(port)],
                         stdout=subprocess.PIPE, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready", "hello failed"
    return p, f"http://127.0.0.1:{port}/"


def start_legion(work: Path, db: Path, loop: str, env: dict[str, str]
                 ) -> tuple[subprocess.Popen[bytes], str, str]:
    """`legionctl aggregator run` on a copy of `db` with `aggregator.event_loop` = `loop` ("-":
    not set, for a build before the key) and `env` added to its environment; its process, base
    URL and admin token."""
    import ingest as ingest_bench

    from legion.cli.client import ApiClient
    from legion.cli.config import load_config
    from legion.cli.setup_cmds import add_agent_key
    from tests.conftest import make_setup

    mine = work / f"agg-{len(list(work.glob('agg-*')))}"
    mine.mkdir()
    shutil.copy(db, mine / "legion.duckdb")
    cfg_path = make_setup(mine, storage={"db_path": str(mine / "legion.duckdb")},
                          security={"enable_tls": False},
                          aggregator={} if loop == "-" else {"event_loop": loop})
    if loop == "-":  # `init` writes every key this build knows: the other may not know it
        raw = json.loads(cfg_path.read_text())
        raw["aggregator"].pop("event_loop", None)
        cfg_path.write_text(json.dumps(raw, indent=2))
    cfg = load_config(cfg_path)
    add_agent_key(cfg, "bench")  # an aggregator refuses to start with no agent keys
    token = (cfg_path.parent / "admin.token").read_text().strip()
    api = ApiClient(cfg, token)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = ingest_bench.start_aggregator(cfg_path, mine / "agg.log")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    try:
        running = ingest_bench.wait_api(api)["gateway"].get("event_loop")
    except SystemExit:
        proc.terminate()
        raise SystemExit((mine / "agg.log").read_text()[-2000:]) from None
    assert loop in ("-", running), f"asked for {loop}, runs {running}"
    return proc, api.base, token


def keepalive_get(url: str, headers: dict[str, str] | None = None) -> Callable[[], bytes]:
    """GET `url` on its own persistent connection (`peers.KeepAlive`)."""
    ka = peers.KeepAlive(url, headers)
    return lambda: ka.get_url(url)


def measure(fn: Callable[[], Any], pid: int, reps: int) -> tuple[float, float]:
    """Median wall ms of `reps` calls after 3 warm-up calls, and the server's (`pid`) on-CPU
    ms per call (all its threads, so an idle aggregator's own work is charged too)."""
    from agent_overhead import cpu_seconds

    server = psutil.Process(pid)
    for _ in range(3):
        fn()
    out = []
    c0 = cpu_seconds(server)
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out), (cpu_seconds(server) - c0) * 1000 / reps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--minutes", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--legion", action="append", metavar="NAME=LOOP[,ENV=VALUE...]",
                    help="an aggregator to measure (default: asyncio=asyncio, uvloop=uvloop)")
    args = ap.parse_args(argv)
    variants = {}
    for spec in args.legion or ["asyncio=asyncio", "uvloop=uvloop"]:
        name, _, rest = spec.partition("=")
        loop, *envs = rest.split(",")
        variants[name] = (loop, dict(e.split("=", 1) for e in envs))
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="legion-http-floor-"))
    procs: list[Any] = []
    try:
        hour = 3_600_000
        t0 = int(time.time() * 1000) // hour * hour - 3 * hour
        fleet, values = d.fleet_ticks(args.hosts, args.minutes, t0)
        db = work / "legion.duckdb"
        d.legion_load(db, fleet, values, t0)
        vm_peer, vm_url = peers.start_victoria_metrics(work)
        procs.append(vm_peer)
        lines = d.vm_lines(fleet, values, t0)
        for i in range(0, len(lines), 200):
            d.vm_post(vm_url, b"\n".join(lines[i:i + 200]))
        peers.http_get(vm_url + "/internal/force_flush")
        end = t0 + args.minutes * 60_000
        lo = max(t0, end - hour)

        def get(url: str, headers: dict[str, str] | None = None) -> Callable[[], Any]:
            return lambda: peers.http_get(url, headers=headers)

        def vm(query: str, step: int, how: Callable[..., Any] = get) -> Callable[[], Any]:
            q = urllib.parse.urlencode({"query": query, "start": lo / 1000,
                                        "end": end / 1000, "step": step})
            return cast(Callable[[], Any], how(f"{vm_url}/api/v1/query_range?{q}"))

        vm_one = 'avg_over_time(system_cpu_usage_percent{host="host-001",cpu="total"}[1m])'
        vm_fleet = 'avg(avg_over_time(system_cpu_usage_percent{cpu="total"}[5m]))'
        targets: dict[str, tuple[Callable[[], Any], int]] = {
            "vm_one": (vm(vm_one, 60), vm_peer.pid),
            "vm_fleet": (vm(vm_fleet, 300), vm_peer.pid),
            "vm_one_ka": (vm(vm_one, 60, keepalive_get), vm_peer.pid),
            "vm_fleet_ka": (vm(vm_fleet, 300, keepalive_get), vm_peer.pid),
            # a compiled server's floor: VictoriaMetrics' (Go net/http) answer with no query
            "vm_health": (get(vm_url + "/health"), vm_peer.pid)}
        for loop in LOOPS:
            hp, hurl = start_hello(loop)
            procs.append(hp)
            targets[f"hello_{loop}"] = (get(hurl), hp.pid)
        for variant, (loop, env) in variants.items():
            ap_, base, token = start_legion(work, db, loop, env)
            procs.append(ap_)
            auth = {"Authorization": f"Bearer {token}"}
            targets[f"whoami_{variant}"] = (get(base + "/api/v1/whoami", auth), ap_.pid)
            for name, q in (("one", d.QUERY_ONE), ("fleet", d.QUERY_FLEET)):
                qs = urllib.parse.urlencode(d.http_params(q, lo, end), doseq=True)
                targets[f"{name}_{variant}"] = (get(f"{base}/api/v1/query?{qs}", auth), ap_.pid)
                targets[f"{name}_{variant}_ka"] = (
                    keepalive_get(f"{base}/api/v1/query?{qs}", auth), ap_.pid)
        for name, (t, _pid) in targets.items():  # every target answers before any timing
            assert t(), name
        peers.wait_quiet(*(p.pid for p in procs))
        rounds = []
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            rounds.append({k: measure(*targets[k], args.reps) for k in order})
        med = {k: round(statistics.median(r[k][0] for r in rounds), 3) for k in targets}
        cpu = {k: round(statistics.median(r[k][1] for r in rounds), 3) for k in targets}
        ratios = {f"{k}_vs_vm": round(med[k] / med[f"vm_{k.split('_')[0]}"
                                                  + ("_ka" if k.endswith("_ka") else "")], 2)
                  for k in med if k.startswith(("one_", "fleet_"))}
        # the floors against VictoriaMetrics' whole one-series answer
        ratios.update({f"{k}_vs_vm_one": round(med[k] / med["vm_one"], 2)
                       for k in med if k.startswith(("hello_", "whoami_", "vm_health"))})
        print(json.dumps({"machine": peers.machine(), "load_at_end": os.getloadavg(),
                          "load_at_start": load0, "points": int(values.size),
                          "median_ms": med, "ratios": ratios,
                          "server_cpu_ms_per_request": cpu, "rounds": rounds}, indent=1))
    finally:
        for p in procs:
            if hasattr(p, "terminate"):
                p.terminate()
                p.wait(30)
            else:
                p.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
