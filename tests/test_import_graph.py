"""The import graph holds: read every source file's imports (AST, not a running interpreter).

Rules (issue 15): the wire schema (proto) imports nothing of ours but itself and the kernel's
error base; the node agent and the aggregator never import each other; analytics never imports
the aggregator; no component imports the glue (`legion.cli`, `legion.demo`); the kernel imports
no component and no glue. Imports inside functions and under `TYPE_CHECKING` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it is installed as (pyproject's package-dir).
PACKAGES = {"legion": "legion", "proto": "legion.proto", "node_agent": "legion.node_agent",
            "aggregator": "legion.aggregator", "analytics": "legion.analytics"}
COMPONENTS = ("legion.proto", "legion.node_agent", "legion.aggregator", "legion.analytics")
GLUE = ("legion.cli", "legion.demo")
KERNEL = "legion.kernel"

# (importer prefix, forbidden import prefixes, allowed exceptions to those prefixes)
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("legion.proto", ("legion.",), ("legion.proto", "legion.kernel.errors")),
    ("legion.node_agent", ("legion.aggregator",), ()),
    ("legion.aggregator", ("legion.node_agent",), ()),
    ("legion.analytics", ("legion.aggregator",), ()),
    *((c, GLUE, ()) for c in COMPONENTS),
    (KERNEL, (*COMPONENTS, *GLUE), ()),
]


def _under(name: str, prefix: str) -> bool:
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    """The dotted module a source file is installed as (`proto/codec.py` -> legion.proto.codec)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module a source text imports (`from a import b` counts as `a` and `a.b`)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(module: str, imported: set[str]) -> list[str]:
    """The rule breaks of one module's imports, as 'importer -> imported'."""
    out = []
    for importer, forbidden, allowed in RULES:
        if not _under(module, importer):
            continue
        for name in sorted(imported):
            if any(_under(name, f) for f in forbidden) and not any(_under(name, a)
                                                                   for a in allowed):
                out.append(f"{module} -> {name}")
    return out


def source_files() -> list[Path]:
    """Every Python file of the installed packages."""
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def test_the_import_graph_holds() -> None:
    files = source_files()
    assert len(files) > 100  # the walk found the code base, not an empty folder
    broken = []
    for path in files:
        module = module_name(path)
        found = imports_of(path.read_text(), module, path.name == "__init__.py")
        broken += violations(module, found)
    assert not broken, "import rules broken:\n  " + "\n  ".join(broken)


def test_the_checker_sees_each_kind_of_break() -> None:
    """Each rule catches a real break, so the test above can fail."""
    cases = {
        "legion.proto.codec": "from legion.kernel.curve import load_public",
        "legion.node_agent.agent": "from legion.aggregator.store import Store",
        "legion.aggregator.sinks.queue": "import legion.node_agent.state",
        "legion.analytics.worker": "def f():\n    from legion.aggregator import service",
        "legion.aggregator.service": "from legion import cli",
        "legion.node_agent.delivery": "from legion.demo.roster import ROSTER",
        "legion.kernel.config": "from legion.analytics.config import AnalyticsConfig",
        "legion.kernel.spool.spool": "from ...node_agent import state",
    }
    for module, source in cases.items():
        assert violations(module, imports_of(source, module)), (module, source)
    allowed = {"legion.proto.errors": "from legion.kernel.errors import LegionError",
               "legion.aggregator.service": "from legion.analytics.config import X"}
    for module, source in allowed.items():
        assert not violations(module, imports_of(source, module)), (module, source)
