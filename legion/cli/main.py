"""`legionctl`: the one command for running the parts, querying and administering.

    legionctl init --dir D                      # config, keys, admin token, TLS cert
    legionctl keys add-agent NODE --config F    # agent keypair bound to NODE, authorized
    legionctl aggregator run --config F         # ingest + store + API (foreground)
    legionctl agent run --config F --node NODE  # node agent (foreground)
    legionctl nodes|query|status --config F --format table|json|csv
    legionctl demo                              # everything on this machine, embedded defaults
    legionctl alerts [--state S] | alerts ack ID | silence add|list|expire | rules list|check
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from legion.kernel.errors import ConfigError, LegionError


class LegionGroup(click.Group):
    """A click group that turns our errors into one stderr line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except LegionError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Load the command modules on first use: `agent` and `aggregator` load only their own
        (issue 17: those processes stay small), any other name loads them all."""
        if cmd_name not in self.commands:
            _register(only=cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name (loads all command modules)."""
        _register()
        return super().list_commands(ctx)


@click.group(cls=LegionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="legion-monitor")
def cli(verbose: bool) -> None:
    """Legion Monitor: fleet and agent monitoring over CurveZMQ, stored in DuckDB."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")


# Commands loaded without the others: their process imports only what they need.
LEAN_COMMANDS = {"agent": "legion.cli.run_cmds", "aggregator": "legion.cli.run_cmds"}


def _register(only: str | None = None) -> None:
    if only in LEAN_COMMANDS:
        import importlib

        module = importlib.import_module(LEAN_COMMANDS[only])
        cli.add_command(next(c for c in module.COMMANDS if c.name == only))
        return
    from legion.cli import (
        alerts_cmds,
        analytics_cmds,
        certs_cmds,
        demo_cmds,
        keys_cmds,
        query_cmds,
        run_cmds,
        series_cmds,
        setup_cmds,
        storage_cmds,
        users_cmds,
    )

    for mod in (setup_cmds, run_cmds, query_cmds, users_cmds, certs_cmds, analytics_cmds,
                storage_cmds, demo_cmds, keys_cmds, series_cmds, alerts_cmds):
        for cmd in mod.COMMANDS:
            cli.add_command(cmd)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="legionctl")
