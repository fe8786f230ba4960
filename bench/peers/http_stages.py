"""Where the gateway's CPU goes per `/api/v1/query` request, in one process: the event loop
thread's CPU per request for a bare aiohttp app, `/whoami`, the one-series query and the fleet
average, each read by a client in another process (urllib, a new connection per request, as
bench/peers/http_floor.py reads them), and optionally a cProfile of the query requests.

    python bench/peers/http_stages.py [--reps 1000] [--rounds 3] [--front on|off]
        [--profile hello|whoami|one|fleet [--top 40] [--sort tottime]]

`PYTHONPATH=/tmp/base python bench/peers/http_stages.py` measures another build (installed
there with `pip install --no-deps --target /tmp/base .` from its checkout); "build" in the
output says which one ran.

The gateway is `create_app` over a real Store (DuckDB file in a temp dir), on uvloop, with
security.enable_tls off and the access log on, as `legionctl aggregator run` serves it. Prints
JSON: per target the median over rounds of the loop thread's CPU microseconds per request
(the number the stages are read from: less sensitive to a shared machine than wall clock).
A query the fast front answers (gateway/front.py) never enters the app: its `in_app_cpu_us` is
0, and `front_answered` counts those requests; `--front off` serves every request through
aiohttp, for a comparison in one build.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
import legion.aggregator.store  # noqa: E402,F401 - before data_rows puts the repository first

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import data_rows as d  # noqa: E402
import peers  # noqa: E402

LOG_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
"""`legionctl`'s (legion/cli/main.py)."""

CLIENT = """
import sys, urllib.request
url, token, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
for _ in range(reps):
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, r.status
        r.read()
"""
"""Read argv[1] argv[3] times, a new connection each time (urllib), with the bearer argv[2]."""


async def _hello(request: Any) -> Any:
    from aiohttp import web

    return web.Response(body=b'{"hello": 1}', content_type="application/json")


async def _client(url: str, token: str, reps: int) -> None:
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, token, str(reps))
    assert await p.wait() == 0, url


GC = [0.0, 0.0]
"""Seconds the garbage collector ran (all generations), and when the running one started."""


def _count_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        GC[1] = time.perf_counter()
    else:
        GC[0] += time.perf_counter() - GC[1]


IN_APP = [0.0]
"""Loop thread CPU seconds spent inside `Application._handle` (routing, middlewares, handler)."""


def _count_in_app() -> None:
    """Wrap `Application._handle` to add its CPU time to IN_APP (a query the head answers
    never suspends, so the thread's CPU between entry and exit is its own)."""
    from aiohttp import web

    inner = web.Application._handle

    async def timed(self: Any, request: Any) -> Any:
        c = time.thread_time()
        try:
            return await inner(self, request)
        finally:
            IN_APP[0] += time.thread_time() - c
    web.Application._handle = timed  # type: ignore[method-assign]


async def _cpu_per_request(url: str, token: str, reps: int,
                           prof: cProfile.Profile | None = None
                           ) -> tuple[float, float, float, float]:
    """(loop thread CPU µs, of it inside the app µs, wall µs, garbage collection µs) per
    request while a client process reads `url` `reps` times."""
    await _client(url, token, 5)  # warm-up (and the client's own start-up, paid once)
    c0, w0, a0, g0 = time.thread_time(), time.perf_counter(), IN_APP[0], GC[0]
    if prof is not None:
        prof.enable()
    await _client(url, token, reps)
    if prof is not None:
        prof.disable()
    return ((time.thread_time() - c0) * 1e6 / reps, (IN_APP[0] - a0) * 1e6 / reps,
            (time.perf_counter() - w0) * 1e6 / reps, (GC[0] - g0) * 1e6 / reps)


