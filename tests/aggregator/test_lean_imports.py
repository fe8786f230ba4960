"""The aggregator process stays small (issue 17): no pandas, no other command's modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Not needed to ingest, store or serve; each costs the aggregator megabytes of RSS.
HEAVY = ("pandas", "sklearn", "torch", "legion.cli.query_cmds", "legion.cli.keys_cmds",
         "legion.cli.alerts_cmds", "legion.node_agent.agent",
         "cryptography")  # TLS certificates only: loaded when `security.enable_tls` is on


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_aggregator_run_resolves_alone() -> None:
    """`legionctl aggregator` loads only run_cmds, and the service and gateway no heavy module."""
    out = _run(f"""
        import sys, click
        from legion.cli.main import cli
        cmd = cli.get_command(click.Context(cli), 'aggregator')
        import legion.aggregator.service, legion.aggregator.gateway.app
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


def test_gateway_imported_without_socketio_clients() -> None:
    """Imported as the service does, the gateway loads no Socket.IO client dependency, and
    those modules stay importable afterwards."""
    out = _run("""
        import sys
        from legion.aggregator.lean_imports import CLIENT_ONLY, keep_out
        with keep_out(CLIENT_ONLY):
            from legion.aggregator.gateway.app import create_app
        print(sorted(m for m in CLIENT_ONLY if m in sys.modules))
        import requests
        print('requests' in sys.modules)""")
    assert out.split("\n") == ["[]", "True"]


def test_socketio_serves_when_imported_lean(tmp_path) -> None:
    """The Socket.IO test of the gateway, in a process that imported the gateway the lean way
    (a real server and a python-socketio client on loopback)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys, pytest
        from legion.aggregator.lean_imports import CLIENT_ONLY, keep_out
        with keep_out(CLIENT_ONLY):
            import legion.aggregator.gateway.app
        import engineio.client
        assert engineio.client.requests is None, 'not imported the lean way'
        sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--basetemp',
                              {str(tmp_path / 'pt')!r}, 'tests/aggregator/test_gateway_socketio.py'
                              '::test_viewer_receives_both_events_then_updates']))""")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_remote_write_loaded_only_when_a_sink_is_configured(tmp_path) -> None:
    """Without `sinks.remote_write`, the aggregator's sinks (built as the service builds them)
    leave the remote-write module and its snappy codec out of the process; with one, it loads
    and the sink is there."""
    out = _run(f"""
        import sys
        import legion.aggregator.service
        from legion.aggregator.sinks.table import build_sinks
        from legion.aggregator.store import Store
        from legion.cli.config import config_from_dict
        lazy = ("legion.aggregator.sinks.remote_write", "cramjam")
        st = Store({str(tmp_path / 'x.duckdb')!r})
        plain = build_sinks(config_from_dict({{}}, base_dir={str(tmp_path)!r})
                            .aggregator_settings(), st)
        print(len(plain.sinks), sorted(m for m in lazy if m in sys.modules))
        cfg = config_from_dict({{"sinks": {{"remote_write": [
            {{"name": "prom", "url": "http://127.0.0.1:9/api/v1/write"}}]}}}},
            base_dir={str(tmp_path)!r})
        remote = build_sinks(cfg.aggregator_settings(), st)
        print(len(remote.sinks), sorted(m for m in lazy if m in sys.modules))
        st.close()""")
    assert out.split("\n") == ["0 []",
                               "1 ['cramjam', 'legion.aggregator.sinks.remote_write']"]
