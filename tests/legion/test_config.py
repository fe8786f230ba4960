"""Config: the seed's file loads as written; every problem is reported with its key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq

from legion.cli.config import Config, config_from_dict, config_to_dict, load_config
from legion.kernel import curve
from legion.kernel.errors import ConfigError, TransportError

SEED = {
    "collection_interval": 1.0, "analysis_interval": 5.0,
    "alert_thresholds": {"cpu_usage": 80.0, "memory_usage": 85.0, "disk_usage": 90.0,
                         "agent_response_time": 5000, "agent_success_rate": 85.0},
    "ai_settings": {"anomaly_detection_enabled": True, "predictive_analytics_enabled": True,
                    "ml_threshold_adjustment": True, "model_retrain_interval": 86400},
    "dashboard_config": {"websocket_port": 8765, "update_interval_ms": 1000,
                         "max_history_points": 1000},
    "security": {"enable_tls": True, "certificate_path": "./certs/server.crt",
                 "private_key_path": "./certs/server.key",
                 "allowed_origins": ["tauri://localhost"]},
}


def test_seed_config_loads_with_its_meaning(tmp_path: Path) -> None:
    f = tmp_path / "monitoring_config.json"
    f.write_text(json.dumps(SEED))
    cfg = load_config(f)
    assert cfg.alert_thresholds.agent_response_time == 5000.0
    assert cfg.dashboard_config.websocket_port == 8765
    assert cfg.security.allowed_origins == ("tauri://localhost",)
    assert cfg.path(cfg.security.certificate_path) == (tmp_path / "certs/server.crt").resolve()
    assert cfg.analytics.prediction_config["memory_usage"].horizon_hours == 12


def test_defaults_are_the_seeds() -> None:
    d = config_to_dict(Config())
    for section, values in SEED.items():
        if isinstance(values, dict):
            for k, v in values.items():
                assert d[section][k] == v, f"{section}.{k}"
        else:
            assert d[section] == values


def test_every_problem_reported_at_once_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"collection_interval": 0, "bogus": 1,
                          "security": {"enable_tls": "yes", "allowed_origins": "x"},
                          "agent": {"spool_max_bytes": 10, "nope": True},
                          "analytics": {"prediction_config": {"x": {"horizon_hours": 1}}}})
    got = "\n".join(info.value.problems)
    for path in ("collection_interval", "bogus: unknown key", "security.enable_tls",
                 "security.allowed_origins", "agent.spool_max_bytes", "agent.nope",
                 "analytics.prediction_config.x.alert_threshold"):
        assert path in got, path
    assert len(info.value.problems) == 7


def test_commit_gathering_stays_below_the_agents_earliest_resend() -> None:
    # resend 2 s less 20 % jitter: the first resend can come after 1.6 s; gathering gets 3/4
    assert config_from_dict({}).aggregator.commit_max_delay_ms == 3000
    short = {"agent": {"resend_timeout_secs": 2.0}}
    assert config_from_dict(short).aggregator.commit_max_delay_ms == 1200  # the default shrinks
    for ok in (0, 1200):
        cfg = config_from_dict({**short, "aggregator": {"commit_max_delay_ms": ok}})
        assert cfg.aggregator.commit_max_delay_ms == ok
    with pytest.raises(ConfigError) as info:
        config_from_dict({**short, "aggregator": {"commit_max_delay_ms": 1201}})
    assert info.value.problems == [
        "aggregator.commit_max_delay_ms: 1201 must be <= 1200 (3/4 of the agents' earliest "
        "resend, 1600 ms: agent.resend_timeout_secs 2.0 less its 20% jitter), or 0 to commit "
        "each batch at once"]


def test_round_trip_and_frozen(tmp_path: Path) -> None:
    cfg = config_from_dict(config_to_dict(Config()), base_dir=tmp_path)
    assert cfg == Config(base_dir=str(tmp_path.resolve()))
    with pytest.raises(AttributeError):
        cfg.collection_interval = 2.0  # type: ignore[misc]


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(bad)


def test_old_libzmq_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A libzmq older than 4.3.2 cannot be installed beside this one: its version is faked.
    monkeypatch.setattr(zmq, "zmq_version", lambda: "4.3.1")
    with pytest.raises(TransportError, match="CVE-2019-13132"):
        curve.require_curve()


def test_libzmq_without_curve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Likewise a build without CURVE: `zmq.has` is faked.
    monkeypatch.setattr(zmq, "has", lambda cap: False)
    with pytest.raises(TransportError, match="CURVE"):
        curve.require_curve()


def test_thresholds_and_heartbeats_are_validated() -> None:
    """Issue 13: a CPU threshold of 180 % was accepted; heartbeat keys were never checked."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"alert_thresholds": {"cpu_usage": 180, "agent_success_rate": -1,
                                               "agent_response_time": 0},
                          "agent": {"heartbeat_interval_secs": 0},
                          "aggregator": {"heartbeat_interval_secs": 1e9}})
    text = str(info.value)
    for key in ("alert_thresholds.cpu_usage", "alert_thresholds.agent_success_rate",
                "alert_thresholds.agent_response_time", "agent.heartbeat_interval_secs",
                "aggregator.heartbeat_interval_secs"):
        assert key in text, key
    assert config_from_dict({"alert_thresholds": {"cpu_usage": 100}}).alert_thresholds.cpu_usage == 100


def test_heartbeat_settings_reach_the_sockets() -> None:
    """`*.heartbeat_interval_secs` set the ZMTP heartbeat of the Curve sockets (were unused)."""
    from legion.aggregator.receiver import heartbeat_ms
    from legion.kernel.curve import client_socket, server_socket

    cfg = config_from_dict({"aggregator": {"heartbeat_interval_secs": 0.5}}).aggregator_settings()
    assert heartbeat_ms(cfg) == 500
    ctx = zmq.Context()
    try:
        keys = zmq.curve_keypair()
        for sock in (server_socket(ctx, zmq.SUB, keys, heartbeat_ms(cfg)),
                     client_socket(ctx, zmq.PUB, keys[0], keys, 700)):
            ivl = sock.getsockopt(zmq.HEARTBEAT_IVL)
            assert ivl in (500, 700) and sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 3 * ivl
            sock.close(0)
    finally:
        ctx.term()
