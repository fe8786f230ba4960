"""`legionctl series`: which series exist (node, metric, labels), through the gateway API."""

from __future__ import annotations

import click

from legion.cli.common import api, config_option, token_option
from legion.cli.output import format_option, render


@click.command("series")
@click.option("--node", default=None, help="Only this node.")
@click.option("--metric", default=None, metavar="GLOB",
              help="Metric name or glob (e.g. 'system_*').")
@config_option
@token_option
@format_option
def series_cmd(node: str | None, metric: str | None, config_path: str, token: str | None,
               fmt: str) -> None:
    """List stored series: node, metric, labels (exit 1 when none match)."""
    rows = api(config_path, token).get("/api/v1/series", node=node, metric=metric)
    click.echo(render([{"node": r["node"], "metric": r["metric"], "labels": r["labels"]}
                       for r in rows], fmt))
    if not rows:
        click.echo("nothing matched" + (f" node {node!r}" if node else "")
                   + (f" metric {metric!r}" if metric else "")
                   + ("; `legionctl nodes` lists the nodes" if node else ""), err=True)
        raise SystemExit(1)


COMMANDS = [series_cmd]
