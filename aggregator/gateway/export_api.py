"""Parquet export through the aggregator (the one process that opens the database).

`POST /api/v1/exports {"since", "until", "metric"?, "out"}` starts an export in a thread and
answers its id; `GET /api/v1/exports/{id}` reports progress (days done / total, rows, files).
The files are written by the aggregator on its host, into `out` (an absolute path). Admin only
(`configure`): it writes files on the server. Audited like every write.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from legion.aggregator.gateway.api import _METRIC_RE
from legion.aggregator.gateway.auth import AUDIT_DETAILS_KEY, json_error, requires
from legion.aggregator.gateway.timefmt import now_ms, parse_time_ms
from legion.aggregator.store import export_parquet
from legion.kernel.errors import LegionError

MAX_JOBS_KEPT = 50


class ExportJobs:
    """The exports of one gateway app (`EXPORTS_KEY`): started in threads, kept for polling."""

    def __init__(self, store: Any) -> None:
        # export_parquet reads the local DuckDB file (a RemoteQueryStore forwards to it).
        self.store = store
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def run(self, job_id: str, since: int, until: int, metric: str | None, out: Path) -> None:
        """One export, in its own thread; its progress and outcome go to `jobs[job_id]`."""
        jobs, lock = self.jobs, self.lock

        def progress(done: int, total: int) -> None:
            with lock:
                jobs[job_id].update(done=done, total=total)
        try:
            result = export_parquet(self.store, since, until, metric=metric, out_dir=out,
                                    progress=progress)
            with lock:
                jobs[job_id].update(state="done", **result, finished_ms=now_ms())
        except (LegionError, OSError) as exc:
            with lock:
                jobs[job_id].update(state="failed", error=str(exc), finished_ms=now_ms())


EXPORTS_KEY = web.AppKey("legion_exports", ExportJobs)


@requires("configure")
async def export_start(request: web.Request) -> web.Response:
    """POST /api/v1/exports: start an export (202 with its id)."""
    exports = request.app[EXPORTS_KEY]
    jobs, lock = exports.jobs, exports.lock
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "body must be JSON")
    if not isinstance(body, dict):
        return json_error(400, "body must be a JSON object")
    unknown = set(body) - {"since", "until", "metric", "out"}
    if unknown:
        return json_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
    out, metric = body.get("out"), body.get("metric")
    if not isinstance(out, str) or not Path(out).is_absolute():
        return json_error(400, "'out' must be an absolute directory path")
    if metric is not None and (not isinstance(metric, str) or not _METRIC_RE.match(metric)):
        return json_error(400, "'metric' is not a metric name")
    now = now_ms()
    try:
        since = parse_time_ms(str(body.get("since", "24h")), now)
        until = parse_time_ms(str(body["until"]), now) if body.get("until") else now
    except (ValueError, TypeError) as exc:
        return json_error(400, str(exc))
    if until <= since:
        return json_error(400, "'until' must be after 'since'")
    job_id = uuid.uuid4().hex[:12]
    request[AUDIT_DETAILS_KEY] = {"export": job_id, "out": out, "metric": metric}
    with lock:
        if len(jobs) >= MAX_JOBS_KEPT:
            for old in sorted(jobs, key=lambda k: jobs[k]["started_ms"])[:10]:
                if jobs[old]["state"] != "running":
                    del jobs[old]
        jobs[job_id] = {"id": job_id, "state": "running", "done": 0, "total": 0,
                        "since_ms": since, "until_ms": until, "metric": metric, "out": out,
                        "started_ms": int(time.time() * 1000)}
    threading.Thread(target=exports.run, args=(job_id, since, until, metric, Path(out)),
                     name=f"legion-export-{job_id}", daemon=True).start()
    return web.json_response(jobs[job_id], status=202)


@requires("read")
async def export_get(request: web.Request) -> web.Response:
    """GET /api/v1/exports/{job_id}: an export's progress or outcome."""
    exports = request.app[EXPORTS_KEY]
    with exports.lock:
        job = exports.jobs.get(request.match_info["job_id"])
        snapshot = dict(job) if job else None
    if snapshot is None:
        return json_error(404, "no such export")
    await asyncio.sleep(0)
    return web.json_response(snapshot)
