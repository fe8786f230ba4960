"""The one exception tree of Legion Monitor.

    LegionError                 base of everything we raise on purpose
    ├── ConfigError             bad configuration; carries every problem with its key path
    ├── WireError               a frame that failed decoding/validation (legion.proto re-exports it)
    ├── TransportError          ZeroMQ / Curve / key-file problems
    ├── StoreError              DuckDB problems
    │   └── QueryError          a query the store cannot answer as asked (the API's 400)
    ├── AuthError               bad or missing token, role not allowed
    └── ApiError                the gateway answered with an error (raised in clients)

Library exceptions are mapped to these where the library is used (`raise X(...) from exc`).
"""

from __future__ import annotations


class LegionError(Exception):
    """Base class for every error Legion Monitor raises on purpose."""


class ConfigError(LegionError):
    """Configuration is invalid; `problems` lists each one as 'key.path: message'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


class TransportError(LegionError):
    """ZeroMQ, Curve or key material problems."""


class StoreError(LegionError):
    """Storage (DuckDB) problems."""


class QueryError(StoreError):
    """A query the store cannot answer as asked (range beyond retention, bad step or agg)."""


class AuthError(LegionError):
    """Authentication or authorization failed."""


class ApiError(LegionError):
    """The gateway answered a request with an error."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")
