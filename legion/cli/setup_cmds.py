"""`legionctl init` and `legionctl keys`: a complete setup directory and agent key management."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import click

from legion.aggregator.config import AggregatorConfig, SecurityConfig, StorageConfig
from legion.analytics.config import AnalyticsConfig
from legion.cli.client import TOKEN_FILENAME
from legion.cli.common import config_option, load
from legion.cli.config import Config, config_to_dict
from legion.cli.output import format_option, render
from legion.kernel.config import CONFIG_FILENAME
from legion.kernel.curve import create_keypair, read_node_binding, require_curve
from legion.kernel.errors import LegionError
from legion.kernel.ports import free_ports
from legion.node_agent.config import AgentConfig
from legion.proto.names import NODE_RE

AGGREGATOR_KEY = "aggregator"
WORKER_KEY = "worker"


def default_config(d: Path) -> Config:
    """The embedded defaults with every path inside `d` and everything on loopback."""

    def p(*parts: str) -> str:
        return str(d.joinpath(*parts))

    return Config(
        security=SecurityConfig(enable_tls=True, certificate_path=p("certs", "server.crt"),
                                private_key_path=p("certs", "server.key")),
        agent=dataclasses.replace(
            AgentConfig(), server_public_key_path=p("keys", "aggregator.key"),
            keys_dir=p("keys", "agents"), state_dir=p("state"),
            monitor_endpoint="ipc://" + p("run", "agent-monitor.sock")),
        aggregator=dataclasses.replace(
            AggregatorConfig(), secret_key_path=p("keys", "aggregator.key_secret"),
            authorized_keys_dir=p("keys", "authorized"), tokens_path=p("tokens.json"),
            audit_log_path=p("audit.log")),
        storage=dataclasses.replace(StorageConfig(), db_path=p("legion.duckdb")),
        analytics=dataclasses.replace(AnalyticsConfig(), keys_dir=p("keys", "workers"),
                                      models_dir=p("models")),
        base_dir=str(d),
    )


def write_setup(d: Path, force: bool = False, port: int | None = None) -> dict[str, str]:
    """Create a complete setup in `d`; return what was made (paths and the admin token)."""
    require_curve()
    d = d.expanduser().resolve()
    cfg_path = d / CONFIG_FILENAME
    if cfg_path.exists() and not force:
        raise LegionError(f"{cfg_path} exists; refusing to overwrite (use --force)")
    cfg = default_config(d)
    if port is not None:
        cfg = dataclasses.replace(
            cfg, dashboard_config=dataclasses.replace(cfg.dashboard_config, websocket_port=port))
    for sub in ("keys/authorized", "keys/agents", "keys/workers", "state", "run", "certs",
                "models"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d / "keys", 0o700)
    public, secret = create_keypair(d / "keys", AGGREGATOR_KEY)
    # the analytics workers' key: authorized by being in analytics.keys_dir
    create_keypair(d / "keys" / "workers", WORKER_KEY, node="analytics-worker")
    cfg_path.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")

    from legion.aggregator.gateway.certs import create_self_signed
    from legion.aggregator.gateway.tokens import TokenStore

    create_self_signed(Path(cfg.security.certificate_path), Path(cfg.security.private_key_path))
    tokens_path = Path(cfg.aggregator.tokens_path)
    if force and tokens_path.exists():
        tokens_path.unlink()
    token = TokenStore(tokens_path).add("admin", "admin")
    token_file = d / TOKEN_FILENAME
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    return {"config": str(cfg_path), "aggregator_public_key": str(public),
            "aggregator_secret_key": str(secret), "certificate": cfg.security.certificate_path,
            "tokens": str(tokens_path), "admin_token_file": str(token_file),
            "admin_token": token}


_LISTENERS = (("aggregator", "ingest_bind"), ("aggregator", "ack_bind"),
              ("analytics", "jobs_bind"), ("analytics", "results_bind"))
"""The setup's ZeroMQ listeners, each on its own loopback port."""
_AGENT_ENDPOINTS = {"ingest_bind": "aggregator_endpoint", "ack_bind": "ack_endpoint"}
"""The agent's endpoints that follow the aggregator's listeners."""


def use_free_ports(raw: dict[str, Any], web: int | None = None, agent: bool = True) -> None:
    """Put the listeners of a setup's raw config (and, with `agent`, the agent's endpoints to them)
    and its dashboard (`web`, else a free one) on loopback ports picked together, so that it runs
    beside a test run, an aggregator or another demo. The ports `raw` names now are kept clear of:
    a copied setup's may belong to one that is not bound yet."""
    named = [raw.get("dashboard_config", {}).get("websocket_port"), web]
    named += [str(raw.get(section, {}).get(key, "")).rpartition(":")[2]
              for section, key in _LISTENERS]
    *listeners, free_web = free_ports(len(_LISTENERS) + 1,
                                      avoid={int(p) for p in named if str(p).isdigit()})
    raw["dashboard_config"]["websocket_port"] = web or free_web
    for (section, key), port in zip(_LISTENERS, listeners, strict=True):
        if section not in raw:
            continue
        raw[section][key] = f"tcp://127.0.0.1:{port}"
        if agent and key in _AGENT_ENDPOINTS:
            raw["agent"][_AGENT_ENDPOINTS[key]] = raw[section][key]


