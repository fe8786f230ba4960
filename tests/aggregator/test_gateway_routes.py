"""The gateway's route table is what the app serves: every route once, each handler at module
level with a declared action, its dependencies on the app's typed keys (real store and tokens)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from legion.aggregator.alerts.engine import AlertEngine
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.gateway import TokenStore, create_app
from legion.aggregator.gateway.alerts_api import offers_queries
from legion.aggregator.gateway.keys import (
    BANDS_KEY,
    HUB_KEY,
    RETRAIN_KEY,
    SOURCES_KEY,
    STORE_KEY,
    TELEMETRY_KEY,
    TOKENS_KEY,
)
from legion.aggregator.gateway.routes import ALERT_QUERY_ROUTES, ROUTES
from legion.aggregator.store.store import Store
from legion.cli.config import Config, config_to_dict, load_config
from legion.kernel.config import CONFIG_FILENAME


Parts = tuple[AggregatorSettings, Store, TokenStore]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(config_to_dict(Config())))
    config = load_config(str(tmp_path / CONFIG_FILENAME)).aggregator_settings()
    store = Store(config.storage.db_path)
    try:
        yield config, store, TokenStore(Path(config.aggregator.tokens_path))
    finally:
        store.close()


def served(app: web.Application) -> dict[tuple[str, str], object]:
    """(method, path) -> handler of every plain route the app answers."""
    out: dict[tuple[str, str], object] = {}
    for r in app.router.routes():
        info = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is not None:
            out[(r.method, str(path))] = r.handler
    return out


def test_the_table_is_what_the_app_serves(parts: Parts) -> None:
    config, store, tokens = parts
    app = create_app(config, store, lambda: {}, tokens)
    routes = served(app)
    for method, path, handler in ROUTES:
        assert routes.get((method, path)) is handler, (method, path)
        if method == "GET":
            assert routes.get(("HEAD", path)) is handler, path  # as web.get always did
        assert getattr(handler, "__legion_action__", None) in ("read", "write", "configure",
                                                               "delete"), path
        assert "." not in handler.__qualname__, path  # module level, not a closure
    assert len({(m, p) for m, p, _ in ROUTES}) == len(ROUTES)
    for method, path, _ in ALERT_QUERY_ROUTES:  # no alerting engine: those are not served
        assert (method, path) not in routes, path
    assert app[STORE_KEY] is store and app[TOKENS_KEY] is tokens
    assert app[HUB_KEY].store is store
    assert app[SOURCES_KEY] == {} and app[RETRAIN_KEY] is None and app[BANDS_KEY] is None
    assert app[TELEMETRY_KEY].max_clients == config.dashboard_config.max_ws_clients


def test_alert_query_routes_follow_the_engine() -> None:
    assert offers_queries(None) is False
    # The real engine class offers AlertQueries (rules_list and the rest) besides AlertActions.
    assert offers_queries(AlertEngine)  # type: ignore[arg-type]
    for _, path, handler in ALERT_QUERY_ROUTES:
        assert getattr(handler, "__legion_action__", None) in ("read", "write"), path


def test_client_slots_and_counters(parts: Parts) -> None:
    config, store, tokens = parts
    app = create_app(config, store, lambda: {}, tokens)
    tm = app[TELEMETRY_KEY]
    assert all(v == 0 for v in tm.counters.values())
    taken = [tm.reserve() for _ in range(tm.max_clients + 2)]
    assert taken.count(True) == tm.max_clients and taken[-1] is False
    tm.release()
    assert tm.reserve() is True
    tm.count_failure("bad_token")
    status = tm.status(3, False, {"ticks": 7, "tick_errors": 1})
    assert status["ws_clients"] == 3 and status["bad_token"] == 1 and status["hub"]["ticks"] == 7
