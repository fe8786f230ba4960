"""JSON API handlers under /api/v1 (see docs/api.md); every handler declares its action.

Handlers read their dependencies from the app's typed keys (keys.py); routes.py lists them.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson
from aiohttp import web
from multidict import MultiMapping

from legion.aggregator.gateway.auth import AUDIT_DETAILS_KEY, json_error, principal_of, requires
from legion.aggregator.gateway.keys import (
    GATEWAY_STATUS_KEY,
    HUB_KEY,
    STATUS_KEY,
    STORE_KEY,
    TOKENS_KEY,
)
from legion.aggregator.gateway.resolution import RESOLUTION_HEADER, finest_holding
from legion.aggregator.gateway.timefmt import iso_ms, now_ms, parse_duration_ms, parse_time_ms
from legion.aggregator.gateway.tokens import ROLES
from legion.kernel.errors import AuthError, LegionError, QueryError, StoreError
from legion.proto.limits import MAX_LABEL_KEY_LEN, MAX_NAME_LEN, MAX_NODE_LEN
from legion.proto.names import LABEL_KEY_RE, METRIC_GLOB_RE, NODE_RE, within

AGGS = ("avg", "min", "max", "sum", "count", "last", "rate")
QUERY_MAX_POINTS = 200_000
QUERY_MAX_BUCKETS = 100_000
_NODE_RE = within(NODE_RE, MAX_NODE_LEN)
_METRIC_RE = within(METRIC_GLOB_RE, MAX_NAME_LEN)
_LABEL_KEY_RE = within(LABEL_KEY_RE, MAX_LABEL_KEY_LEN)


class HasQuery(Protocol):
    """What the parameter checks read of a request: its decoded query (aiohttp's `Request`,
    or the fast query front's, front.py)."""

    @property
    def query(self) -> MultiMapping[str]: ...


class BadRequest(Exception):
    """A query parameter or body failed validation (-> 400)."""

    status = 400


def _params(request: HasQuery, allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    query = request.query
    for k in query:
        if k not in allowed:
            hint = " (send the token as 'Authorization: Bearer')" if k == "token" else ""
            raise BadRequest(f"unknown parameter {k!r}{hint}; allowed: "
                             f"{', '.join(sorted(allowed)) or 'none'}")
    if len(query) != len(set(query)):  # some name repeats: a getall per name only then
        for k in allowed - {"label"}:
            if len(query.getall(k, [])) > 1:
                raise BadRequest(f"parameter {k!r} given more than once")


def _opt(request: HasQuery, name: str, pattern: re.Pattern[str]) -> str | None:
    v = request.query.get(name)
    if v is None or v == "":
        return None
    if not pattern.match(v):
        raise BadRequest(f"invalid {name} {v!r}")
    return v


def parse_query(request: HasQuery, now: int) -> dict[str, Any]:
    """Validate /api/v1/query parameters into `Store.query` keyword arguments."""
    _params(request, ("metric", "node", "since", "until", "step", "agg", "label", "group_by"))
    metric = _opt(request, "metric", _METRIC_RE)
    if metric is None:
        raise BadRequest("missing required parameter 'metric'")
    args: dict[str, Any] = {"metric": metric, "node": _opt(request, "node", _NODE_RE)}
    for name in ("since", "until"):
        v = request.query.get(name)
        try:
            args[f"{name}_ms"] = parse_time_ms(v, now) if v else None
        except ValueError as exc:
            raise BadRequest(f"invalid {name}: {exc}") from None
    if args["since_ms"] is not None and args["until_ms"] is not None \
            and args["until_ms"] <= args["since_ms"]:
        raise BadRequest("'until' must be after 'since'")
    step = request.query.get("step")
    args["step_ms"] = None
    if step:
        try:
            args["step_ms"] = parse_duration_ms(step)
        except ValueError as exc:
            raise BadRequest(f"invalid step: {exc}") from None
        if args["step_ms"] < 1000:
            raise BadRequest("step must be at least 1s")
        lo = args["since_ms"]
        if lo is not None and ((args["until_ms"] or now) - lo) // args["step_ms"] \
                > QUERY_MAX_BUCKETS:
            raise BadRequest(f"too many buckets (max {QUERY_MAX_BUCKETS}): use a larger step")
    agg = request.query.get("agg", "avg")
    if agg not in AGGS:
        raise BadRequest(f"invalid agg {agg!r}: one of {', '.join(AGGS)}")
    if agg != "avg" and not step:
        raise BadRequest("'agg' needs 'step'")
    args["agg"] = agg
    args["group_by"] = _group_by(request.query.get("group_by"), bool(step))
    labels: dict[str, str] = {}
    for item in request.query.getall("label", []):
        k, sep, v = item.partition("=")
        if not sep or not _LABEL_KEY_RE.match(k):
            raise BadRequest(f"invalid label {item!r}: use label=key=value")
        if k in labels:
            raise BadRequest(f"label {k!r} given more than once")
        labels[k] = v
    args["labels"] = labels or None
    return args


def _group_by(value: str | None, stepped: bool) -> str | None:
    """`group_by`: "*", or comma-separated label keys and/or "node"."""
    if not value:
        return None
    if not stepped:
        raise BadRequest("'group_by' needs 'step'")
    keys = value.split(",")
    if value != "*" and (len(set(keys)) != len(keys) or not all(
            k == "node" or _LABEL_KEY_RE.match(k) for k in keys)):
        raise BadRequest(f"invalid group_by {value!r}: '*' or distinct label keys and/or "
                         "'node', comma-separated")
    return value


def _iso_rows(rows: list[dict[str, Any]], *fields: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        r = dict(r)
        for f in fields:
            if f"{f}_ms" in r:
                r[f] = iso_ms(r[f"{f}_ms"])
        out.append(r)
    return out


async def _call_store(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


@requires("read")
async def whoami(request: web.Request) -> web.Response:
    """GET /api/v1/whoami: the caller's user, role and permissions."""
    p = principal_of(request)
    assert p is not None
    _params(request, ())
    return web.json_response({"user": p.name, "role": p.role,
                              "permissions": list(p.permissions)})


@requires("read")
async def nodes(request: web.Request) -> web.Response:
    """GET /api/v1/nodes."""
    _params(request, ())
    rows = await _call_store(request.app[STORE_KEY].nodes)
    return web.json_response(_iso_rows(rows, "first_seen", "last_seen"))


@requires("read")
async def series(request: web.Request) -> web.Response:
    """GET /api/v1/series?node=&metric= (the metric may be a glob)."""
    _params(request, ("node", "metric"))
    metric = _opt(request, "metric", _METRIC_RE)
    glob = metric is not None and any(c in metric for c in "*?")
    rows = await _call_store(request.app[STORE_KEY].series,
                             node=_opt(request, "node", _NODE_RE),
                             metric=None if glob else metric)
    if glob:
        rows = [r for r in rows if fnmatch.fnmatchcase(r["metric"], metric)]
    return web.json_response(rows)


@requires("read")
async def query(request: web.Request) -> web.Response:
    """GET /api/v1/query (parameters: `parse_query`)."""
    store = request.app[STORE_KEY]
    args = parse_query(request, now_ms())
    source = "raw"
    if args["step_ms"] is None:  # beyond raw retention: the finest tier holding `since`
        source, width = await _call_store(finest_holding, store, args["since_ms"],
                                          args["until_ms"])
        args["step_ms"] = width
    # What the query head holds is answered here, on the loop: a thread hop cost more CPU
    # than the query itself (docs/peers.md, bench/peers/http_floor.py).
    rows = store.query_now(**args)
    if rows is None:
        rows = await _call_store(store.query, **args)
    if len(rows) > QUERY_MAX_POINTS:
        raise BadRequest(f"query matched {len(rows)} points (max {QUERY_MAX_POINTS}): "
                         "narrow 'since'/'until' or add a 'step'")
    resp = web.Response(body=query_body(rows), content_type="application/json")
    resp.headers[RESOLUTION_HEADER] = source
    return resp


def query_body(rows: list[dict[str, Any]]) -> bytes:
    """The query rows as JSON, each with its `ts` (ISO 8601, formatted once per timestamp);
    orjson: a tenth of `json.dumps`' time, and a NaN value is `null` (valid JSON)."""
    iso: dict[int, str | None] = {}
    for r in rows:
        t = r.get("ts_ms")
        if t is not None:
            r["ts"] = iso[t] if t in iso else iso.setdefault(t, iso_ms(t))
    return orjson.dumps(rows)


@requires("read")
async def status_route(request: web.Request) -> web.Response:
    """GET /api/v1/status: the aggregator's status plus the gateway's."""
    _params(request, ())
    body = dict(await asyncio.to_thread(request.app[STATUS_KEY]))
    body["gateway"] = request.app[GATEWAY_STATUS_KEY]()
    return web.json_response(body)


@requires("read")
async def fleet(request: web.Request) -> web.Response:
    """GET /api/v1/fleet: the hub's snapshot; read afresh only when no loop keeps it current.

    With the loop running, the snapshot is at most one tick old (its `ts_ms` says when) and a
    request never waits for a rebuild: at 100 hosts a forced one took seconds (issue 16)."""
    _params(request, ())
    hub = request.app[HUB_KEY]
    f = hub.fleet
    if f is None or (not hub.running
                     and now_ms() - f["ts_ms"] > 2 * hub.interval_s * 1000 + 1000):
        f = await hub.refresh()
    return web.json_response(f)


@requires("configure")
async def users_list(request: web.Request) -> web.Response:
    """GET /api/v1/users (admin)."""
    _params(request, ())
    return web.json_response(_iso_rows(request.app[TOKENS_KEY].list(), "created"))


@requires("configure")
async def users_add(request: web.Request) -> web.Response:
    """POST /api/v1/users {"name", "role"} (admin): the new user's token, once."""
    _params(request, ())
    tokens = request.app[TOKENS_KEY]
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body must be JSON: {\"name\": ..., \"role\": ...}") from None
    if not isinstance(body, dict) or set(body) - {"name", "role"}:
        raise BadRequest("body must be {\"name\": ..., \"role\": ...}")
    name, role = body.get("name"), body.get("role", "viewer")
    if not isinstance(name, str) or not isinstance(role, str):
        raise BadRequest("'name' and 'role' must be strings")
    if role not in ROLES:
        raise BadRequest(f"invalid role {role!r}: one of {', '.join(ROLES)}")
    request[AUDIT_DETAILS_KEY] = {"user": name, "role": role}
    try:
        token = await asyncio.to_thread(tokens.add, name, role)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    except AuthError as exc:
        return json_error(409, str(exc))
    created: dict[str, Any] = next((u for u in tokens.list() if u["name"] == name), {})
    return web.json_response({"name": name, "role": role, "token": token,
                              "created_ms": created.get("created_ms"),
                              "created": iso_ms(created.get("created_ms"))}, status=201)


@requires("delete")
async def users_revoke(request: web.Request) -> web.Response:
    """DELETE /api/v1/users/{name} (admin)."""
    _params(request, ())
    name = request.match_info["name"]
    request[AUDIT_DETAILS_KEY] = {"user": name}
    try:
        ok = await asyncio.to_thread(request.app[TOKENS_KEY].revoke, name)
    except AuthError as exc:
        return json_error(409, str(exc))
    if not ok:
        return json_error(404, f"no user {name!r}")
    return web.json_response({"revoked": name})


def json_answer(response: web.StreamResponse) -> web.StreamResponse:
    """An error answer not yet sent and not JSON becomes `{"error": reason}`."""
    if response.status >= 400 and not response.prepared \
            and response.content_type != "application/json":
        return json_error(response.status, response.reason or "error")
    return response


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON answer to an error a handler raised; never leaks a traceback. Call it in the
    `except` block: what is not an error to answer (a redirect, a JSON HTTP error, a lost
    connection) is raised again."""
    if isinstance(exc, BadRequest):
        return json_error(400, str(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400 or exc.content_type == "application/json":
            raise exc
        return json_error(exc.status, exc.reason)
    if isinstance(exc, QueryError):  # a range or step the store cannot answer: the caller's
        return json_error(400, str(exc))
    if isinstance(exc, StoreError):  # e.g. a database being reopened: try again shortly
        request.app.logger.warning("event=api_error path=%s error=%s", request.path, exc)
        return json_error(503, f"storage unavailable: {str(exc).splitlines()[0]}")
    if isinstance(exc, LegionError):
        request.app.logger.warning("event=api_error path=%s error=%s", request.path, exc)
        return json_error(500, "internal error")
    if isinstance(exc, ConnectionError):
        raise exc
    request.app.logger.error("event=api_internal_error path=%s", request.path, exc_info=exc)
    return json_error(500, "internal error")
