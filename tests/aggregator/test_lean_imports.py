"""The aggregator process stays small (issue 17): no pandas, no other command's modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Not needed to ingest, store or serve; each costs the aggregator megabytes of RSS.
HEAVY = ("pandas", "sklearn", "torch", "legion.cli.query_cmds", "legion.cli.keys_cmds",
         "legion.cli.alerts_cmds", "legion.node_agent.agent")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_aggregator_run_resolves_alone() -> None:
    """`legionctl aggregator` loads only run_cmds, and the service module no heavy one."""
    out = _run(f"""
        import sys, click
        from legion.cli.main import cli
        cmd = cli.get_command(click.Context(cli), 'aggregator')
        import legion.aggregator.service
        print(cmd.name, sorted(m for m in {HEAVY!r} if m in sys.modules))""")
    assert out == "aggregator []"


def test_commits_do_not_load_pandas(tmp_path) -> None:
    """After keep_pandas_out, a real Store commits, checkpoints, rolls up, packs and answers
    queries (all through pyarrow) without pandas; `import pandas` still works afterwards."""
    out = _run(f"""
        import sys, time
        from legion.aggregator.lean_imports import keep_pandas_out
        from legion.aggregator.store import IncomingBatch, Store
        from legion.proto import MetricsBatch, Sample
        print(keep_pandas_out())
        st = Store({str(tmp_path / 'x.duckdb')!r})
        now = int(time.time() * 1000) - 7_200_000
        for seq in range(1, 4):
            st.write([IncomingBatch('n1', 1, seq, MetricsBatch.from_samples(
                [Sample(f'm_{{i}}', (), float(i), now + seq * 1000) for i in range(20)]), now)])
        st.checkpoint(); st.maintain(); st.pack_raw(until_ms=now + 3_600_000)
        rows = st.query('m_3', since_ms=now)
        print(len(rows), rows[0]['value'], 'pandas' in sys.modules)
        st.close()
        import pandas
        print('pandas' in sys.modules)""")
    assert out.split("\n") == ["True", "3 3.0 False", "True"]


def test_keep_pandas_out_is_a_no_op_once_pandas_is_loaded() -> None:
    """A process that already uses pandas keeps pyarrow's pandas conversions."""
    out = _run("""
        import pandas, pyarrow as pa
        from legion.aggregator.lean_imports import keep_pandas_out
        print(keep_pandas_out(), pa.table({'a': [1]}).to_pandas().shape)""")
    assert out == "False (1, 1)"
