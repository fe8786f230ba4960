"""`legionctl detect` on bad input: one error line naming the file (and line), exit 1, never a
traceback and never a silent exit 0 (issue 13). Real files, the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from legion.cli.main import cli

GOOD = "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,2\n"


@pytest.mark.parametrize("name, content, expect", [
    ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20, "not a text CSV"),
    ("empty.csv", b"", "empty file"),
    ("header.csv", b"timestamp,value\n", "no data rows"),
    ("nan.csv", GOOD.encode() + b"2024-01-01 00:10:00,nan\n", "nan.csv:4"),
    ("back.csv", GOOD.encode() + b"2024-01-01 00:01:00,3\n", "back.csv:4"),
    ("nohead.csv", b"2024-01-01 00:00:00,1\nyesterday,2\n", "nohead.csv:2"),
    ("badts.csv", GOOD.encode() + b"soon,3\n", "badts.csv:4"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, name: str, content: bytes,
                                      expect: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    res = CliRunner().invoke(cli, ["detect", str(path), "--no-progress"])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ") and expect in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not res.stdout


def test_binary_file_as_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(bytes(range(256)) * 8)
    proc = subprocess.run([sys.executable, "-m", "legion.cli", "detect", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "blob.csv" in proc.stderr and "not a text CSV" in proc.stderr


def test_analytics_run_says_that_it_started_and_stopped(tmp_path: Path) -> None:
    """It printed nothing at all (issue 13)."""
    import signal
    import time

    from tests.conftest import make_setup

    cfg_path = make_setup(tmp_path / "legion")
    log = tmp_path / "analytics.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "legion.cli", "analytics", "run",
                                 "--config", str(cfg_path), "--workers", "1"],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "event=started workers=1" not in log.read_text() \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "starting 1 worker" in log.read_text()
        assert "event=started workers=1" in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "analytics: stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
