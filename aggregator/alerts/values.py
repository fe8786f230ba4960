"""Checks of config values that report every problem with its key path (the `alerting` parsers).
"""

from __future__ import annotations

from typing import Any

from legion.aggregator.alerts.matchers import parse_matcher


def check_bool(v: Any, path: str, problems: list[str]) -> bool:
    """`v` if it is a bool, else a problem at `path`."""
    if not isinstance(v, bool):
        problems.append(f"{path}: must be true or false (got {v!r})")
        return False
    return v


def check_num(v: Any, path: str, problems: list[str], minimum: float = 0.0) -> float:
    """`v` as a float if it is a number >= `minimum`, else a problem at `path`."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        problems.append(f"{path}: must be a number >= {minimum:g} (got {v!r})")
        return minimum
    return float(v)


def check_strs(v: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    """`v` if it is a list of non-empty strings, else a problem at `path`."""
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        problems.append(f"{path}: must be a list of non-empty strings")
        return ()
    return tuple(v)


def check_matchers(v: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    """A list of label matchers (`k=v`, `k!=v`, `k=~re`, `k!~re`); each bad one is a problem."""
    items = check_strs(v, path, problems)
    for i, m in enumerate(items):
        try:
            parse_matcher(m)
        except ValueError as exc:
            problems.append(f"{path}[{i}]: {exc}")
    return items
