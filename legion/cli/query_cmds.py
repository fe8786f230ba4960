"""`legionctl nodes|query|status|anomalies|forecast|bands`: read verbs, always through the
gateway API."""

from __future__ import annotations

from typing import Any

import click

from legion.cli.common import api, config_option, token_option
from legion.cli.listing import listing_command
from legion.cli.output import format_option, render

AGGS = ("avg", "min", "max", "sum", "count", "last", "rate")


nodes_cmd = listing_command(
    "nodes", "/api/v1/nodes", ["node", "last_seen", "points", "epoch", "last_seq", "missing",
                               "rejected", "dropped"],
    "List nodes: last seen, points stored, epoch, last seq, missing, dropped.")


@click.command("query")
@click.argument("metric")
@click.option("--node", default=None, help="Only this node.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Label filter (repeat).")
@click.option("--since", default="15m", show_default=True,
              help="Start: duration ago (30s, 5m, 2h, 7d), ISO 8601, or ms since epoch.")
@click.option("--until", default=None, help="End (same forms as --since); default now.")
@click.option("--step", default=None, help="Bucket width (e.g. 1m); aggregate per bucket.")
@click.option("--agg", type=click.Choice(AGGS), default="avg", show_default=True,
              help="Aggregation per step bucket (rate: per-second increase of a counter).")
@click.option("--group-by", default=None, metavar="KEYS",
              help="With --step: aggregate per label set, e.g. node or node,cpu ('*': all).")
@config_option
@token_option
@format_option
def query_cmd(metric: str, node: str | None, labels: tuple[str, ...], since: str,
              until: str | None, step: str | None, agg: str, group_by: str | None,
              config_path: str, token: str | None, fmt: str) -> None:
    """Points of METRIC over a time range, raw or aggregated per step."""
    for lb in labels:
        if "=" not in lb:
            raise click.BadParameter(f"{lb!r} is not K=V", param_hint="--label")
    rows = api(config_path, token).get(
        "/api/v1/query", metric=metric, node=node, since=since, until=until, step=step,
        agg=agg if step else None, label=list(labels) or None, group_by=group_by)
    if isinstance(rows, dict):  # a planner note (e.g. tier) travels beside the points
        rows = rows.get("points", [])
    click.echo(render(rows, fmt, None if fmt == "json" else
                      ["ts", "node", "metric", "labels", "value"]))
    if not rows:
        explain_no_match(config_path, token, metric, node, since)


@click.command("status")
@config_option
@token_option
@format_option
def status_cmd(config_path: str, token: str | None, fmt: str) -> None:
    """Aggregator health: ingest counters, rejections by reason, commit latency."""
    click.echo(render(api(config_path, token).get("/api/v1/status"), fmt))


@click.command("anomalies")
@click.option("--node", default=None, help="Only series of this node.")
@click.option("--since", default="1h", show_default=True, help="Range start (as for query).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@config_option
@token_option
@format_option
def anomalies_cmd(node: str | None, since: str, limit: int, config_path: str,
                  token: str | None, fmt: str) -> None:
    """Series ranked by anomaly rate over the range (the anomaly advisor)."""
    rows = api(config_path, token).get("/api/v1/anomalies", node=node, since=since, limit=limit)
    click.echo(render(rows, fmt, None if fmt == "json" else
                      ["node", "metric", "labels", "anomaly_rate", "max_score"]))


@click.command("forecast")
@click.argument("metric")
@click.option("--node", default=None, help="Only this node.")
@config_option
@token_option
@format_option
def forecast_cmd(metric: str, node: str | None, config_path: str, token: str | None,
                 fmt: str) -> None:
    """Latest forecast of METRIC (or a prediction_config name) with time to threshold."""
    rows = api(config_path, token).get("/api/v1/forecasts", metric=metric, node=node)
    if fmt != "json":
        rows = [{"node": r["node"], "metric": r["metric"], "labels": _labels_of(r),
                 "model": r.get("model"), "threshold": r.get("threshold"),
                 "outlook": "; ".join(e.get("text", "") for e in r.get("etas", []))}
                for r in rows]
    click.echo(render(rows, fmt))


@click.command("bands")
@click.argument("metric")
@click.option("--node", default=None, help="Only this node.")
@config_option
@token_option
@format_option
def bands_cmd(metric: str, node: str | None, config_path: str, token: str | None,
              fmt: str) -> None:
    """Learned normal band of METRIC per series: limits now, latest value, outside or not.

    JSON adds the limits over the next 24 h (`band`: [ts_ms, lower, upper] per step).
    """
    rows = api(config_path, token).get("/api/v1/bands", metric=metric, node=node)
    if fmt != "json":
        rows = [{"node": r["node"], "metric": r["metric"], "labels": r["labels"],
                 "lower": r["now"]["lower"], "upper": r["now"]["upper"],
                 "latest": (r.get("latest") or {}).get("value"),
                 "outside": {True: "yes", False: "no"}.get(r.get("outside"), ""),
                 "trained_to": r.get("trained_to"), "version": r.get("version")}
                for r in rows]
    click.echo(render(rows, fmt, None if fmt == "json" else
                      ["node", "metric", "labels", "lower", "upper", "latest", "outside",
                       "trained_to", "version"]))


def explain_no_match(config_path: str, token: str | None, metric: str, node: str | None,
                     since: str) -> None:
    """Say on stderr why a query matched nothing; exit 1 when no such series exists at all."""
    known = api(config_path, token).get("/api/v1/series", metric=metric, node=node)
    if known:
        click.echo(f"no points of {metric!r} since {since} ({len(known)} series exist: try a "
                   "longer --since)", err=True)
        return
    where = f" on node {node!r}" if node else ""
    click.echo(f"nothing matched: no series {metric!r}{where}; `legionctl series "
               "--metric 'GLOB'` lists what exists", err=True)
    raise SystemExit(1)


def _labels_of(row: dict[str, Any]) -> str:
    agent = row.get("agent_id")
    return f"agent_id={agent}" if agent else ""


COMMANDS = [nodes_cmd, query_cmd, status_cmd, anomalies_cmd, forecast_cmd, bands_cmd]
