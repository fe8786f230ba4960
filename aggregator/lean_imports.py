"""Keep modules the aggregator never uses out of its process (issue 17: idle RSS).

pyarrow and pandas: the store hands DuckDB numpy columns (`store/columns.py`), so neither is
imported (pyarrow alone was ~30 MiB of the aggregator's RSS; pandas, which pyarrow's shim
imported at the first Arrow array, another 43 MiB). `tests/aggregator/test_lean_imports.py`
checks that a store's every path and the whole service leave both out. DuckDB 1.5 (the
`encryption` extra) would still import pandas, and pandas pyarrow, at the first string column
it scans; it scans them as well without (checked), so `run_aggregator` keeps them out for
good (`keep_out_for_good(NEVER_USED)`).

Socket.IO clients: `import socketio` loads its client side too, and engineio's client imports
`requests` and `websocket-client` when installed (+6 MiB RSS); the gateway only serves. The
service imports the gateway inside `keep_out(CLIENT_ONLY)`, so those optional imports find
nothing (engineio's client would be without transports, and nothing here uses it); the
modules stay importable afterwards.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from types import ModuleType

NEVER_USED = ("pandas", "pyarrow")
"""Not used by any part of the aggregator; DuckDB 1.5 would import them for string columns."""

CLIENT_ONLY = ("requests", "websocket", "urllib3", "charset_normalizer")
"""What Socket.IO's client side would import: needed by no part of the aggregator."""


class _Refuse(importlib.abc.MetaPathFinder):
    """A finder that answers the import of some top-level packages with ModuleNotFoundError."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextmanager
def keep_out(names: Sequence[str]) -> Iterator[None]:
    """While inside, importing any of `names` (not yet loaded) fails as if not installed."""
    finder = _Refuse([n for n in names if n not in sys.modules])
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def keep_out_for_good(names: Sequence[str]) -> None:
    """For the rest of the process, importing any of `names` (not yet loaded) fails as if not
    installed: for a process's entry point, never for a library."""
    sys.meta_path.insert(0, _Refuse([n for n in names if n not in sys.modules]))
