"""The name grammar lives once in proto: the codec and the gateway's query checks agree."""

from __future__ import annotations

import pytest

from legion.proto import limits as L
from legion.proto.names import LABEL_KEY_RE, METRIC_GLOB_RE, NAME_RE, NODE_RE, within


@pytest.mark.parametrize("node, ok", [
    ("web-1", True), ("gpu-node-1", True), ("vps.eu_1", True), ("n" * L.MAX_NODE_LEN, True),
    ("n" * (L.MAX_NODE_LEN + 1), False), ("web-1:9100", False), ("web-1\n", False),
    ("-web", False), ("", False), ("a b", False),
])
def test_node_names_within_the_limit(node: str, ok: bool) -> None:
    assert bool(within(NODE_RE, L.MAX_NODE_LEN).match(node)) is ok


@pytest.mark.parametrize("glob, ok", [
    ("system_cpu_usage_percent", True), ("system_*", True), ("agent_?okens_total", True),
    ("m" * L.MAX_NAME_LEN, True), ("m" * (L.MAX_NAME_LEN + 1), False), ("1abc", False),
    ("cpu\n", False), ("x;drop", False),
])
def test_metric_globs(glob: str, ok: bool) -> None:
    assert bool(within(METRIC_GLOB_RE, L.MAX_NAME_LEN).match(glob)) is ok


def test_every_metric_name_is_a_glob_and_keys_are_ascii() -> None:
    for name in ("system_cpu_usage_percent", "legion:recorded_rule", "_x"):
        assert NAME_RE.match(name) and METRIC_GLOB_RE.match(name)
    assert LABEL_KEY_RE.match("agent_id") and not LABEL_KEY_RE.match("clé")
    assert not within(LABEL_KEY_RE, L.MAX_LABEL_KEY_LEN).match("k" * (L.MAX_LABEL_KEY_LEN + 1))
