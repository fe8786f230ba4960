"""Label matchers in Alertmanager's four forms: `k=v`, `k!=v`, `k=~regex`, `k!~regex`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_FORM = re.compile(r"^\s*([a-zA-Z_]\w{0,63})\s*(=~|!~|!=|=)\s*(.{0,256})$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label test; a missing label reads as the empty string (as in Alertmanager)."""

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Does this matcher accept `labels`."""
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = re.fullmatch(self.value, v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    """Parse `k=v`, `k!=v`, `k=~re`, `k!~re`; ValueError with the reason when malformed."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string like 'node=web-1' (got {text!r})")
    m = _FORM.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not k=v, k!=v, k=~regex or k!~regex")
    name, op, value = m.group(1), m.group(2), m.group(3).strip().strip('"')
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: bad regex: {exc}") from None
    return Matcher(name, op, value)


def parse_matchers(items: Iterable[str]) -> tuple[Matcher, ...]:
    """Parse several matchers (first error raised)."""
    return tuple(parse_matcher(t) for t in items)


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher accepts `labels` (an empty list accepts everything)."""
    return all(m.matches(labels) for m in matchers)
