"""The wire's name grammar, defined once: node names, metric names, label keys, metric globs.

The patterns say which characters a name may use; lengths are the limits in `proto.limits`,
checked apart (the codec reports a long name and a malformed one with different reasons).
`within` joins the two for places with one verdict, such as the gateway's query parameters.
"""

from __future__ import annotations

import re

NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
"""A node name (also a Curve key's binding and an agent's `--node`): no `:`, `/` or spaces."""
NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
"""A metric name (Prometheus' grammar)."""
LABEL_KEY_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
"""A label key (Prometheus' grammar, ASCII only)."""
METRIC_GLOB_RE = re.compile(r"[a-zA-Z_:*?][a-zA-Z0-9_:*?]*\Z")
"""A metric name pattern in queries: a metric name that may use the globs `*` and `?`."""


def within(pattern: re.Pattern[str], max_len: int) -> re.Pattern[str]:
    """`pattern` that also refuses more than `max_len` characters."""
    return re.compile(rf"(?=[\s\S]{{1,{max_len}}}\Z)(?:{pattern.pattern})")
