"""`legionctl demo`: run everything on this machine with embedded defaults."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import click

from legion.kernel.errors import LegionError

STATUS_EVERY_SECS = 2.0


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Setup directory to create or reuse (default: a fresh temporary one).")
@click.option("--port", type=int, default=None,
              help="Gateway port (default: a free one, like every other port of a new demo).")
@click.option("--hosts", type=click.IntRange(1, 3), default=3, show_default=True,
              help="Simulated hosts (node agents) on this machine.")
@click.option("--workers", type=click.IntRange(0, 16), default=1, show_default=True,
              help="Analytics worker processes.")
@click.option("--duration", type=float, default=None,
              help="Stop by itself after this many seconds (default: run until Ctrl-C).")
def demo_cmd(directory: str | None, port: int | None, hosts: int, workers: int,
             duration: float | None) -> None:
    """Aggregator, node agents, analytics workers and an 18-agent Enterprise Legion simulator."""
    from legion.cli.client import ApiClient
    from legion.demo.runner import DEMO_HOSTS, launch, prepare, status_line, wait_ready

    demo = prepare(Path(directory) if directory else None, port, DEMO_HOSTS[:hosts])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    client = ApiClient(demo.config, demo.token, timeout=5)
    try:
        launch(demo, workers)
        wait_ready(demo, client.get)  # the URL only once the aggregator answers
        click.echo(f"Legion Monitor demo in {demo.directory}")
        click.echo(f"  dashboard  {demo.url}")
        click.echo(f"  token      {demo.token}  (admin)")
        click.echo(f"  cli        export LEGION_CONFIG={demo.config.base_dir}/"
                   "monitoring_config.json")
        click.echo(f"  logs       {demo.directory}/logs/   (Ctrl-C stops everything)")
        started = time.monotonic()
        seen: deque[tuple[float, float]] = deque()
        tty = sys.stdout.isatty()
        while not stop.wait(STATUS_EVERY_SECS):
            dead = demo.dead()
            if dead:
                raise LegionError(f"{dead[0].name} exited (code {dead[0].popen.returncode}); "
                                  f"see {dead[0].log}")
            try:
                line = status_line(client.get, seen)
            except LegionError as exc:
                line = f"waiting for the aggregator ({exc})"
            click.echo(("\r" + line.ljust(100)) if tty else line, nl=not tty)
            if duration is not None and time.monotonic() - started >= duration:
                break
    finally:
        if sys.stdout.isatty():
            click.echo("")
        click.echo("stopping…")
        demo.stop()
        click.echo("stopped: no demo process left running")


COMMANDS = [demo_cmd]
