"""`legionctl export`: Parquet archive of a time range, written by the aggregator, with progress."""

from __future__ import annotations

import time
from pathlib import Path

import click

from legion.cli.common import api, config_option, token_option
from legion.kernel.errors import LegionError


@click.command("export")
@click.option("--since", required=True, help="Start: duration ago (2d), ISO 8601, or ms.")
@click.option("--until", default=None, help="End (same forms); default now.")
@click.option("--metric", default=None, help="Only this metric.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory (on the aggregator's host) for the hive-partitioned Parquet files.")
@config_option
@token_option
def export_cmd(since: str, until: str | None, metric: str | None, out_dir: str,
               config_path: str, token: str | None) -> None:
    """Export raw points to Parquet (date=YYYY-MM-DD partitions), readable by DuckDB/pandas."""
    client = api(config_path, token)
    job = client.request("POST", "/api/v1/exports", body={
        "since": since, "until": until, "metric": metric,
        "out": str(Path(out_dir).expanduser().resolve())})
    with click.progressbar(length=1000, label="exporting", file=click.get_text_stream("stderr"),
                           show_eta=False) as bar:
        shown, delay = 0, 0.2
        while job["state"] == "running":
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)  # a long export is not polled 5 times a second
            job = client.get(f"/api/v1/exports/{job['id']}")
            frac = job["done"] / job["total"] if job["total"] else 0.0
            bar.update(int(frac * 1000) - shown)
            shown = int(frac * 1000)
        bar.update(1000 - shown)
    if job["state"] != "done":
        raise LegionError(f"export failed: {job.get('error')}")
    click.echo(f"exported {job['rows']} points in {job['files']} files ({job['days']} days) "
               f"to {job['out']}")


COMMANDS = [export_cmd]