def check_name(name: str, what: str) -> None:
    """Refuse a node/worker/key name the wire would refuse (LegionError)."""
    if not NODE_RE.match(name) or len(name) > 128:
        raise LegionError(f"invalid {what} name {name!r} (letters, digits, '.', '_', '-')")


def install_certificate(public: Path, dest: Path) -> Path:
    """Copy a public certificate to `dest` in an allowlist folder (made if missing)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(public.read_bytes())
    tmp.replace(dest)  # atomic: the aggregator never reads half a certificate
    return dest


def render_keys(directory: Path, bound_to: str, fmt: str) -> str:
    """The certificates in an allowlist folder, each with the name it is bound to."""
    rows = []
    for f in sorted(directory.glob("*.key")):
        public, name = read_node_binding(f)
        rows.append({bound_to: name, "public_key": public.decode(), "file": str(f)})
    return render(rows, fmt, [bound_to, "public_key", "file"])


def add_agent_key(cfg: Config, node: str, force: bool = False) -> tuple[Path, Path]:
    """Create a keypair bound to `node` and authorize its public key."""
    check_name(node, "node")
    keys_dir = cfg.path(cfg.agent.keys_dir)
    if (keys_dir / f"{node}.key_secret").exists() and not force:
        raise LegionError(f"a key for node {node!r} exists already (use --force to replace)")
    public, secret = create_keypair(keys_dir, node, node=node)
    authorized = install_certificate(
        public, cfg.path(cfg.aggregator.authorized_keys_dir) / f"{node}.key")
    return secret, authorized


@click.command("init")
@click.option("--dir", "directory", type=click.Path(file_okay=False), required=True,
              help="Directory to create the setup in.")
@click.option("--force", is_flag=True, help="Overwrite an existing setup.")
@click.option("--port", type=int, default=None, help="Gateway port (default 8765).")
def init_cmd(directory: str, force: bool, port: int | None) -> None:
    """Create a setup: config, Curve keys, admin token, TLS certificate."""
    made = write_setup(Path(directory), force=force, port=port)
    click.echo(f"created {made['config']}")
    click.echo(f"  aggregator keys   {made['aggregator_public_key']} (+ _secret, mode 0600)")
    click.echo(f"  TLS certificate   {made['certificate']} (self-signed, 127.0.0.1/localhost)")
    click.echo(f"  admin token       {made['admin_token']}")
    click.echo(f"                    (stored hashed in {made['tokens']}; a copy for legionctl in "
               f"{made['admin_token_file']}, mode 0600)")
    cfg = made["config"]
    click.echo("next:")
    click.echo(f"  legionctl keys add-agent $(hostname) --config {cfg}")
    click.echo(f"  legionctl aggregator run --config {cfg} &")
    click.echo(f"  legionctl agent run --config {cfg} --node $(hostname) &")
    click.echo(f"  legionctl query system_cpu_usage_percent --since 5m --config {cfg}")


@click.group("keys")
def keys() -> None:
    """Manage agent Curve keys (the aggregator's allowlist)."""


@keys.command("add-agent")
@click.argument("node")
@config_option
@click.option("--force", is_flag=True, help="Replace an existing key for NODE.")
def keys_add_agent(node: str, config_path: str, force: bool) -> None:
    """Create a keypair bound to NODE and authorize it."""
    secret, authorized = add_agent_key(load(config_path), node, force)
    click.echo(f"agent secret key  {secret} (mode 0600; copy it to the host of {node})")
    click.echo(f"authorized        {authorized} (the aggregator picks it up without restart)")


@keys.command("revoke")
@click.argument("node")
@config_option
def keys_revoke(node: str, config_path: str) -> None:
    """Remove NODE's key from the allowlist (its connection is cut within seconds)."""
    cfg = load(config_path)
    path = cfg.path(cfg.aggregator.authorized_keys_dir) / f"{node}.key"
    if not path.exists():
        raise LegionError(f"no authorized key for node {node!r}")
    path.unlink()
    click.echo(f"revoked {node} ({path} removed)")


@keys.command("list")
@config_option
@format_option
def keys_list(config_path: str, fmt: str) -> None:
    """List authorized agent keys and the node each is bound to."""
    cfg = load(config_path)
    click.echo(render_keys(cfg.path(cfg.aggregator.authorized_keys_dir), "node", fmt))


COMMANDS = [init_cmd, keys]
