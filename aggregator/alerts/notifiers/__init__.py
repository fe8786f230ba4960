"""Notifiers: one small protocol, one module per type, one table.

A notifier gets a `Notification` and its receiver's options, and either returns or raises
`NotifyError`. Retries, timeouts' bookkeeping and the circuit breaker live in `dispatch`, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from legion.aggregator.alerts.notifiers import alertmanager, email, log, slack, webhook
from legion.kernel.errors import LegionError


class NotifyError(LegionError):
    """A notification could not be delivered (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one receiver about one group of alerts."""

    receiver: str
    group_key: str
    kind: str  # firing | resolved | repeat | escalation | flapping | refresh
    status: str  # firing | resolved (Alertmanager's group status)
    alerts: tuple[Mapping[str, Any], ...]
    group_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""

    @property
    def alert_ids(self) -> list[str]:
        """Ids of the alerts carried."""
        return [str(a["id"]) for a in self.alerts]


class Notifier(Protocol):
    """Delivers one notification; raises NotifyError (or OSError) on failure."""

    def send(self, n: Notification, options: Mapping[str, Any], timeout: float) -> None: ...


NOTIFIERS: dict[str, Callable[[], Notifier]] = {
    "webhook": webhook.WebhookNotifier,
    "slack": slack.SlackNotifier,
    "email": email.EmailNotifier,
    "alertmanager": alertmanager.AlertmanagerNotifier,
    "log": log.LogNotifier,
}
"""Receiver type -> notifier factory (the config's `receivers[].type`)."""
