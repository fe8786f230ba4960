"""`email`: one message per notification over SMTP, STARTTLS unless `require_tls` is false."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any


def email_message(n: Any, options: Mapping[str, Any]) -> EmailMessage:
    """Subject, plain-text body and headers of one notification."""
    msg = EmailMessage()
    labels = ", ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items()))
    msg["Subject"] = f"[{n.status.upper()}:{len(n.alerts)}] {n.kind} {labels}".strip()
    msg["From"] = options["from"]
    msg["To"] = ", ".join(options["to"])
    lines = [f"{n.kind} ({n.status}) for {labels or 'all'}", ""]
    for a in n.alerts:
        lines.append(f"- {a['labels'].get('alertname')} [{a['labels'].get('severity')}] "
                     f"{a.get('state')}: {a.get('annotations', {}).get('summary', '')}")
        lines.append(f"  id {a['id']}  labels {dict(a['labels'])}")
    msg.set_content("\n".join(lines))
    return msg


class EmailNotifier:
    """`smarthost` host:port, `from`, `to` (list); optional username/password, `ca_file`."""

    def send(self, n: Any, options: Mapping[str, Any], timeout: float) -> None:
        """Deliver one notification."""
        import smtplib  # here: loaded only by an aggregator that sends mail

        from legion.aggregator.alerts.notifiers import NotifyError

        host, _, port = str(options["smarthost"]).rpartition(":")
        try:
            with smtplib.SMTP(host or str(options["smarthost"]), int(port or 25),
                              local_hostname=options.get("hello"), timeout=timeout) as smtp:
                smtp.ehlo()
                if options.get("require_tls", True):
                    ctx = ssl.create_default_context(cafile=options.get("ca_file"))
                    smtp.starttls(context=ctx)
                    smtp.ehlo()
                if options.get("username"):
                    smtp.login(options["username"], options.get("password", ""))
                smtp.send_message(email_message(n, options))
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            raise NotifyError(f"smtp {options['smarthost']}: {exc}") from None
