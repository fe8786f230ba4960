"""`legionctl keys generate` and the analytics workers' allowlist (`add-worker`, `list-workers`,
`revoke-worker`), beside the agent commands of `legionctl keys` (setup_cmds).

`generate` makes a keypair on the host that will use it, so a secret key never travels: only the
public certificate (NAME.key) goes to the aggregator's allowlist. A worker certificate is
authorized by being in `analytics.keys_dir` on the aggregator, bound to the worker's name.
"""

from __future__ import annotations

from pathlib import Path

import click

from legion.cli.common import config_option, load
from legion.cli.config import Config
from legion.cli.output import format_option
from legion.cli.setup_cmds import check_name, install_certificate, keys, render_keys
from legion.kernel.curve import create_keypair, read_node_binding
from legion.kernel.errors import LegionError, TransportError


def generate_keypair(directory: Path, name: str, node: str | None) -> tuple[Path, Path, bool]:
    """NAME.key / NAME.key_secret in `directory` bound to `node`; (public, secret, created).

    An existing secret is kept (idempotent), unless its binding differs from `node`.
    """
    check_name(name, "key")
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if secret.exists():
        _, bound = read_node_binding(secret)
        if bound != node or not public.exists():
            raise LegionError(f"{secret} exists bound to {bound!r} (want {node!r}) or without "
                              f"{public.name}; remove it to make a new pair")
        return public, secret, False
    public, secret = create_keypair(directory, name, node=node)
    return public, secret, True


def _workers_dir(cfg: Config) -> Path:
    return cfg.path(cfg.analytics.keys_dir)


def authorize_worker(cfg: Config, name: str, public_key: Path | None,
                     force: bool = False) -> tuple[Path, Path | None]:
    """Authorize worker NAME: its given certificate, or a new keypair made here.

    Returns (authorized certificate, secret key or None). A given certificate must be bound to
    NAME (`legionctl keys generate worker --node NAME` on the worker host writes one).
    """
    check_name(name, "worker")
    directory = _workers_dir(cfg)
    dest = directory / f"{name}.key"
    if dest.exists() and not force:
        raise LegionError(f"worker {name!r} is authorized already (use --force to replace)")
    if public_key is None:
        pub, secret = create_keypair(directory, name, node=name)
        return pub, secret
    try:
        _, bound = read_node_binding(public_key)
    except TransportError as exc:
        raise LegionError(str(exc)) from None
    if bound != name:
        raise LegionError(f"{public_key} is bound to {bound!r}, not to worker {name!r}")
    return install_certificate(public_key, dest), None


@keys.command("generate")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), required=True,
              help="Where NAME.key and NAME.key_secret (mode 0600) go.")
@click.option("--node", default=None, help="Node (or worker) name the key is bound to.")
def keys_generate(name: str, directory: str, node: str | None) -> None:
    """Make a keypair on this host; keeps an existing one. Only NAME.key leaves the host."""
    if node is not None:
        check_name(node, "node")
    public, secret, created = generate_keypair(Path(directory), name, node)
    click.echo(f"{'created' if created else 'kept'} {secret} (mode 0600, stays on this host)")
    click.echo(f"public certificate {public} (authorize it on the aggregator)")


@keys.command("add-worker")
@click.argument("name")
@config_option
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Authorize this certificate (made on the worker host) instead of a new key.")
@click.option("--force", is_flag=True, help="Replace an existing certificate for NAME.")
def keys_add_worker(name: str, config_path: str, public_key: str | None, force: bool) -> None:
    """Authorize analytics worker NAME (picked up at its next connection, no restart)."""
    cfg = load(config_path)
    dest, secret = authorize_worker(cfg, name, Path(public_key) if public_key else None, force)
    if secret is not None:
        click.echo(f"worker secret key {secret} (mode 0600; copy it to the worker host as "
                   "worker.key_secret in its analytics.keys_dir)")
    click.echo(f"authorized        {dest}")


@keys.command("list-workers")
@config_option
@format_option
def keys_list_workers(config_path: str, fmt: str) -> None:
    """List authorized analytics worker keys and the name each is bound to."""
    click.echo(render_keys(_workers_dir(load(config_path)), "worker", fmt))


@keys.command("revoke-worker")
@click.argument("name")
@config_option
def keys_revoke_worker(name: str, config_path: str) -> None:
    """Remove worker NAME's certificate (and a secret made here) from the allowlist."""
    check_name(name, "worker")
    cfg = load(config_path)
    path = _workers_dir(cfg) / f"{name}.key"
    if not path.exists():
        raise LegionError(f"no authorized key for worker {name!r}")
    path.unlink()
    (_workers_dir(cfg) / f"{name}.key_secret").unlink(missing_ok=True)
    click.echo(f"revoked worker {name} ({path} removed; new connections are refused)")


COMMANDS: list[click.Command] = []  # the commands above join the `keys` group on import
