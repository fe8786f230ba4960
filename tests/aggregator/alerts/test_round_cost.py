"""A round's cheap paths (issue 17) answer exactly what the plain ones did: the remembered
metric glob selects the same series as `AlertRule.selects`, and the rules built once at start
are the configured rules plus the defaults, as each round used to build them."""

from __future__ import annotations

from pathlib import Path

from legion.aggregator.alerts.evaluate import Evaluator, Inputs
from legion.aggregator.alerts.rules import AlertRule, default_rules
from tests.aggregator.alerts.helpers import make_engine

RULES = (
    AlertRule("cpu", "system_cpu_*", threshold_value=50.0),
    AlertRule("cpu0", "system_cpu_*", threshold_value=50.0, matchers=("cpu=0",)),
    AlertRule("not-sda", "system_disk_*", threshold_value=1.0, matchers=("dev!~sd.*",)),
    AlertRule("exact", "system_load1", threshold_value=2.0),
    AlertRule("class", "system_[ml]*", threshold_value=0.0),
    AlertRule("rate", "agent_success_rate_percent", threshold_value=90.0),
)


def _rows(now: int) -> list[dict]:
    rows = []
    for metric in ("system_cpu_usage_percent", "system_cpu_core_usage_percent",
                   "system_disk_usage_percent", "system_load1", "system_memory_usage_percent",
                   "agent_success_rate_percent", "other"):
        for labels in ({}, {"cpu": "0"}, {"cpu": "1"}, {"dev": "sda"}, {"dev": "nvme0"}):
            rows.append({"node": "n1", "metric": metric, "labels": labels, "value": 60.0,
                         "ts_ms": now})
    return rows


def test_static_selection_is_rule_selects() -> None:
    now = 1_700_000_000_000
    rows = _rows(now)
    ev = Evaluator(1.0)
    for _ in range(2):  # the second round answers from the remembered globs
        obs = ev.evaluate(RULES, Inputs(now, rows, []), lambda fp: False)
        got = sorted((o.rule.rule_id, o.labels["metric"], str(sorted(
            (k, v) for k, v in o.labels.items() if k in ("cpu", "dev")))) for o in obs)
        want = sorted((rule.rule_id, r["metric"], str(sorted(r["labels"].items())))
                      for rule in RULES for r in rows if rule.selects(r["metric"], r["labels"]))
        assert got == want and len(want) > 10


def test_rules_built_once_are_config_plus_defaults(tmp_path: Path) -> None:
    mine = {"rule_id": "cpu_usage_high", "metric_pattern": "system_cpu_usage_percent",
            "threshold_value": 99.0}
    engine, store = make_engine(tmp_path, {"rules": [mine]}, clock=lambda: 0)
    try:
        ids = [r.rule_id for r in engine.rules()]
        defaults = [r.rule_id for r in default_rules(engine.config.alert_thresholds,
                                                     engine.config.collection_interval)]
        assert ids[0] == "cpu_usage_high" and engine.rules()[0].threshold_value == 99.0
        assert ids == ["cpu_usage_high"] + [d for d in defaults if d != "cpu_usage_high"]
        assert engine.rules() == engine.rules()
    finally:
        store.close()
