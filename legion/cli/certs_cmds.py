"""`legionctl certs init`: a self-signed TLS pair for the gateway on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from legion.kernel.errors import LegionError


@click.group("certs")
def certs() -> None:
    """TLS certificates for the gateway."""


@certs.command("init")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="certs",
              show_default=True, help="Where to write server.crt and server.key.")
@click.option("--host", "hosts", multiple=True, metavar="NAME|IP",
              help="Extra name or address the certificate is valid for (repeat); "
                   "localhost, 127.0.0.1 and ::1 are always included.")
@click.option("--days", type=click.IntRange(1, 3650), default=825, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing pair.")
def certs_init(directory: str, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Write a self-signed certificate and private key (mode 0600) for local use."""
    from legion.aggregator.gateway.certs import CERT_NAME, KEY_NAME, generate_self_signed

    d = Path(directory)
    names = tuple(dict.fromkeys(("localhost", "127.0.0.1", "::1", *hosts)))
    try:
        cert, key = generate_self_signed(d / CERT_NAME, d / KEY_NAME, hosts=names, days=days,
                                         force=force)
    except FileExistsError as exc:
        raise LegionError(str(exc)) from None
    click.echo(f"certificate: {cert.resolve()}")
    click.echo(f"private key: {key.resolve()} (mode 0600)")
    click.echo("set security.certificate_path / security.private_key_path to these, and "
               "security.enable_tls to true")


COMMANDS = [certs]
