"""A listing verb: GET rows from one gateway path and print them as table, JSON or CSV."""

from __future__ import annotations

from collections.abc import Sequence

import click

from legion.cli.common import api, config_option, token_option
from legion.cli.output import format_option, render


def listing_command(name: str, path: str, columns: Sequence[str], doc: str) -> click.Command:
    """The command `name`: GET `path`, print its rows (`columns` in table/CSV; JSON as served)."""

    @click.command(name, help=doc)
    @config_option
    @token_option
    @format_option
    def listing(config_path: str, token: str | None, fmt: str) -> None:
        click.echo(render(api(config_path, token).get(path), fmt, columns))

    return listing
