"""Delivery: a webhook (Slack-compatible `{"text": ...}` or a generic JSON body) and e-mail over
SMTP (STARTTLS or implicit TLS, AUTH). Each raises DeliveryError naming the channel, the cause
and the fix; no secret (password, webhook token) ever appears in an error or a log line."""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit

from hybrid_pipelines.operations.rules.messages import Message

WEBHOOK_FORMATS = ("slack", "json")
SMTP_TLS = ("starttls", "ssl", "none")


class DeliveryError(RuntimeError):
    """A message could not be delivered on one channel."""


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : a Slack webhook's path is its secret token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def webhook_body(message: Message, fmt: str) -> dict:
    if fmt not in WEBHOOK_FORMATS:
        raise ValueError(f"webhook format {fmt!r} is not one of {WEBHOOK_FORMATS}")
    return message.slack_body() if fmt == "slack" else message.json_body()


def send_webhook(url: str, fmt: str, message: Message, timeout_s: float = 10.0) -> None:
    body = json.dumps(webhook_body(message, fmt)).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "hybrid-pipelines-alerts"})
    where = f"webhook {redact_url(url)}"
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - operator's URL
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{where} answered HTTP {exc.code}; check HP_ALERT_WEBHOOK_URLS "
                            f"(a revoked or mistyped webhook answers 403/404)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{where} is unreachable ({reason}); check HP_ALERT_WEBHOOK_URLS "
                            f"and that this host may reach it") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"{where} answered HTTP {status}; check HP_ALERT_WEBHOOK_URLS")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    tls: str = "starttls"      # starttls | ssl (implicit TLS, port 465) | none
    user: str = ""
    password: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    ca_file: str = ""          # a private CA (or a self-signed server certificate) to trust
    timeout_s: float = 10.0

    def __repr__(self) -> str:  # never print the password
        return (f"SmtpSettings(host={self.host!r}, port={self.port}, tls={self.tls!r}, "
                f"user={self.user!r}, recipients={self.recipients!r})")


def _tls_context(ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def email_message(message: Message, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["X-Alert-Severity"] = message.severity
    mail.set_content(message.text)
    return mail


def send_email(s: SmtpSettings, message: Message) -> None:
    if s.tls not in SMTP_TLS:
        raise DeliveryError(f"HP_ALERT_SMTP_TLS={s.tls!r} is not one of {SMTP_TLS}")
    if not s.recipients or not s.sender:
        raise DeliveryError("e-mail needs HP_ALERT_SMTP_FROM and HP_ALERT_SMTP_TO")
    where = f"SMTP server {s.host}:{s.port}"
    mail = email_message(message, s.sender, s.recipients)
    try:
        if s.tls == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s,
                                                  context=_tls_context(s.ca_file))
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with smtp:
            smtp.ehlo()
            if s.tls == "starttls":
                smtp.starttls(context=_tls_context(s.ca_file))
                smtp.ehlo()
            if s.user:
                smtp.login(s.user, s.password)
            smtp.send_message(mail)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where} refused the login of {s.user!r} ({exc.smtp_code}); check "
                            f"HP_ALERT_SMTP_USER and HP_ALERT_SMTP_PASSWORD") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where} does not offer {exc}; set HP_ALERT_SMTP_TLS to what it "
                            f"supports (starttls | ssl | none)") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"{where}: TLS failed ({exc.reason}); trust its certificate with "
                            f"HP_ALERT_SMTP_CA_FILE or fix HP_ALERT_SMTP_TLS") from None
    except smtplib.SMTPException as exc:
        raise DeliveryError(f"{where} rejected the message ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); check HP_ALERT_SMTP_FROM/TO") from None
    except OSError as exc:
        raise DeliveryError(f"{where} is unreachable ({exc}); check HP_ALERT_SMTP_HOST/PORT")\
            from None
