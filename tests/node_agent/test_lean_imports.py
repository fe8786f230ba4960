"""The agent process stays small (issue 17: ≤ 30 MiB RSS): what `legionctl agent run` loads."""

from __future__ import annotations

import subprocess
import sys

# Each of these costs the agent megabytes of RSS and none is needed to collect and send.
HEAVY = ("asyncio", "ssl", "numpy", "duckdb", "aiohttp", "urllib.request", "zmq.asyncio",
         "legion.aggregator.service", "legion.cli.query_cmds", "legion.cli.client")


def test_agent_run_loads_no_heavy_module() -> None:
    """The CLI resolves `agent` alone and the agent imports only what a tick needs."""
    code = ("import sys, click; from legion.cli.main import cli;"
            "cmd = cli.get_command(click.Context(cli), 'agent');"
            "import legion.node_agent.agent;"
            f"print(cmd.name, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 1) == ["agent", "[]\n"]


def test_other_commands_still_resolve() -> None:
    """Loading `agent` alone does not hide the rest: every other name loads them all."""
    code = ("import click; from legion.cli.main import cli; ctx = click.Context(cli);"
            "cli.get_command(ctx, 'agent');"
            "print(cli.get_command(ctx, 'query') is not None, len(cli.list_commands(ctx)) > 10)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
