"""The aggregator process stays small (issue 17): no pyarrow, no pandas, no other command's
modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from legion.cli.client import ApiClient
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from tests.conftest import make_setup, wait_for

# Not needed to ingest, store or serve; each costs the aggregator megabytes of RSS.
HEAVY = ("pandas", "pyarrow", "sklearn", "torch", "legion.cli.query_cmds", "legion.cli.keys_cmds",
         "legion.cli.alerts_cmds", "legion.node_agent.agent",
         "cryptography",  # TLS certificates only: loaded when `security.enable_tls` is on
         "smtplib")  # the email notifier imports it when it sends


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


def test_store_paths_load_neither_pyarrow_nor_pandas(tmp_path) -> None:
    """A real Store writes (one batch, several, new labelled series, late points into packed
    windows), rolls up, packs, folds old `batches`, records rejected seqs and answers raw
    queries over chunks and grouped queries, all through numpy columns: right answers, and
    neither pyarrow nor pandas loaded."""
    out = _run(f"""
        import sys, time
        from legion.aggregator.store import IncomingBatch, Store
        from legion.proto import MetricsBatch, Sample
        st = Store({str(tmp_path / 'x.duckdb')!r})
        now = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 7_200_000
        def batch(seq, v=1.0):
            return IncomingBatch('n1', 1, seq, MetricsBatch.from_samples(
                [Sample(f'm_{{i % 4}}', (('cpu', str(i % 2)),), v * i, now + seq * 1000)
                 for i in range(20)]), now)
        st.write([batch(1), batch(2), batch(3)])
        st.write([batch(4)])
        st.roll_up(budget_s=30, include_open=True)
        print(st.pack_raw(until_ms=now + 3_600_000))
        st.write([batch(5, v=10.0)])  # late: its window is packed
        st.note_rejected('n1', 1, [3, 6])
        st.maintain()
        raw = st.query('m_3', since_ms=now)
        print(len(raw), sum(r['value'] for r in raw))
        print([(r['labels'], r['value']) for r in st.query(
            'm_3', since_ms=now, step_ms=3_600_000, agg='sum', group_by='cpu')])
        print(st.nodes()[0]['rejected'], st.nodes()[0]['points'])
        print(sorted(m for m in ('pyarrow', 'pandas') if m in sys.modules))
        st.close()""")
    assert out.split("\n") == ["80", "25 770.0", "[({'cpu': '1'}, 770.0)]", "1 100", "[]"]


def imported(log: str) -> set[str]:
    """The modules a `-X importtime` (PYTHONPROFILEIMPORTTIME) log says were imported."""
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines()
            if line.startswith("import time:") and "imported package" not in line}


@pytest.mark.timeout(240)
def test_running_aggregator_maps_neither_arrow_nor_cryptography(tmp_path: Path, procs) -> None:
    """A real `legionctl aggregator run` serving HTTPS (`legionctl init`'s default) that stored
    a real agent's batches has no Arrow, pandas or `cryptography` library mapped
    (/proc/PID/maps): the store hands DuckDB numpy columns, the server's TLS context is the
    standard library's (gateway/tls.py). Nor has it imported any HEAVY module, at start-up or
    since (its `-X importtime` log)."""
    cfg_path = make_setup(tmp_path / "legion")
    cfg = load_config(cfg_path)
    assert cfg.security.enable_tls
    add_agent_key(cfg, "n1")
    agg = procs("aggregator", "run", "--config", str(cfg_path), name="agg",
                env={"PYTHONPROFILEIMPORTTIME": "1"})
    procs("agent", "run", "--config", str(cfg_path), "--node", "n1", name="agent")
    client = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip(), timeout=5)

    def committed() -> bool:
        try:
            return client.get("/api/v1/status")["ingest"]["batches_accepted"] >= 3
        except Exception:  # noqa: BLE001 - not up yet
            return False
    wait_for(committed, 120, interval=1)
    maps = Path(f"/proc/{agg.p.pid}/maps").read_text()
    assert "_duckdb" in maps  # the right process
    assert [m for m in ("libarrow", "pyarrow", "pandas", "cryptography") if m in maps] == []
    mods = imported(agg.output())
    assert "legion.aggregator.service" in mods  # the log is the right one
    assert sorted(mods.intersection(HEAVY)) == []


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
