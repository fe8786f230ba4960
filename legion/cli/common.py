"""Options and helpers shared by the `legionctl` command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from legion.cli.config import Config, load_config
from legion.kernel.config import CONFIG_ENV, CONFIG_FILENAME, default_config_path

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=default_config_path,
    show_default=f"${CONFIG_ENV} or ./{CONFIG_FILENAME}", help="Path to monitoring_config.json.")

token_option = click.option(
    "--token", default=None, help="API bearer token (default: $LEGION_TOKEN or admin.token "
    "beside the config).")


def load(config_path: str) -> Config:
    """Load the config for a command (errors propagate as ConfigError)."""
    return load_config(Path(config_path))


def api(config_path: str, token: str | None) -> Any:
    """An ApiClient for the configured gateway."""
    from legion.cli.client import ApiClient, resolve_token

    cfg = load(config_path)
    return ApiClient(cfg, resolve_token(cfg, token))
