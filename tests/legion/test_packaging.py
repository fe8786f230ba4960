"""The distribution: a built wheel carries every package under `legion.*`, fixtures included,
and installed (not editable) it runs `legionctl demo` from the checkout's root."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from legion.cli.client import ApiClient
from legion.cli.config import load_config
from tests.conftest import Proc, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["legion", "legion.cli", "legion.proto", "legion.node_agent",
            "legion.node_agent.collectors", "legion.aggregator", "legion.aggregator.store",
            "legion.aggregator.gateway", "legion.aggregator.sinks", "legion.analytics"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once for this module."""
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                          "--outdir", str(dist), str(ROOT)],
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return next(dist.glob("legion_monitor-*.whl"))


@pytest.mark.timeout(300)
def test_wheel_builds_and_imports(tmp_path: Path, wheel: Path) -> None:
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
        "import click; from legion.cli.main import cli;"  # commands load on first use (issue 17)
        "print('ok', len(cli.list_commands(click.Context(cli))))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok")


@pytest.mark.timeout(400)
def test_installed_wheel_runs_the_demo_from_the_checkout_root(tmp_path: Path, wheel: Path
                                                               ) -> None:
    """Issue 13 item 9, literally: a regular install (the wheel, in a fresh venv whose
    dependencies come from the system site) and `legionctl demo` started in the repository
    root, where the checkout's `legion/` (no `proto` in it) would shadow the installed package
    for any child started with plain `python -m`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, legionctl = venv / "bin" / "python", venv / "bin" / "legionctl"
    # The dependencies from the system site as a plain path entry: its .pth files (an editable
    # install of the project, on a developer's machine) are not run, so only the wheel is there.
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True, check=True)
    system = [p for p in site.getsitepackages([sys.base_prefix]) if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "system_deps.pth").write_text("\n".join(system) + "\n")
    pip = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index",
                          "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    where = subprocess.run([str(py), "-P", "-c", "import legion.proto; print(legion.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # the wheel's copy
    # the trap is real here: without -P the root comes first on sys.path, and its `legion/`
    plain = subprocess.run([str(py), "-c", "import legion.proto"], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert plain.returncode != 0 and "legion.proto" in plain.stderr, plain.stderr[-2000:]

    d = tmp_path / "demo"
    demo = Proc(["demo", "--dir", str(d), "--port", str(free_port()), "--hosts", "1",
                 "--workers", "0"], tmp_path / "demo.log", program=[str(legionctl)], cwd=ROOT)
    try:
        # the URL is printed only once the aggregator (a child) answers
        wait_for(lambda: demo.p.poll() is None and "#token=" in
                 (tmp_path / "demo.log").read_text(errors="replace"), timeout=150, interval=1)
        cfg = load_config(d / "monitoring_config.json")
        client = ApiClient(cfg, (d / "admin.token").read_text().strip(), timeout=5)

        def hosts() -> set[str]:
            try:
                return {n["node"] for n in client.get("/api/v1/nodes")}
            except Exception:  # noqa: BLE001 - not up yet
                return set()
        # the agent child stores its host: every child started, none shadowed
        assert "legion-hq" in wait_for(lambda: hosts(), timeout=120, interval=2)
        text = (tmp_path / "demo.log").read_text(errors="replace")
        assert "No module named" not in text
        assert not [p.name for p in (d / "logs").glob("*.log")
                    if "No module named" in p.read_text(errors="replace")]
    finally:
        returncode = demo.stop(40)  # SIGINT, as Ctrl-C
    assert returncode == 0, demo.output()[-2000:]
