"""`legionctl aggregator run` and `legionctl agent run`: long-running parts, in the foreground."""

from __future__ import annotations

import click

from legion.cli.common import config_option, load


@click.group("aggregator")
def aggregator() -> None:
    """The central aggregator (ingest, store, API)."""


@aggregator.command("run")
@config_option
def aggregator_run(config_path: str) -> None:
    """Run the aggregator until SIGINT/SIGTERM."""
    from legion.aggregator.service import run_aggregator

    run_aggregator(load(config_path).aggregator_settings())


@click.group("agent")
def agent() -> None:
    """The node agent (collectors, spool, transport)."""


@agent.command("run")
@config_option
@click.option("--node", required=True, help="This host's node name (its key must exist).")
def agent_run(config_path: str, node: str) -> None:
    """Run a node agent until SIGINT/SIGTERM."""
    from legion.node_agent.agent import run_agent

    run_agent(load(config_path).agent_settings(), node)


COMMANDS = [aggregator, agent]
