"""The distribution: a built wheel carries every package under `legion.*`, fixtures included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["legion", "legion.cli", "legion.proto", "legion.node_agent",
            "legion.node_agent.collectors", "legion.aggregator", "legion.aggregator.store",
            "legion.aggregator.gateway", "legion.aggregator.sinks", "legion.analytics"]


@pytest.mark.timeout(300)
def test_wheel_builds_and_imports(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                          "--outdir", str(tmp_path / "dist"), str(ROOT)],
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("legion_monitor-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert any(n.startswith("legion/proto/fixtures/v1/") and n.endswith(".msgpack")
               for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
    # import from the unpacked wheel only: the checkout and the editable install are hidden
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__];"
        "import importlib;"
        f"mods = [importlib.import_module(m) for m in {PACKAGES!r}];"
        "assert all(m.__file__.startswith(sys.argv[1]) for m in mods), [m.__file__ for m in mods];"
        "from legion.cli.main import cli; print('ok', len(cli.commands))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok")