async def serve_and_measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build the data, serve the bare app and the gateway, measure every target."""
    from aiohttp import web

    from legion.aggregator.gateway import AuditLog, TokenStore, create_app
    from legion.aggregator.gateway.app import start_gateway, stop_gateway
    from legion.aggregator.store.store import Store
    from legion.cli.config import config_from_dict

    hour = 3_600_000
    t0 = int(time.time() * 1000) // hour * hour - 3 * hour
    fleet, values = d.fleet_ticks(args.hosts, args.minutes, t0)
    db = work / "legion.duckdb"
    d.legion_load(db, fleet, values, t0)
    end = t0 + args.minutes * 60_000
    lo = max(t0, end - hour)
    cfg = config_from_dict({"security": {"enable_tls": False}}, base_dir=work
                           ).aggregator_settings()
    store = Store(db)
    tokens = TokenStore(work / "tokens.json")
    token = tokens.add("admin", "admin")
    app = create_app(cfg, store, dict, tokens, audit=AuditLog(work / "audit.log"))
    server = await start_gateway(app, cfg, host="127.0.0.1", port=peers.free_port(),
                                 **({} if args.front == "on" else {"fast_query": False}))
    fronts = [s for s in server.runner.sites if hasattr(s, "answers")]
    bare = web.Application()
    bare.router.add_get("/", _hello)
    runner = web.AppRunner(bare, access_log=None)
    await runner.setup()
    hport = peers.free_port()
    await web.TCPSite(runner, "127.0.0.1", hport).start()
    targets = {"hello": (f"http://127.0.0.1:{hport}/", ""),
               "whoami": (server.url + "/api/v1/whoami", token)}
    for name, q in (("one", d.QUERY_ONE), ("fleet", d.QUERY_FLEET)):
        qs = urllib.parse.urlencode(d.http_params(q, lo, end), doseq=True)
        targets[name] = (f"{server.url}/api/v1/query?{qs}", token)
    try:
        rounds = []
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            rounds.append({k: await _cpu_per_request(*targets[k], args.reps) for k in order})
        prof_text = ""
        if args.profile:
            prof = cProfile.Profile()
            await _cpu_per_request(*targets[args.profile], args.reps, prof)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
            prof_text = out.getvalue()
    finally:
        await runner.cleanup()
        await stop_gateway(server)
        store.close()
    med = {k: {"cpu_us": round(statistics.median(r[k][0] for r in rounds), 1),
               "in_app_cpu_us": round(statistics.median(r[k][1] for r in rounds), 1),
               "wall_us": round(statistics.median(r[k][2] for r in rounds), 1),
               "gc_us": round(statistics.median(r[k][3] for r in rounds), 1)} for k in targets}
    import legion.aggregator.gateway as built

    return {"build": str(Path(built.__file__).parents[2]), "load": os.getloadavg(),
            "reps": args.reps, "front": args.front, "per_request": med,
            "front_answered": sum(s.answers.answered for s in fronts),
            "over_hello_cpu_us": {k: round(v["cpu_us"] - med["hello"]["cpu_us"], 1)
                                  for k, v in med.items()},
            "profile": prof_text}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--minutes", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--profile", choices=("hello", "whoami", "one", "fleet"))
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sort", default="tottime", help="pstats order: tottime, cumulative, ...")
    ap.add_argument("--front", choices=("on", "off"), default="on",
                    help="off: every request through aiohttp (start_gateway's fast_query)")
    ap.add_argument("--access-log", choices=("file", "off"), default="file",
                    help="file: each line written to a file as `legionctl`'s stderr is by "
                         "run.py (the default); off: the access logger above INFO")
    args = ap.parse_args(argv)
    from legion.aggregator.event_loop import run

    _count_in_app()
    gc.callbacks.append(_count_gc)

    with tempfile.TemporaryDirectory(prefix="legion-http-stages-") as tmp:
        with open(Path(tmp) / "aggregator.log", "a") as log_file:  # legionctl's log format
            logging.basicConfig(level=logging.INFO, stream=log_file, format=LOG_FORMAT)
            if args.access_log == "off":
                logging.getLogger("legion.aggregator.gateway.access").setLevel(logging.WARNING)
            result = run(serve_and_measure(Path(tmp), args), "uvloop")
            logging.getLogger().handlers.clear()
        result["access_log"] = args.access_log
    prof = result.pop("profile")
    print(json.dumps(result, indent=1))
    if prof:
        print(prof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
