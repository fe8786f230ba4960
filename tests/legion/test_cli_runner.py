"""legionctl through click's CliRunner: init, keys, formats and error reporting."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

from click.testing import CliRunner

from legion.cli.main import cli
from legion.cli.output import render


def test_init_makes_a_complete_setup_and_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "setup"
    r = CliRunner().invoke(cli, ["init", "--dir", str(d)])
    assert r.exit_code == 0, r.output
    assert "admin token" in r.output and "legionctl agent run" in r.output
    cfg = json.loads((d / "monitoring_config.json").read_text())
    assert cfg["storage"]["db_path"].startswith(str(d))
    assert cfg["aggregator"]["ingest_bind"].startswith("tcp://127.0.0.1:")
    for secret in ("keys/aggregator.key_secret", "admin.token", "certs/server.key"):
        mode = stat.S_IMODE(os.stat(d / secret).st_mode)
        assert mode & 0o077 == 0, f"{secret} is readable by others ({oct(mode)})"
    again = CliRunner().invoke(cli, ["init", "--dir", str(d)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    assert CliRunner().invoke(cli, ["init", "--dir", str(d), "--force"]).exit_code == 0


def test_keys_add_list_revoke(tmp_path: Path) -> None:
    d = tmp_path / "s"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--dir", str(d)]).exit_code == 0
    cfg = str(d / "monitoring_config.json")
    assert runner.invoke(cli, ["keys", "add-agent", "web-1", "--config", cfg]).exit_code == 0
    dup = runner.invoke(cli, ["keys", "add-agent", "web-1", "--config", cfg])
    assert dup.exit_code != 0 and "exists already" in dup.output
    bad = runner.invoke(cli, ["keys", "add-agent", "bad name", "--config", cfg])
    assert bad.exit_code != 0 and "invalid node name" in bad.output
    listed = runner.invoke(cli, ["keys", "list", "--config", cfg, "--format", "json"])
    assert [k["node"] for k in json.loads(listed.output)] == ["web-1"]
    assert runner.invoke(cli, ["keys", "revoke", "web-1", "--config", cfg]).exit_code == 0
    listed = runner.invoke(cli, ["keys", "list", "--config", cfg, "--format", "csv"])
    assert listed.output.strip() == "node,public_key,file"


def test_api_unreachable_is_one_clear_line(tmp_path: Path) -> None:
    d = tmp_path / "s"
    runner = CliRunner()
    runner.invoke(cli, ["init", "--dir", str(d), "--port", "1"])
    r = runner.invoke(cli, ["nodes", "--config", str(d / "monitoring_config.json")])
    assert r.exit_code == 1
    assert r.output.startswith("error: cannot reach the aggregator")
    assert len(r.output.strip().splitlines()) == 1


def test_render_formats() -> None:
    rows = [{"node": "a", "labels": {"cpu": "0"}, "value": 1.5}, {"node": "b", "value": 2.0}]
    table = render(rows, "table").splitlines()
    assert table[0].split() == ["NODE", "LABELS", "VALUE"] and "cpu=0" in table[1]
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert parsed[1] == {"node": "b", "labels": "", "value": "2"}
    assert json.loads(render(rows, "json")) == rows
    assert render([], "table") == "(none)"
