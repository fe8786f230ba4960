"""Keep modules the aggregator never uses out of its process (issue 17: idle RSS).

pandas: pyarrow would import it on the first Arrow array.

pyarrow (26) asks its pandas shim "is this a pandas object?" inside `pa.array` and `pa.table`,
and the shim imports pandas the first time it is asked, whatever the argument. The aggregator
never hands pandas objects to pyarrow (nor calls `to_pandas`), yet every commit builds Arrow
arrays, so pandas (+43 MiB RSS, 29 MiB of it private) was loaded by the first commit.

`keep_pandas_out()` lets the shim make its one attempt while `import pandas` fails, so pyarrow
settles on "no pandas" for the life of the process. Nothing else changes: `import pandas`
works afterwards for any code that wants it; only pyarrow's own pandas conversions
(`to_pandas`, `from_pandas`) are off in this process.

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


def keep_pandas_out() -> bool:
    """Settle pyarrow's pandas shim on "no pandas" unless pandas is already loaded; returns
    whether pandas is out of this process afterwards."""
    if "pandas" in sys.modules:
        return False
    with keep_out(["pandas"]):
        import pyarrow as pa

        pa.array([0])  # the shim's one import attempt, refused
    return "pandas" not in sys.modules
