"""`legionctl users add|list|revoke`: API tokens with roles, managed through the gateway API."""

from __future__ import annotations

import urllib.parse

import click

from legion.cli.common import api, config_option, token_option
from legion.cli.listing import listing_command

ROLES = ("viewer", "operator", "admin")


@click.group("users")
def users() -> None:
    """API users and their tokens (admin token required)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="viewer: read; operator: read, write; admin: everything.")
@config_option
@token_option
def users_add(name: str, role: str, config_path: str, token: str | None) -> None:
    """Create user NAME and print its token (shown once; only its hash is stored)."""
    out = api(config_path, token).request("POST", "/api/v1/users",
                                          body={"name": name, "role": role})
    click.echo(out["token"])
    click.echo(f"created {out['name']} (role {out['role']}); the token above is shown only "
               "once: keep it safe", err=True)


users.add_command(listing_command("list", "/api/v1/users", ["name", "role", "created"],
                                  "List users and roles (never tokens)."))


@users.command("revoke")
@click.argument("name")
@config_option
@token_option
def users_revoke(name: str, config_path: str, token: str | None) -> None:
    """Revoke NAME's token at once (open WebSockets of that user are closed)."""
    api(config_path, token).request("DELETE", "/api/v1/users/" + urllib.parse.quote(name, safe=""))
    click.echo(f"revoked {name}")


COMMANDS = [users]
