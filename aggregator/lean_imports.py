"""Keep pandas out of the aggregator process: pyarrow would import it on the first Arrow array.

pyarrow (26) asks its pandas shim "is this a pandas object?" inside `pa.array` and `pa.table`,
and the shim imports pandas the first time it is asked, whatever the argument. The aggregator
never hands pandas objects to pyarrow (nor calls `to_pandas`), yet every commit builds Arrow
arrays, so pandas (+43 MiB RSS, 29 MiB of it private) was loaded by the first commit.

`keep_pandas_out()` lets the shim make its one attempt while `import pandas` fails, so pyarrow
settles on "no pandas" for the life of the process. Nothing else changes: `import pandas`
works afterwards for any code that wants it; only pyarrow's own pandas conversions
(`to_pandas`, `from_pandas`) are off in this process.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class _RefusePandas(importlib.abc.MetaPathFinder):
    """A finder that answers `import pandas` (and its submodules) with ModuleNotFoundError."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def keep_pandas_out() -> bool:
    """Settle pyarrow's pandas shim on "no pandas" unless pandas is already loaded; returns
    whether pandas is out of this process afterwards."""
    if "pandas" in sys.modules:
        return False
    finder = _RefusePandas()
    sys.meta_path.insert(0, finder)
    try:
        import pyarrow as pa

        pa.array([0])  # the shim's one import attempt, refused
    finally:
        sys.meta_path.remove(finder)
    return "pandas" not in sys.modules
