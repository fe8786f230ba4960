"""`legionctl alerts|silence|rules`: the alerting engine's verbs, through the gateway API
(`rules check FILE` reads the file locally and needs no aggregator)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from legion.cli.common import api, config_option, token_option
from legion.cli.listing import listing_command
from legion.cli.output import format_option, render
from legion.kernel.errors import ConfigError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `2h`, `7d` -> seconds (BadParameter otherwise)."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 2h or 1d",
                                 param_hint="--for")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@click.group("alerts", invoke_without_command=True)
@click.option("--state", type=click.Choice(["firing", "pending", "resolved"]), default=None,
              help="Only alerts in this state.")
@config_option
@token_option
@format_option
@click.pass_context
def alerts_cmd(ctx: click.Context, state: str | None, config_path: str, token: str | None,
               fmt: str) -> None:
    """List alerts (most urgent first); `alerts ack ID` acknowledges one."""
    if ctx.invoked_subcommand is not None:
        return
    rows = api(config_path, token).get("/api/v1/alerts", state=state)
    for r in rows:
        r["who"] = r.get("agent_id") or r.get("node")
    click.echo(render(rows, fmt, None if fmt == "json" else
                      ["id", "state", "severity", "rule_id", "who", "metric", "value",
                       "acknowledged", "summary"]))


@alerts_cmd.command("ack")
@click.argument("alert_id")
@config_option
@token_option
@format_option
def alerts_ack_cmd(alert_id: str, config_path: str, token: str | None, fmt: str) -> None:
    """Acknowledge alert ID: no more repeats or escalation for it."""
    out = api(config_path, token).request("POST", f"/api/v1/alerts/{alert_id}/ack", body={})
    click.echo(render(out, fmt) if fmt != "table" else
               f"acknowledged {out['id']} ({out['rule_id']}) by {out['acked_by']}")


@click.group("silence")
def silence_cmd() -> None:
    """Silences: mute alerts whose labels match, for a while."""


@silence_cmd.command("add")
@click.option("--match", "matchers", multiple=True, required=True, metavar="K=V",
              help="Label matcher (repeat): k=v, k!=v, k=~regex, k!~regex.")
@click.option("--for", "duration", default="2h", show_default=True, help="How long (30m, 2h, 1d).")
@click.option("--comment", default="", help="Why (kept with the silence).")
@config_option
@token_option
@format_option
def silence_add_cmd(matchers: tuple[str, ...], duration: str, comment: str, config_path: str,
                    token: str | None, fmt: str) -> None:
    """Create a silence."""
    from legion.aggregator.alerts.matchers import parse_matcher

    for m in matchers:
        try:
            parse_matcher(m)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--match") from None
    out = api(config_path, token).request("POST", "/api/v1/silences", body={
        "matchers": list(matchers), "duration_s": parse_duration(duration), "comment": comment})
    click.echo(render(out, fmt) if fmt != "table" else f"silence {out['id']} created")


silence_cmd.add_command(listing_command(
    "list", "/api/v1/silences", ["id", "status", "matchers", "ends_ms", "created_by", "comment"],
    "List silences with their status."))


@silence_cmd.command("expire")
@click.argument("silence_id")
@config_option
@token_option
def silence_expire_cmd(silence_id: str, config_path: str, token: str | None) -> None:
    """End silence SILENCE_ID now."""
    api(config_path, token).request("DELETE", f"/api/v1/silences/{silence_id}")
    click.echo(f"silence {silence_id} expired")


@click.group("rules")
def rules_cmd() -> None:
    """Alert rules."""


rules_cmd.add_command(listing_command(
    "list", "/api/v1/rules", ["rule_id", "threshold_type", "metric_pattern", "comparison",
                              "threshold_value", "for_secs", "severity", "source"],
    "The rules in effect (config, defaults, rules files)."))


@rules_cmd.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def rules_check_cmd(file: str) -> None:
    """Validate a rules file; every problem with its key path, exit 1 when any."""
    from legion.aggregator.alerts.config import load_rules_file

    try:
        rules = load_rules_file(Path(file))
    except ConfigError as exc:
        for p in exc.problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(1)
    click.echo(f"{file}: {len(rules)} rules OK")


COMMANDS = [alerts_cmd, silence_cmd, rules_cmd]
