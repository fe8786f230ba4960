"""bench/peers/run.py installs nothing: with the peers out of reach it names the apt-get command
and exits 2 before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "bench" / "peers" / "run.py"


def test_missing_peers_are_named_with_their_install_command(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    res = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": str(tmp_path)})  # no peer binary on PATH
    assert res.returncode == 2, res.stdout + res.stderr
    assert "installs nothing" in res.stderr
    line = next(x for x in res.stderr.splitlines() if "apt-get install -y" in x)
    for pkg in ("victoria-metrics", "prometheus", "prometheus-node-exporter"):
        assert pkg in line.split()
    assert not out.exists()
