"""The one exception tree of Legion Monitor.

    LegionError                 base of everything we raise on purpose
    ├── ConfigError             bad configuration; carries every problem with its key path
    │   └── AddressInUse        a configured address is taken by another process (one line)
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


class AddressInUse(ConfigError):
    """A configured listen address is taken: names the address and the key to change."""

    def __init__(self, key: str, address: str, detail: str = "") -> None:
        super().__init__([f"{key}: {address} is already in use{f' ({detail})' if detail else ''}"
                          f"; stop the other process or change {key}"])
        self.key, self.address = key, address

    def __str__(self) -> str:
        return self.problems[0]


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
