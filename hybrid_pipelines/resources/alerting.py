"""Where alerts go: webhooks (Slack-compatible or generic JSON) and e-mail over SMTP, configured
by HP_ALERT_* variables (ENV_VARS). Secrets (the SMTP password, the webhook URLs, whose path
is their token) are EnvVars resolved at launch: never in run config, never logged."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import dagster as dg

from hybrid_pipelines.operations.channels import (
    SMTP_TLS,
    WEBHOOK_FORMATS,
    SmtpSettings,
    redact_url,
    send_email,
    send_webhook,
)
from hybrid_pipelines.operations.rules.messages import DIGEST_AT, Message

DEFAULT_UI_URL = "http://127.0.0.1:3000"
ENV_VARS: dict[str, str] = {
    "HP_ALERT_WEBHOOK_URLS": "webhook URLs, comma- or space-separated; prefix one with "
                             "'json=' or 'slack=' to override the format (secret)",
    "HP_ALERT_WEBHOOK_FORMAT": "slack (body {\"text\": ...}) or json (the fields); default slack",
    "HP_ALERT_SMTP_HOST": "SMTP server; unset = no e-mail",
    "HP_ALERT_SMTP_PORT": "default 587",
    "HP_ALERT_SMTP_TLS": "starttls (default) | ssl (implicit TLS, e.g. port 465) | none",
    "HP_ALERT_SMTP_USER": "AUTH user; unset = no AUTH",
    "HP_ALERT_SMTP_PASSWORD": "AUTH password (secret)",
    "HP_ALERT_SMTP_FROM": "sender address",
    "HP_ALERT_SMTP_TO": "recipients, comma-separated",
    "HP_ALERT_SMTP_CA_FILE": "PEM file of a private CA or self-signed server certificate",
    "HP_ALERT_DIGEST_AT": "this many alert changes in one evaluation go out as one digest (3)",
    "HP_DAGSTER_UI_URL": f"the Dagster UI's base URL for run links (default {DEFAULT_UI_URL})",
    "HP_FILE_SERVER_ACCESS_LOG": "the file server's JSON access log; unset = not ingested",
}
SECRETS = ("HP_ALERT_WEBHOOK_URLS", "HP_ALERT_SMTP_PASSWORD")
_SPLIT = re.compile(r"[\s,]+")


class AlertingResource(dg.ConfigurableResource):
    """Alert channels. With none configured, alerts are still recorded (alert_history) and
    logged, and the sensors say that nobody is told."""

    webhook_urls: str = ""
    webhook_format: str = "slack"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_to: str = ""
    smtp_ca_file: str = ""
    timeout_s: float = 10.0
    digest_at: int = DIGEST_AT
    ui_url: str = DEFAULT_UI_URL
    access_log_path: str = ""

    def _webhooks(self) -> dict[str, tuple[str, str]]:
        """Channel name -> (url, format). Names show the host only (the path is a secret)."""
        if self.webhook_format not in WEBHOOK_FORMATS:
            raise ValueError(f"HP_ALERT_WEBHOOK_FORMAT={self.webhook_format!r} is not one of "
                             f"{WEBHOOK_FORMATS}")
        hooks: dict[str, tuple[str, str]] = {}
        for i, entry in enumerate(u for u in _SPLIT.split(self.webhook_urls) if u):
            fmt, _, url = entry.partition("=") if entry.split("=", 1)[0] in WEBHOOK_FORMATS \
                else (self.webhook_format, "", entry)
            hooks[f"webhook{i + 1}:{fmt}:{redact_url(url)}"] = (url, fmt)
        return hooks

    def smtp(self) -> SmtpSettings:
        return SmtpSettings(
            host=self.smtp_host, port=self.smtp_port, tls=self.smtp_tls, user=self.smtp_user,
            password=self.smtp_password, sender=self.smtp_from,
            recipients=tuple(r for r in _SPLIT.split(self.smtp_to) if r),
            ca_file=self.smtp_ca_file, timeout_s=self.timeout_s)

    def channels(self) -> list[str]:
        names = list(self._webhooks())
        if self.smtp_host:
            names.append(f"email:{self.smtp_host}:{self.smtp_port}")
        return names

    def send(self, channel: str, message: Message) -> None:
        """Deliver on one channel; raises DeliveryError (no secret in it)."""
        if channel.startswith("email:"):
            send_email(self.smtp(), message)
            return
        hook = self._webhooks().get(channel)
        if hook is None:
            raise ValueError(f"no alert channel {channel!r}; configured: {self.channels()}")
        send_webhook(hook[0], hook[1], message, self.timeout_s)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number; set one or unset it for "
                         f"the default {default}") from None


def alerting_from_env(env: Mapping[str, str] | None = None) -> AlertingResource:
    """The resource from HP_ALERT_* (ENV_VARS). Without `env` (Definitions): the secrets are
    EnvVars read at launch, everything else is read now. With `env` (commands, tests): every
    value is taken from it now."""
    deferred = env is None
    src: Mapping[str, str] = os.environ if env is None else env
    tls = src.get("HP_ALERT_SMTP_TLS", "").strip().lower() or "starttls"
    if tls not in SMTP_TLS:
        raise ValueError(f"HP_ALERT_SMTP_TLS={tls!r} is not one of {SMTP_TLS}")

    def secret(name: str) -> Any:
        if name not in src:
            return ""
        return dg.EnvVar(name) if deferred else src[name]

    return AlertingResource(
        webhook_urls=secret("HP_ALERT_WEBHOOK_URLS"),
        webhook_format=src.get("HP_ALERT_WEBHOOK_FORMAT", "").strip().lower() or "slack",
        smtp_host=src.get("HP_ALERT_SMTP_HOST", "").strip(),
        smtp_port=_int(src, "HP_ALERT_SMTP_PORT", 465 if tls == "ssl" else 587),
        smtp_tls=tls,
        smtp_user=src.get("HP_ALERT_SMTP_USER", "").strip(),
        smtp_password=secret("HP_ALERT_SMTP_PASSWORD"),
        smtp_from=src.get("HP_ALERT_SMTP_FROM", "").strip(),
        smtp_to=src.get("HP_ALERT_SMTP_TO", "").strip(),
        smtp_ca_file=src.get("HP_ALERT_SMTP_CA_FILE", "").strip(),
        digest_at=_int(src, "HP_ALERT_DIGEST_AT", DIGEST_AT),
        ui_url=src.get("HP_DAGSTER_UI_URL", "").strip() or DEFAULT_UI_URL,
        access_log_path=src.get("HP_FILE_SERVER_ACCESS_LOG", "").strip(),
    )
