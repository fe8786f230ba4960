"""Alerting: rules over stored data, incidents, silences, escalation, notifications.

    from legion.aggregator.alerts import AlertRule
    AlertRule(rule_id='high_cpu_warning', metric_pattern='*_cpu_usage_percent',
              threshold_type='ml_based', ai_confidence_threshold=0.8, severity='medium')
"""

from legion.aggregator.alerts.rules import AlertRule

__all__ = ["AlertRule"]
